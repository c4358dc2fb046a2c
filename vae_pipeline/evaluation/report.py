"""The evaluation report: report.json (the machine-readable results), report.md (verdict first) and three plots.

Plots are rendered in memory with matplotlib's object API (no pyplot, so no global backend state in workers) and
saved without the "Software" PNG chunk, so equal inputs give equal bytes. report.json is written last: it is the
commit, and a reader that finds it finds the Markdown and the plots beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation.plots import (
    DASH,
    format_number,
    format_share,
    render_latent,
    render_marginals,
    render_scores,
)
from vae_pipeline.evaluation.store import REPORT_FORMAT

logger = logging.getLogger(__name__)

KINDS = ("continuous", "categorical")


@dataclass
class ReportInputs:
    """Everything the report shows; `results` is written as-is to report.json."""

    results: dict[str, Any]
    real: pd.DataFrame
    synthetic: dict[str, pd.DataFrame]
    latents: dict[str, np.ndarray]
    kinds: dict[str, str]


def write_report(url: str, inputs: ReportInputs) -> dict[str, str]:
    """Write report.md, plots/{marginals,latent,scores}.png and, last, report.json under `url`.

    Args:
        url: the report directory (any URL storage.py understands).
        inputs: the results and the frames and latents to plot.

    Returns:
        The URL of each file: keys "json", "markdown", "marginals", "latent", "scores".
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
    lines += ["", *_table(results), *_support_section(results), "", *_latent_section(results["latent"])]
    lines += ["", "## Plots", ""]
    lines += [
        "- [Marginals: real holdout vs the chosen sampler and the prior](plots/marginals.png)",
        "- [Latent draws on the aggregate posterior's principal components](plots/latent.png)",
        "- [Scores per metric](plots/scores.png)",
    ]
    return "\n".join(lines) + "\n"


def _table(results: dict[str, Any]) -> list[str]:
    header = [
        "rank", "sampler", "quality", "column shapes", "pair trends", "detection AUC",
        "utility macro-F1", "DCR ratio", "exact copies", "privacy ok",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    choice = (results.get("choice") or {}).get("name")
    for rank, entry in enumerate(results["samplers"], start=1):
        name = f"`{entry['name']}`" + (" (chosen)" if entry["name"] == choice else "")
        ok = "yes" if entry["privacy_ok"] else "**no**: " + (entry.get("privacy_reason") or "no reason given")
        lines.append(_row(str(rank), name, entry, ok))
    lines.append(_row(DASH, "real training rows (ceiling)", results["reference"], DASH))
    return lines


def _row(rank: str, name: str, entry: dict[str, Any], ok: str) -> str:
    quality, privacy, utility = entry["quality"], entry["privacy"], entry.get("utility")
    cells = [
        rank,
        name,
        format_number(quality["score"]),
        format_number(quality["column_shapes"]),
        format_number(quality["column_pair_trends"]),
        format_number(entry["detection_auc"]), format_number(utility["macro_f1"] if utility else None),
        format_number(privacy["dcr_ratio"]), format_share(privacy["exact_copy_share"]), ok,
    ]  # fmt: skip
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


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
    reference = results["reference"]
    versus = f"prior: {format_number(other_prior['quality']['score'])}; " if other_prior else ""
    clauses = [f"it scores {format_number(chosen['quality']['score'])} quality ({versus}real training rows: "
               f"{format_number(reference['quality']['score'])})"]  # fmt: skip
    auc = chosen["detection_auc"]
    hardest = all(auc <= e["detection_auc"] for e in results["samplers"] if e["privacy_ok"])  # among usable ones
    prior_auc = f" vs {format_number(other_prior['detection_auc'])} for the prior" if other_prior else ""
    if hardest:
        clauses.append(
            f"its rows are the hardest to tell from real ones (detection AUC {format_number(auc)}{prior_auc})"
        )
    else:
        clauses.append(
            f"a classifier tells its rows from real ones with AUC {format_number(auc)}{prior_auc} (0.5 is chance)"
        )
    utility, ref_utility = chosen.get("utility"), reference.get("utility")
    if utility:
        ceiling = f" (trained on real rows: {format_number(ref_utility['macro_f1'])})" if ref_utility else ""
        clauses.append(f"a classifier trained on them reaches macro-F1 {format_number(utility['macro_f1'])}{ceiling}")
    privacy = chosen["privacy"]
    if privacy["dcr_ratio"] >= 1.0:
        closeness = "they sit no closer to training rows than fresh real rows do"
    else:
        closeness = "they sit slightly closer to training rows than fresh real rows do, within the privacy guard"
    closeness += f" (DCR ratio {format_number(privacy['dcr_ratio'])}"
    if privacy["exact_copy_share"] > 0:
        natural = results.get("real_copy_share")
        baseline = f" where {format_share(natural)} of real rows repeat another" if natural else ""
        closeness += f", {format_share(privacy['exact_copy_share'])} exact copies{baseline}"
    clauses.append(closeness + ")")
    return f"Use `{chosen['name']}` here: " + _and(clauses) + "."


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
