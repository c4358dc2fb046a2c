"""The evaluation's plots, rendered to PNG bytes in memory (reproducible: no timestamps, fixed subsamples).

marginals: real holdout vs the chosen sampler (and the prior), one panel per column; latent: every sampler's draws
on the aggregate posterior's principal components, so holes show; scores: every metric per sampler.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from vae_pipeline.errors import DataError

POSTERIOR_KEY = "aggregate posterior"
MAX_COLUMNS = 12
MAX_POINTS = 5000
TOP_CATEGORIES = 10
DASH = "—"
COLOR_REAL, COLOR_CHOSEN, COLOR_PRIOR, COLOR_OTHER, COLOR_REFUSED = "black", "C0", "C1", "0.65", "C3"


def format_number(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def format_share(value: float) -> str:
    return f"{100 * value:.1f}%"


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
    fig.suptitle(f"Latent draws on q(z)'s principal components (PC1 {format_share(explained[0])}, PC2 "
                 f"{format_share(explained[1])} of its variance); grey: where q(z) has draws")  # fmt: skip
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


def score_kinds(results: dict[str, Any]) -> set[str]:
    """Which scores the entries hold: "image" (an "image" dict), "tabular" (quality), or tabular when neither."""
    entries = [*results["samplers"], results["reference"]]
    kinds = {"image"} if any(e.get("image") for e in entries) else set()
    if not kinds or any(e.get("quality") is not None for e in entries):
        kinds.add("tabular")
    return kinds


Metric = tuple[str, Callable[[dict[str, Any]], float | None], float | None]  # title, value, a neutral point


def entry_part(entry: dict[str, Any] | None, group: str, key: str) -> Any:
    """entry[group][key], or None where the entry, the group or the key is missing (scores a table lacks)."""
    return ((entry or {}).get(group) or {}).get(key)


def _score_metrics(results: dict[str, Any]) -> list[Metric]:
    """Tabular metrics unless only image scores exist; image metrics when they do (accuracies some sampler has)."""
    samplers, kinds = results["samplers"], score_kinds(results)
    metrics: list[Metric] = []
    if "tabular" in kinds:
        metrics.append(("quality (higher is better)", lambda e: entry_part(e, "quality", "score"), None))
        if "image" not in kinds or any(e.get("detection_auc") is not None for e in samplers):
            metrics.append(("detection AUC (0.5 = indistinguishable)", lambda e: e.get("detection_auc"), 0.5))
        if any(e.get("utility") for e in samplers):
            metrics.append(("utility macro-F1", lambda e: entry_part(e, "utility", "macro_f1"), None))
    if "image" in kinds:
        for key, title in IMAGE_METRICS.items():
            if key in ("frechet_distance", "precision", "recall") or any(
                entry_part(e, "image", key) is not None for e in samplers
            ):
                metrics.append((title, _image_value(key), None))
    unit = "images" if "image" in kinds else "rows"
    metrics.append((f"DCR ratio (1 = as far as fresh real {unit})", lambda e: e["privacy"]["dcr_ratio"], 1.0))
    return metrics


def _image_value(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda e: entry_part(e, "image", key)


IMAGE_METRICS = {
    "frechet_distance": "Fréchet distance (lower is better)",
    "precision": "precision",
    "recall": "recall",
    "tstr_accuracy": "TSTR accuracy",
    "conditional_accuracy": "conditional accuracy",
}


def render_scores(results: dict[str, Any]) -> bytes:
    """Horizontal bars per metric, samplers in rank order, chosen highlighted, real rows as a dashed line."""
    samplers, reference = results["samplers"], results["reference"]
    metrics = _score_metrics(results)
    choice = (results.get("choice") or {}).get("name")
    colors = [COLOR_CHOSEN if e["name"] == choice else COLOR_OTHER if e["privacy_ok"] else COLOR_REFUSED
              for e in samplers]  # fmt: skip
    fig = Figure(figsize=(3.6 * len(metrics), 0.35 * max(len(samplers), 1) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(samplers))
    for ax, (title, value_of, target) in zip(axes, metrics, strict=True):
        values = [value_of(e) for e in samplers]
        bars = ax.barh(y, [np.nan if v is None else v for v in values], color=colors)
        ax.bar_label(bars, labels=[format_number(v) for v in values], fontsize=7, padding=2)
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
    kinds = score_kinds(results)
    auc = "AUC 0.5, " if any(e.get("detection_auc") is not None for e in samplers) else ""
    labels = [f"real training {'images' if 'image' in kinds else 'rows'} (ceiling)", f"neutral point: {auc}DCR ratio 1"]
    fig.legend(lines, labels, loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    return _png(fig)
