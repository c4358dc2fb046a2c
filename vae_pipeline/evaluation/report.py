"""The evaluation report: report.json (the machine-readable results), report.md (verdict first) and three plots.

Plots are rendered in memory with matplotlib's object API (no pyplot, so no global backend state in workers) and
saved without the "Software" PNG chunk, so equal inputs give equal bytes. report.json is written last: it is the
commit, and a reader that finds it finds the Markdown and the plots beside it.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from vae_pipeline import storage
from vae_pipeline.errors import DataError

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "vae-pipeline/evaluation/v1"
POSTERIOR_KEY = "aggregate posterior"
KINDS = ("continuous", "categorical")
MAX_COLUMNS = 12
MAX_POINTS = 5000
TOP_CATEGORIES = 10
DASH = "—"
COLOR_REAL, COLOR_CHOSEN, COLOR_PRIOR, COLOR_OTHER, COLOR_REFUSED = "black", "C0", "C1", "0.65", "C3"


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
    if fmt != RESULTS_FORMAT:
        raise DataError(f"results have format {fmt!r}, expected {RESULTS_FORMAT!r}; rerun the evaluation job")
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


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


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
    lines += ["", *_table(results), "", *_latent_section(results["latent"]), "", "## Plots", ""]
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
        rank, name, _num(quality["score"]), _num(quality["column_shapes"]), _num(quality["column_pair_trends"]),
        _num(entry["detection_auc"]), _num(utility["macro_f1"] if utility else None),
        _num(privacy["dcr_ratio"]), _pct(privacy["exact_copy_share"]), ok,
    ]  # fmt: skip
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _latent_section(latent: dict[str, Any]) -> list[str]:
    kl_dims = ", ".join(f"z{i}: {v:.3f}" for i, v in enumerate(latent["kl_per_dim"]))
    return [
        "## Latent diagnostics",
        "",
        f"- Active units: {latent['active_units']} of {latent['latent_dim']} latent dimensions",
        f"- KL(q(z) ‖ p(z)) estimate: {latent['kl_to_prior_estimate']:.3f}",
        f"- Hole share: {_pct(latent['hole_fraction'])} of prior draws fall where the aggregate posterior is thin "
        f"({_pct(latent['hole_quantile'])} expected if q ≈ p)",
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
    versus = f"prior: {_num(other_prior['quality']['score'])}; " if other_prior else ""
    clauses = [f"it scores {_num(chosen['quality']['score'])} quality ({versus}real training rows: "
               f"{_num(reference['quality']['score'])})"]  # fmt: skip
    auc = chosen["detection_auc"]
    hardest = all(auc <= e["detection_auc"] for e in results["samplers"] if e["privacy_ok"])  # among usable ones
    prior_auc = f" vs {_num(other_prior['detection_auc'])} for the prior" if other_prior else ""
    if hardest:
        clauses.append(f"its rows are the hardest to tell from real ones (detection AUC {_num(auc)}{prior_auc})")
    else:
        clauses.append(f"a classifier tells its rows from real ones with AUC {_num(auc)}{prior_auc} (0.5 is chance)")
    utility, ref_utility = chosen.get("utility"), reference.get("utility")
    if utility:
        ceiling = f" (trained on real rows: {_num(ref_utility['macro_f1'])})" if ref_utility else ""
        clauses.append(f"a classifier trained on them reaches macro-F1 {_num(utility['macro_f1'])}{ceiling}")
    privacy = chosen["privacy"]
    if privacy["dcr_ratio"] >= 1.0:
        closeness = "they sit no closer to training rows than real unseen rows do"
    else:
        closeness = "they sit slightly closer to training rows than real unseen rows do, within the privacy guard"
    closeness += f" (DCR ratio {_num(privacy['dcr_ratio'])}"
    if privacy["exact_copy_share"] > 0:
        closeness += f", {_pct(privacy['exact_copy_share'])} exact copies"
    clauses.append(closeness + ")")
    return f"Use `{chosen['name']}` here: " + _and(clauses) + "."


def _prior_sentence(latent: dict[str, Any], prior: dict[str, Any] | None, chosen: dict[str, Any] | None) -> str:
    holes, expected = latent["hole_fraction"], latent["hole_quantile"]
    inactive, dim = latent["latent_dim"] - latent["active_units"], latent["latent_dim"]
    diag = f"hole share {_pct(holes)} vs {_pct(expected)} if q ≈ p, {inactive} of {dim} latent dimensions inactive"
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


# --- Plots -------------------------------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})  # no version chunk: reproducible bytes
    return buffer.getvalue()


def _subsample_rows(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Sorted row positions, at most `limit`; a fresh Generator(0) each call so panels do not depend on order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def _grid(n: int, width: float, height: float, hspace: float, bottom: float) -> tuple[Figure, list[Axes]]:
    """n panels, four to a row, with fixed margins in inches (constrained layout costs more than the drawing)."""
    cols = max(1, min(4, n))
    rows = max(1, math.ceil(n / cols))
    size = (width * cols, height * rows + 0.5 + bottom)
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=0.6 / size[0], right=1 - 0.2 / size[0], top=1 - 0.5 / size[1], bottom=bottom / size[1],
                        wspace=0.3, hspace=hspace)  # fmt: skip
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def marginal_columns(columns: list[str]) -> tuple[list[str], bool]:
    """The columns to plot (all, or the first MAX_COLUMNS by name) and whether some were left out."""
    if len(columns) <= MAX_COLUMNS:
        return list(columns), False
    return sorted(columns, key=str)[:MAX_COLUMNS], True


def render_marginals(
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], kinds: dict[str, str], chosen: str | None
) -> bytes:
    """A panel per column: real holdout vs the chosen sampler (and the prior), as PNG bytes."""
    series = [("real holdout", real, COLOR_REAL)]
    if chosen is not None:
        series.append((f"{chosen} (chosen)", synthetic[chosen], COLOR_CHOSEN))
    if "prior" in synthetic and chosen != "prior":
        series.append(("prior", synthetic["prior"], COLOR_PRIOR))
    series = [(label, frame.iloc[_subsample_rows(len(frame))], color) for label, frame, color in series]
    columns, truncated = marginal_columns(list(real.columns))
    fig, axes = _grid(len(columns), 3.2, 2.6, hspace=0.65, bottom=1.0)
    for ax, column in zip(axes, columns, strict=True):
        plot = _plot_continuous if kinds[column] == "continuous" else _plot_categorical
        plot(ax, column, [(label, frame[column], color) for label, frame, color in series])
    title = "Marginals: " + " vs ".join(label for label, _, _ in series)
    if truncated:
        title += f" (first {MAX_COLUMNS} of {len(real.columns)} columns by name)"
    fig.suptitle(title)
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=len(series), frameon=False)
    return _png(fig)


def _numeric(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.dropna().astype("int64")
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers[np.isfinite(numbers)]


def _plot_continuous(ax: Axes, column: str, series: list[tuple[str, pd.Series, str]]) -> None:
    ax.set_title(str(column), fontsize=9)
    reference = _numeric(series[0][1])
    if reference.size == 0:
        ax.text(0.5, 0.5, "no real values", ha="center", va="center", transform=ax.transAxes)
        return
    low, high = np.percentile(reference, [1, 99])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    bins = int(np.clip(np.sqrt(reference.size), 10, 30))  # fewer bins for a small holdout, so bars are not noise
    edges = np.linspace(low, high, bins + 1)  # shared bins: every series is binned on the real data's 1st-99th range
    for label, values, color in series:
        numbers = _numeric(values)
        counts = np.histogram(numbers, bins=edges, density=True)[0] if numbers.size else np.zeros(edges.size - 1)
        ax.stairs(np.nan_to_num(counts), edges, label=label, color=color, linewidth=1.2)
    ax.tick_params(labelsize=7)


def _shares(values: pd.Series) -> pd.Series:
    labels = values.astype(object).where(values.notna(), "null").astype(str)
    return labels.value_counts(normalize=True, sort=False).sort_index().sort_values(ascending=False, kind="stable")


def _plot_categorical(ax: Axes, column: str, series: list[tuple[str, pd.Series, str]]) -> None:
    shares = [_shares(values) for _, values, _ in series]
    categories = list(dict.fromkeys(c for share in shares for c in share.index))
    shown = categories[:TOP_CATEGORIES]
    more = f" (top {TOP_CATEGORIES} of {len(categories)})" if len(categories) > len(shown) else ""
    ax.set_title(str(column) + more, fontsize=9)
    width = 0.8 / len(series)
    x = np.arange(len(shown))
    for i, ((label, _, color), share) in enumerate(zip(series, shares, strict=True)):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [share.get(c, 0.0) for c in shown], width, label=label,
               color=color)  # fmt: skip
    ax.set_xticks(x, [c if len(c) <= 12 else c[:11] + "…" for c in shown], rotation=40, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def render_latent(latents: dict[str, np.ndarray], order: list[str], chosen: str | None) -> bytes:
    """Every sampler's latent draws on the aggregate posterior's first two principal components, as PNG bytes."""
    points, explained = project_latents(latents, order)
    stacked = np.concatenate(list(points.values()))
    low, high = np.quantile(stacked, 0.005, axis=0), np.quantile(stacked, 0.995, axis=0)
    pad = 0.05 * np.maximum(high - low, 1e-9)
    extent = (low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1])
    # q(z)'s footprint as a grey image behind every panel (one image is far cheaper than 5000 markers per panel):
    # sampler draws that land on white are holes.
    bins = int(np.clip(np.sqrt(len(points[POSTERIOR_KEY])) / 2, 12, 50))  # coarse enough that few draws look whole
    x, y = points[POSTERIOR_KEY].T
    footprint = np.histogram2d(x, y, bins=bins, range=[list(extent[:2]), list(extent[2:])])[0].T > 0
    fig, axes = _grid(len(points), 2.8, 2.6, hspace=0.3, bottom=0.4)
    colors = {"prior": COLOR_PRIOR, POSTERIOR_KEY: "0.3", chosen: COLOR_CHOSEN}
    for ax, (name, xy) in zip(axes, points.items(), strict=True):
        ax.imshow(footprint, extent=extent, origin="lower", aspect="auto", cmap="Greys", vmin=0, vmax=5,
                  interpolation="nearest")  # fmt: skip
        ax.plot(*xy.T, ".", color=colors.get(name, "C2"), markersize=2, alpha=0.3)
        ax.set_xlim(*extent[:2])
        ax.set_ylim(*extent[2:])
        ax.set_title(name + (" (chosen)" if name == chosen else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Latent draws on q(z)'s principal components (PC1 {_pct(explained[0])}, PC2 "
                 f"{_pct(explained[1])} of its variance); grey: where q(z) has draws")  # fmt: skip
    return _png(fig)


def project_latents(latents: dict[str, np.ndarray], order: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(n, 2) projections on q(z)'s first two principal components, in panel order (prior, q(z), then `order`).

    Also returns the share of q(z)'s variance each component explains.
    """
    if POSTERIOR_KEY not in latents:
        raise DataError(f"latents lack {POSTERIOR_KEY!r}; pass draws from q(z) under that key")
    dims = {name: np.shape(z) for name, z in latents.items()}
    if any(len(shape) != 2 or shape[1] != dims[POSTERIOR_KEY][1] for shape in dims.values()):
        raise DataError(f"latents must all be (n, L) with one L; got shapes {dims}")
    posterior = np.asarray(latents[POSTERIOR_KEY], dtype=np.float64)
    posterior = posterior[_subsample_rows(len(posterior))]
    pca = PCA(n_components=min(2, posterior.shape[1]), svd_solver="full").fit(posterior)
    names = [n for n in ["prior", POSTERIOR_KEY, *order, *sorted(latents)] if n in latents]
    names = list(dict.fromkeys(names))
    points = {name: _project(pca, np.asarray(latents[name], dtype=np.float64)) for name in names}
    explained = np.nan_to_num(pca.explained_variance_ratio_)  # NaN when q(z) draws are all equal
    return points, np.pad(explained, (0, 2))[:2]


def _project(pca: PCA, z: np.ndarray) -> np.ndarray:
    projected = pca.transform(z[_subsample_rows(len(z))])
    if projected.shape[1] == 1:  # a 1-D latent space: draw it on a line
        projected = np.column_stack([projected, np.zeros(len(projected))])
    return projected


def render_scores(results: dict[str, Any]) -> bytes:
    """Horizontal bars per metric, samplers in rank order, chosen highlighted, real rows as a dashed line."""
    samplers, reference = results["samplers"], results["reference"]
    metrics: list[tuple[str, Callable[[dict[str, Any]], float | None], float | None]] = [
        ("quality (higher is better)", lambda e: e["quality"]["score"], None),
        ("detection AUC (0.5 = indistinguishable)", lambda e: e["detection_auc"], 0.5),
    ]
    if any(e.get("utility") for e in samplers):
        metrics.append(("utility macro-F1", lambda e: e["utility"]["macro_f1"] if e.get("utility") else None, None))
    metrics.append(("DCR ratio (1 = as far as unseen rows)", lambda e: e["privacy"]["dcr_ratio"], 1.0))
    choice = (results.get("choice") or {}).get("name")
    colors = [COLOR_CHOSEN if e["name"] == choice else COLOR_OTHER if e["privacy_ok"] else COLOR_REFUSED
              for e in samplers]  # fmt: skip
    fig = Figure(figsize=(3.6 * len(metrics), 0.35 * max(len(samplers), 1) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(samplers))
    for ax, (title, value_of, target) in zip(axes, metrics, strict=True):
        values = [value_of(e) for e in samplers]
        bars = ax.barh(y, [np.nan if v is None else v for v in values], color=colors)
        ax.bar_label(bars, labels=[_num(v) for v in values], fontsize=7, padding=2)
        ceiling = value_of(reference)
        if ceiling is not None:
            ax.axvline(ceiling, linestyle="--", color="C2", linewidth=1.2)
        if target is not None:
            ax.axvline(target, linestyle="--", color="0.4", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.2)
    axes[0].set_yticks(y, [e["name"] for e in samplers])
    axes[0].invert_yaxis()  # rank 1 on top
    fig.suptitle("Scores by sampler, best first (blue: chosen; red: refused by the privacy guard)")
    lines = [Line2D([], [], linestyle="--", color="C2"), Line2D([], [], linestyle="--", color="0.4")]
    labels = ["real training rows (ceiling)", "neutral point: AUC 0.5, DCR ratio 1"]
    fig.legend(lines, labels, loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    return _png(fig)
