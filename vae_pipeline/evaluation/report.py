"""The evaluation report: report.json (the machine-readable results), report.md (verdict first) and the plots.

Entries of a table with an image column carry an "image" dict (`ImageReference.score`, privacy apart) and may have
no tabular scores (quality, detection_auc and utility None) when the label is the only other column; the table,
the verdict and the scores plot show whichever of the two kinds of score the entries hold.

Plots are rendered in memory with matplotlib's object API (no pyplot, so no global backend state in workers) and
saved without the "Software" PNG chunk, so equal inputs give equal bytes. report.json is written last: it is the
commit, and a reader that finds it finds the Markdown and the plots beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation.image_plots import render_image_grid
from vae_pipeline.evaluation.plots import (
    DASH,
    entry_part,
    format_number,
    format_share,
    render_latent,
    render_marginals,
    render_scores,
    score_kinds,
)
from vae_pipeline.evaluation.store import REPORT_FORMAT

logger = logging.getLogger(__name__)

KINDS = ("continuous", "categorical")


@dataclass
class ImageGallery:
    """The images plots/images.png shows: (N, C, H, W) float arrays in [0, 1], with int class codes or None."""

    real: np.ndarray
    real_labels: np.ndarray | None
    samplers: dict[str, tuple[np.ndarray, np.ndarray | None]]
    class_names: list[str] | None = None


@dataclass
class ReportInputs:
    """Everything the report shows; `results` is written as-is to report.json."""

    results: dict[str, Any]
    real: pd.DataFrame
    synthetic: dict[str, pd.DataFrame]
    latents: dict[str, np.ndarray]
    kinds: dict[str, str]
    images: ImageGallery | None = None  # required when the results hold image scores


def write_report(url: str, inputs: ReportInputs) -> dict[str, str]:
    """Write report.md, plots/{marginals,latent,scores}.png (and images.png) and, last, report.json under `url`.

    Args:
        url: the report directory (any URL storage.py understands).
        inputs: the results and the frames, latents and images to plot.

    Returns:
        The URL of each file: keys "json", "markdown", "marginals", "latent", "scores", and "images" when
        `inputs.images` is given.
    """
    _check_inputs(inputs)
    urls = {
        "json": storage.join_url(url, "report.json"),
        "markdown": storage.join_url(url, "report.md"),
        "marginals": storage.join_url(url, "plots", "marginals.png"),
        "latent": storage.join_url(url, "plots", "latent.png"),
        "scores": storage.join_url(url, "plots", "scores.png"),
    }
    chosen = chosen_name(inputs.results, list(inputs.synthetic))
    storage.atomic_write(urls["marginals"], render_marginals(inputs.real, inputs.synthetic, inputs.kinds, chosen))
    storage.atomic_write(urls["latent"], render_latent(inputs.latents, _rank_order(inputs.results), chosen))
    storage.atomic_write(urls["scores"], render_scores(inputs.results))
    if inputs.images is not None:
        urls["images"] = storage.join_url(url, "plots", "images.png")
        gallery = inputs.images
        png = render_image_grid((gallery.real, gallery.real_labels), gallery.samplers, _rank_order(inputs.results),
                                gallery.class_names)  # fmt: skip
        storage.atomic_write(urls["images"], png)
    storage.atomic_write(urls["markdown"], render_markdown(inputs.results).encode())
    storage.write_json(urls["json"], inputs.results)  # last: the commit
    logger.info("wrote the evaluation report to %s", storage.redact_url(url))
    return urls


def _check_inputs(inputs: ReportInputs) -> None:
    fmt = inputs.results.get("format")
    if fmt != REPORT_FORMAT:
        raise DataError(f"results have format {fmt!r}, expected {REPORT_FORMAT!r}; rerun the evaluation job")
    for column in inputs.real.columns:
        kind = inputs.kinds.get(column)
        if kind not in KINDS:
            raise DataError(f"column {column!r} has kind {kind!r}; give one of {KINDS} in `kinds`")
    if "image" in score_kinds(inputs.results) and inputs.images is None:
        raise DataError("the results hold image scores but ReportInputs.images is None; pass an ImageGallery")
    for name, frame in inputs.synthetic.items():
        missing = [c for c in inputs.real.columns if c not in frame.columns]
        if missing:
            raise DataError(f"synthetic rows of sampler {name!r} lack columns {missing[:5]}; generate all columns")


def chosen_name(results: dict[str, Any], available: list[str]) -> str | None:
    """The chosen sampler if it has rows to show, else the best-ranked one that has, else the first available."""
    choice = results.get("choice")
    candidates = ([choice["name"]] if choice else []) + _rank_order(results) + available
    return next((name for name in candidates if name in available), None)


def _rank_order(results: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in results["samplers"]]


# --- Markdown ---------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict[str, Any]) -> str:
    """report.md: title, verdict, ranked table with the real-rows ceiling, latent diagnostics, plot links."""
    rows = results["rows"]
    lines = ["# Synthetic data evaluation", "", verdict(results), "", "## Ranking", ""]
    lines.append(
        f"Model `{results['model_fingerprint']}`, seed {results['seed']}: {rows['synthetic_per_sampler']} synthetic "
        f"rows per sampler scored against {rows['holdout']} real holdout rows ({rows['train']} training rows)."
    )
    if results.get("choice"):
        lines += ["", f"Choice rule: {results['choice']['reason']}"]
    lines += ["", *_table(results), *_support_section(results), *_per_class_section(results)]
    lines += ["", *_latent_section(results["latent"]), *_latent_fit_section(results)]
    lines += ["", "## Plots", ""]
    lines += [
        "- [Marginals: real holdout vs the chosen sampler and the prior](plots/marginals.png)",
        "- [Latent draws on the aggregate posterior's principal components](plots/latent.png)",
        "- [Scores per metric](plots/scores.png)",
    ]
    if "image" in score_kinds(results):
        lines.append("- [Images: real, then each sampler](plots/images.png)")
    return "\n".join(lines) + "\n"


Column = tuple[str, Callable[[dict[str, Any]], str]]


TABULAR_COLUMNS: list[Column] = [
    ("quality", lambda e: format_number(entry_part(e, "quality", "score"))),
    ("column shapes", lambda e: format_number(entry_part(e, "quality", "column_shapes"))),
    ("pair trends", lambda e: format_number(entry_part(e, "quality", "column_pair_trends"))),
    ("detection AUC", lambda e: format_number(e.get("detection_auc"))),
    ("utility macro-F1", lambda e: format_number(entry_part(e, "utility", "macro_f1"))),
]
IMAGE_SCORES = {"frechet_distance": "FD", "precision": "precision", "recall": "recall",
                "tstr_accuracy": "TSTR accuracy", "conditional_accuracy": "conditional accuracy"}  # fmt: skip
PRIVACY_COLUMNS: list[Column] = [
    ("DCR ratio", lambda e: format_number(e["privacy"]["dcr_ratio"])),
    ("exact copies", lambda e: format_share(e["privacy"]["exact_copy_share"])),
]


def _columns(results: dict[str, Any]) -> list[Column]:
    """Tabular scores (all of them on a table without images), FD, precision, recall and the accuracies present."""
    kinds, samplers = score_kinds(results), results["samplers"]
    image = [_image_column(title, key) for key, title in IMAGE_SCORES.items()
             if key in ("frechet_distance", "precision", "recall")
             or any(entry_part(e, "image", key) is not None for e in samplers)]  # fmt: skip
    if "image" not in kinds:
        return TABULAR_COLUMNS + PRIVACY_COLUMNS
    # Beside images, a tabular column shows only where some sampler has it (detection is not run on images).
    tabular = [column for column in TABULAR_COLUMNS if any(column[1](e) != DASH for e in samplers)]
    return (tabular if "tabular" in kinds else []) + image + PRIVACY_COLUMNS


def _image_column(title: str, key: str) -> Column:
    return title, lambda e: format_number(entry_part(e, "image", key))


def _table(results: dict[str, Any]) -> list[str]:
    columns = _columns(results)
    header = ["rank", "sampler", *(title for title, _ in columns), "privacy ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    choice = (results.get("choice") or {}).get("name")
    for rank, entry in enumerate(results["samplers"], start=1):
        name = f"`{entry['name']}`" + (" (chosen)" if entry["name"] == choice else "")
        ok = "yes" if entry["privacy_ok"] else "**no**: " + (entry.get("privacy_reason") or "no reason given")
        lines.append(_row(str(rank), name, entry, ok, columns))
    real = f"real training {_unit(results)} (ceiling)"
    lines.append(_row(DASH, real, results["reference"], DASH, columns))
    return lines


def _row(rank: str, name: str, entry: dict[str, Any], ok: str, columns: list[Column]) -> str:
    cells = [rank, name, *(value_of(entry) for _, value_of in columns), ok]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _unit(results: dict[str, Any]) -> str:
    """What privacy and the ceiling are measured on: "images" where there are image scores, else "rows"."""
    return "images" if "image" in score_kinds(results) else "rows"


def _support_section(results: dict[str, Any]) -> list[str]:
    """Per discrete column, the share of each sampler's values that no real row takes (none without such columns)."""
    columns = sorted({column for entry in results["samplers"] for column in entry.get("outside_support") or {}})
    if not columns:
        return []
    lines = ["", "Values outside the real support (discrete columns; 0% means every value is one real rows take):", ""]
    lines += ["| sampler | " + " | ".join(f"`{c}`" for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for entry in results["samplers"]:
        shares = [format_share((entry.get("outside_support") or {}).get(c, 0.0)) for c in columns]
        lines.append(f"| `{entry['name']}` | " + " | ".join(shares) + " |")
    return lines


def _per_class_section(results: dict[str, Any]) -> list[str]:
    """Per class, for the chosen sampler and the best refused one: rows, scores, verdict, then the warnings.

    Nothing for entries without `per_class` (no label, images, reports written before per-class scores).
    """
    choice = (results.get("choice") or {}).get("name")
    with_classes = [e for e in results["samplers"] if e.get("per_class") is not None]
    chosen = [("chosen", e) for e in with_classes if e["name"] == choice]
    refused = [e for e in with_classes if e["name"] != choice and not _passes(e)]
    shown = chosen + [("best refused", e) for e in refused[:1]]
    if not shown:
        return []
    lines = ["", "## Per class", "", f"Each class of `{results.get('label_column')}` scored on its own: quality and "
             "detection against its real holdout rows, DCR against its training rows beside how close its fresh "
             "real rows come, and the privacy guard's verdict per class (smallest classes first)."]  # fmt: skip
    header = ["class", "rows (holdout / train / synthetic)", "quality", "detection AUC", "DCR ratio", "privacy ok"]
    for title, entry in shown:
        lines += ["", f"### `{entry['name']}` ({title})", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for name, scores in entry["per_class"].items():
            rows = scores["rows"]
            cells = [f"`{name}`", f"{rows['holdout']} / {rows['train']} / {rows['synthetic']}",
                     format_number(entry_part(scores, "quality", "score")), format_number(scores["detection_auc"]),
                     format_number(entry_part(scores, "privacy", "dcr_ratio")), _class_verdict(scores)]  # fmt: skip
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        warnings = [scores["warning"] for scores in entry["per_class"].values() if scores.get("warning")]
        lines += ["", *(f"- {warning}" for warning in warnings)] if warnings else []
    return lines


def _passes(entry: dict[str, Any]) -> bool:
    return bool(entry["privacy_ok"]) and entry.get("per_class_privacy_ok") is not False


def _class_verdict(scores: dict[str, Any]) -> str:
    if scores["privacy_ok"] is None:
        return "not judged"
    return "yes" if scores["privacy_ok"] else "**no**: " + (scores.get("privacy_reason") or "no reason given")


def _latent_fit_section(results: dict[str, Any]) -> list[str]:
    """Each sampler's held-out latent log-likelihood (samplers/likelihood.py), best first, and the priors' cost."""
    scored = [e for e in results["samplers"] if e.get("latent_log_likelihood") is not None]
    if not scored:
        return []
    lines = [
        "",
        "## Latent fit",
        "",
        "Mean log-density of posterior draws of held-out reservoir rows under each sampler (nats per row, higher "
        "fits the aggregate posterior better; diffusion has no tractable density):",
        "",
    ]
    for entry in sorted(scored, key=lambda e: -e["latent_log_likelihood"]):
        lines.append(f"- `{entry['name']}`: {entry['latent_log_likelihood']:.3f}")
    priors = results["latent"].get("priors") or {}
    if priors:
        spent = ", ".join(f"{name} {info['seconds']:.1f}s" for name, info in priors.items())
        lines += ["", f"Learned priors trained by the statistics step in: {spent}."]
    return lines


def _latent_section(latent: dict[str, Any]) -> list[str]:
    kl_dims = ", ".join(f"z{i}: {v:.3f}" for i, v in enumerate(latent["kl_per_dim"]))
    return [
        "## Latent diagnostics",
        "",
        f"- Active units: {latent['active_units']} of {latent['latent_dim']} latent dimensions",
        f"- KL(q(z) ‖ p(z)) estimate: {latent['kl_to_prior_estimate']:.3f}",
        f"- Hole share: {format_share(latent['hole_fraction'])} of prior draws fall where the aggregate posterior "
        "is thin "
        f"({format_share(latent['hole_quantile'])} expected if q ≈ p)",
        f"- Aggregate posterior GMM components: {latent['gmm_components']}",
        f"- KL per dimension: {kl_dims}",
    ]


def verdict(results: dict[str, Any]) -> str:
    """One plain-words paragraph: which sampler to use here and why, derived from the numbers."""
    samplers = {entry["name"]: entry for entry in results["samplers"]}
    choice = results.get("choice")
    chosen = samplers.get(choice["name"]) if choice else None
    prior = samplers.get("prior")
    if chosen is None:
        if not samplers:
            parts = ["No sampler was evaluated, so there is nothing to recommend."]
        elif not any(entry["privacy_ok"] for entry in samplers.values()):
            parts = ["Use none of these samplers here: the privacy guard refused every one."]
        else:
            parts = ["The evaluation made no choice, so no sampler is recommended here."]
    else:
        parts = [_chosen_sentence(chosen, prior, results)]
    parts.append(_prior_sentence(results["latent"], prior, chosen))
    refused = [e for e in samplers.values() if not e["privacy_ok"]]
    if refused:
        reasons = [f"`{e['name']}`: {(e.get('privacy_reason') or 'no reason given').rstrip('.')}" for e in refused]
        parts.append("The privacy guard refused " + "; ".join(reasons) + ".")
    return " ".join(parts)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _chosen_sentence(chosen: dict[str, Any], prior: dict[str, Any] | None, results: dict[str, Any]) -> str:
    other_prior = prior if prior is not None and prior is not chosen else None
    clauses = _tabular_clauses(chosen, other_prior, results) + _image_clauses(chosen, other_prior, results)
    utility, ref_utility = chosen.get("utility"), results["reference"].get("utility")
    if utility:
        ceiling = f" (trained on real rows: {format_number(ref_utility['macro_f1'])})" if ref_utility else ""
        clauses.append(f"a classifier trained on them reaches macro-F1 {format_number(utility['macro_f1'])}{ceiling}")
    clauses.append(_privacy_clause(chosen["privacy"], results))
    return f"Use `{chosen['name']}` here: " + _and(clauses) + "."


def _tabular_clauses(chosen: dict[str, Any], prior: dict[str, Any] | None, results: dict[str, Any]) -> list[str]:
    """Quality and detection, when the entry has them."""
    clauses = []
    reference = results["reference"]
    if chosen.get("quality") is not None:
        versus = [f"prior: {format_number(entry_part(prior, 'quality', 'score'))}"] if prior else []
        if entry_part(reference, "quality", "score") is not None:
            versus.append(f"real training rows: {format_number(reference['quality']['score'])}")
        clauses.append(f"it scores {format_number(chosen['quality']['score'])} quality"
                       + (f" ({'; '.join(versus)})" if versus else ""))  # fmt: skip
    auc = chosen.get("detection_auc")
    if auc is None:
        return clauses
    usable = [e["detection_auc"] for e in results["samplers"] if e["privacy_ok"] and e.get("detection_auc") is not None]
    prior_auc = f" vs {format_number(prior.get('detection_auc'))} for the prior" if prior else ""
    if all(auc <= other for other in usable):  # the hardest among usable ones
        clauses.append(
            f"its rows are the hardest to tell from real ones (detection AUC {format_number(auc)}{prior_auc})"
        )
    else:
        clauses.append(
            f"a classifier tells its rows from real ones with AUC {format_number(auc)}{prior_auc} (0.5 is chance)"
        )
    return clauses


def _image_clauses(chosen: dict[str, Any], prior: dict[str, Any] | None, results: dict[str, Any]) -> list[str]:
    """Fréchet distance with precision and recall, TSTR and conditional accuracy, when the entry has them."""
    image, reference = chosen.get("image"), results["reference"].get("image") or {}
    if not image:
        return []
    versus = f"prior: {format_number(entry_part(prior, 'image', 'frechet_distance'))}; " if prior else ""
    fd, floor = format_number(image["frechet_distance"]), format_number(reference.get("frechet_floor"))
    clauses = [f"its images sit at Fréchet distance {fd} from real holdout images ({versus}real training images: "
               f"{floor}) with precision {format_number(image['precision'])} and recall "
               f"{format_number(image['recall'])}"]  # fmt: skip
    if image.get("tstr_accuracy") is not None:
        ceiling = reference.get("tstr_accuracy")
        real = f" (trained on real images: {format_number(ceiling)})" if ceiling is not None else ""
        clauses.append(f"a classifier trained on them reaches accuracy {format_number(image['tstr_accuracy'])} on "
                       f"real holdout images{real}")  # fmt: skip
    if image.get("conditional_accuracy") is not None:
        ceiling = reference.get("conditional_accuracy")
        real = f" (of real holdout images: {format_share(ceiling)})" if ceiling is not None else ""
        clauses.append(f"the real-data classifier recognises the requested class in "
                       f"{format_share(image['conditional_accuracy'])} of them{real}")  # fmt: skip
    return clauses


def _privacy_clause(privacy: dict[str, Any], results: dict[str, Any]) -> str:
    unit = _unit(results)
    if privacy["dcr_ratio"] >= 1.0:
        closeness = f"they sit no closer to training {unit} than fresh real {unit} do"
    else:
        closeness = f"they sit slightly closer to training {unit} than fresh real {unit} do, within the privacy guard"
    closeness += f" (DCR ratio {format_number(privacy['dcr_ratio'])}"
    if privacy["exact_copy_share"] > 0:
        natural = results.get("real_copy_share")
        baseline = f" where {format_share(natural)} of real {unit} repeat another" if natural else ""
        closeness += f", {format_share(privacy['exact_copy_share'])} exact copies{baseline}"
    return closeness + ")"


def _prior_sentence(latent: dict[str, Any], prior: dict[str, Any] | None, chosen: dict[str, Any] | None) -> str:
    holes, expected = latent["hole_fraction"], latent["hole_quantile"]
    inactive, dim = latent["latent_dim"] - latent["active_units"], latent["latent_dim"]
    diag = (
        f"hole share {format_share(holes)} vs {format_share(expected)} if q ≈ p, "
        f"{inactive} of {dim} latent dimensions inactive"
    )
    mismatch = holes > 1.5 * expected  # half again more prior draws in thin regions than a perfect fit would give
    if prior is None:
        tail = "prior draws would land in regions the encoder never used" if mismatch else "q(z) fills the prior well"
        return f"No prior sampler was scored; the latent diagnostics say {tail} ({diag})."
    if prior is chosen:
        if mismatch:
            return f"The prior comes out best even though it draws into regions the encoder never used ({diag})."
        return f"The fitted samplers add nothing here: the aggregate posterior fills the prior ({diag})."
    if not mismatch:
        return f"The prior's draws mostly land where the encoder put data ({diag}); it trails on q(z)'s finer shape."
    if chosen is not None and prior["composite"] > chosen["composite"]:
        return f"The prior draws into regions the encoder never used ({diag}); it scores higher but is not the choice."
    return f"The prior draws into regions the encoder never used ({diag}), which is why it trails."
