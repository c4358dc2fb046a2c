"""report.py: files land under any URL, report.json round-trips, PNGs are reproducible, the verdict reads right."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from vae_pipeline import storage
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation.plots import MAX_COLUMNS, marginal_columns, project_latents
from vae_pipeline.evaluation.report import ReportInputs, render_markdown, verdict, write_report
from vae_pipeline.evaluation.store import REPORT_FORMAT

PENGUINS_CSV = Path(__file__).resolve().parents[3] / "data" / "penguins.csv"
KINDS = {
    "species": "categorical", "island": "categorical", "sex": "categorical", "year": "categorical",
    "bill_length_mm": "continuous", "bill_depth_mm": "continuous", "flipper_length_mm": "continuous",
    "body_mass_g": "continuous",
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFUSAL = "12.0% of rows are exact copies of training rows (limit 1.0%)"


def _entry(name: str, quality: float, auc: float, dcr: float, composite: float, **extra: Any) -> dict[str, Any]:
    """One sampler's results in the evaluation job's shape."""
    return {
        "name": name,
        "sampler": {"name": name.split("@")[0], "temperature": extra.get("temperature", 1.0),
                    "diagonal": name == "gaussian-diagonal", "classes": None},
        "quality": {"score": quality, "column_shapes": quality + 0.02, "column_pair_trends": quality - 0.03},
        "detection_auc": auc,
        "utility": {"macro_f1": quality - 0.1, "accuracy": quality - 0.05, "balanced_accuracy": quality - 0.11},
        "privacy": {"dcr_ratio": dcr, "exact_copy_share": extra.get("copies", 0.0),
                    "dcr_synthetic_median": 0.4 * dcr, "dcr_real_median": 0.4},
        "composite": composite,
        "privacy_ok": extra.get("ok", True),
        "privacy_reason": extra.get("reason"),
    }  # fmt: skip


def _results() -> dict[str, Any]:
    samplers = [
        _entry("gmm", 0.871, 0.612, 1.04, 0.80),
        _entry("empirical", 0.902, 0.580, 0.41, 0.78, ok=False, reason=REFUSAL, copies=0.12),
        _entry("gaussian", 0.850, 0.660, 1.06, 0.74),
        _entry("conditional", 0.846, 0.671, 1.05, 0.72),
        _entry("gaussian-diagonal", 0.820, 0.702, 1.08, 0.69),
        _entry("gmm@t0.8", 0.815, 0.720, 0.98, 0.67, temperature=0.8),
        _entry("prior", 0.781, 0.834, 1.12, 0.58),
    ]
    return {
        "format": REPORT_FORMAT,
        "model_fingerprint": "3f2a9c1b",
        "seed": 7,
        "label_column": "species",
        "rows": {"synthetic_per_sampler": 300, "holdout": 69, "train": 275},
        "latent": {"latent_dim": 4, "active_units": 3, "kl_to_prior_estimate": 0.412, "hole_fraction": 0.23,
                   "hole_quantile": 0.05, "gmm_components": 3, "kl_per_dim": [1.204, 0.873, 0.511, 0.004]},
        "reference": {"name": "real training rows",
                      "quality": {"score": 0.931, "column_shapes": 0.95, "column_pair_trends": 0.91},
                      "detection_auc": 0.52, "utility": {"macro_f1": 0.962, "accuracy": 0.97},
                      "privacy": {"dcr_ratio": 0.0, "exact_copy_share": 1.0}},
        "samplers": samplers,
        "choice": {"name": "gmm", "reason": "best composite among samplers that pass the privacy guard"},
    }  # fmt: skip


def _noisy(real: pd.DataFrame, rng: np.random.Generator, n: int) -> pd.DataFrame:
    rows = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
    for column, kind in KINDS.items():
        if kind == "continuous":
            rows[column] = rows[column] + rng.normal(0, rows[column].std() * 0.2, n)
    flips = rng.random(n) < 0.1
    rows.loc[flips, "island"] = rng.choice(real["island"].dropna().unique(), flips.sum())
    return rows


def _inputs(results: dict[str, Any]) -> ReportInputs:
    rng = np.random.default_rng(0)
    real = pd.read_csv(PENGUINS_CSV)
    names = [entry["name"] for entry in results["samplers"]]
    latents = {name: rng.normal(0, 1.0 if name == "prior" else 0.7, (300, 4)) for name in names}
    latents["aggregate posterior"] = rng.normal(0, 0.6, (400, 4)) + np.array([0.8, 0.0, 0.0, 0.0])
    return ReportInputs(
        results=results,
        real=real.sample(69, random_state=0),
        synthetic={name: _noisy(real, rng, 300) for name in names},
        latents=latents,
        kinds=KINDS,
    )


def _without_label_and_prior() -> dict[str, Any]:
    results = _results()
    results["label_column"] = None
    results["samplers"] = [e for e in results["samplers"] if e["name"] != "prior"]
    for entry in [*results["samplers"], results["reference"]]:
        entry["utility"] = None
    return results


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    return _inputs(_results())


@pytest.fixture(scope="module")
def local_report(inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_report(str(tmp_path_factory.mktemp("report") / "eval"), inputs)


def test_write_report_local_files(local_report: dict[str, str], inputs: ReportInputs) -> None:
    assert set(local_report) == {"json", "markdown", "marginals", "latent", "scores"}
    assert local_report["json"].endswith("eval/report.json")
    assert local_report["latent"].endswith("eval/plots/latent.png")
    for url in local_report.values():
        assert Path(url).is_file()
    assert storage.read_json(local_report["json"]) == inputs.results
    assert storage.read_bytes(local_report["markdown"]).decode() == render_markdown(inputs.results)
    for key in ("marginals", "latent", "scores"):
        assert storage.read_bytes(local_report[key]).startswith(PNG_MAGIC)
    assert not list(Path(local_report["json"]).parent.rglob("*.tmp"))


def test_write_report_memory_url(inputs: ReportInputs) -> None:
    url = f"memory://report-test/{uuid.uuid4().hex}"
    urls = write_report(url, inputs)
    assert urls["json"] == f"{url}/report.json"
    assert all(storage.exists(u) for u in urls.values())
    assert storage.read_json(urls["json"]) == inputs.results
    assert storage.read_bytes(urls["scores"]).startswith(PNG_MAGIC)
    storage.remove(url)


def test_pngs_byte_identical_across_renders(local_report: dict[str, str], inputs: ReportInputs, tmp_path: Path) -> None:
    again = write_report(str(tmp_path / "again"), inputs)
    for key in ("marginals", "latent", "scores", "markdown", "json"):
        assert storage.read_bytes(again[key]) == storage.read_bytes(local_report[key]), key


def test_markdown_verdict_first_then_ranked_table(inputs: ReportInputs) -> None:
    text = render_markdown(inputs.results)
    assert text.startswith("# ")
    assert text.index(verdict(inputs.results)) < text.index("| rank |")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    assert rows[0].startswith("| 1 | `gmm` (chosen) | 0.871 | 0.891 | 0.841 | 0.612 | 0.771 | 1.040 | 0.0% | yes |")
    for entry in inputs.results["samplers"]:
        assert f"`{entry['name']}`" in text
    refused = next(row for row in rows if "`empirical`" in row)
    assert f"**no**: {REFUSAL}" in refused
    assert "12.0%" in refused
    assert rows[-1].startswith("| — | real training rows (ceiling) | 0.931 |")
    assert "23.0%" in text and "5.0% expected" in text
    assert "z3: 0.004" in text
    assert "(plots/marginals.png)" in text and "(plots/latent.png)" in text and "(plots/scores.png)" in text


def test_verdict_names_choice_prior_holes_and_refusal(inputs: ReportInputs) -> None:
    text = verdict(inputs.results)
    assert text.startswith("Use `gmm` here: it scores 0.871 quality (prior: 0.781; real training rows: 0.931)")
    assert "0.612 vs 0.834 for the prior" in text
    assert "no closer to training rows than fresh real rows" in text
    assert "hole share 23.0% vs 5.0% if q ≈ p, 1 of 4 latent dimensions inactive" in text
    assert "which is why it trails" in text
    assert f"refused `empirical`: {REFUSAL}." in text
    assert "\n" not in text


def test_report_without_label_and_without_prior(tmp_path: Path) -> None:
    results = _without_label_and_prior()
    report_inputs = _inputs(results)
    assert "prior" not in report_inputs.synthetic and "prior" not in report_inputs.latents
    urls = write_report(str(tmp_path / "nolabel"), report_inputs)
    assert storage.read_json(urls["json"]) == results
    text = storage.read_bytes(urls["markdown"]).decode()
    gmm_row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert "| 0.612 | — | 1.040 |" in gmm_row
    said = verdict(results)
    assert said.startswith("Use `gmm` here: it scores 0.871 quality (real training rows: 0.931)")
    assert "macro-F1" not in said and "for the prior" not in said
    assert "No prior sampler was scored" in said


def test_verdict_when_nothing_passes_the_privacy_guard() -> None:
    results = _results()
    for entry in results["samplers"]:
        entry["privacy_ok"], entry["privacy_reason"] = False, "median DCR below the holdout's"
    results["choice"] = None
    said = verdict(results)
    assert said.startswith("Use none of these samplers here")
    assert "`prior`: median DCR below the holdout's." in said
    assert "(chosen)" not in render_markdown(results)


def test_verdict_when_prior_is_chosen_and_fits() -> None:
    results = _results()
    results["choice"] = {"name": "prior", "reason": "best composite"}
    results["latent"]["hole_fraction"] = 0.052
    said = verdict(results)
    assert said.startswith("Use `prior` here: it scores 0.781 quality (real training rows: 0.931)")
    assert "aggregate posterior fills the prior" in said


def test_marginal_columns_caps_at_first_by_name() -> None:
    assert marginal_columns(["b", "a"]) == (["b", "a"], False)
    many = [f"c{i:02d}" for i in range(20, 0, -1)]
    shown, truncated = marginal_columns(many)
    assert truncated and shown == sorted(many)[:MAX_COLUMNS]


def test_write_report_rejects_bad_inputs(inputs: ReportInputs, tmp_path: Path) -> None:
    bad_kind = copy.copy(inputs)
    bad_kind.kinds = {k: v for k, v in KINDS.items() if k != "sex"}
    with pytest.raises(DataError, match="'sex'"):
        write_report(str(tmp_path / "a"), bad_kind)
    no_posterior = copy.copy(inputs)
    no_posterior.latents = {k: v for k, v in inputs.latents.items() if k != "aggregate posterior"}
    with pytest.raises(DataError, match="aggregate posterior"):
        write_report(str(tmp_path / "b"), no_posterior)
    assert not (tmp_path / "b" / "report.json").exists()  # nothing committed when a plot fails


def test_project_latents_panel_order_and_one_dimensional_space() -> None:
    rng = np.random.default_rng(0)
    latents = {name: rng.normal(size=(n, 1)) for name, n in [("gmm", 30), ("aggregate posterior", 7000), ("prior", 9)]}
    points, explained = project_latents(latents, ["gmm"])
    assert list(points) == ["prior", "aggregate posterior", "gmm"]
    assert points["aggregate posterior"].shape == (5000, 2)  # subsampled to MAX_POINTS
    assert points["prior"].shape == (9, 2) and np.all(points["prior"][:, 1] == 0.0)
    assert explained.tolist() == pytest.approx([1.0, 0.0])
