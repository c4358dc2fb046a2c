"""The report for tables with an image column: the gallery plot, the image columns of the table, the verdict.

Entries hold an "image" dict (ImageReference.score without privacy) and no tabular scores when the label is the
table's only other column; a mixed table holds both. The images are scikit-learn's 8x8 digits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from vae_pipeline import executor, storage
from vae_pipeline.config import EvaluationConfig
from vae_pipeline.errors import DataError
from vae_pipeline.evaluation import privacy
from vae_pipeline.evaluation.image_metrics import image_composite
from vae_pipeline.evaluation.image_plots import MAX_SAMPLERS, render_image_grid
from vae_pipeline.evaluation.image_reference import ImageReference
from vae_pipeline.evaluation.plots import render_scores
from vae_pipeline.evaluation.report import ImageGallery, ReportInputs, render_markdown, verdict, write_report
from vae_pipeline.evaluation.store import REPORT_FORMAT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFUSAL = "synthetic rows sit closer to training rows than fresh real rows do (DCR ratio 0.12 < 0.90)"
IMAGE_HEADER = ("| rank | sampler | FD | precision | recall | TSTR accuracy | conditional accuracy | DCR ratio "
                "| exact copies | privacy ok |")  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with executor.one_thread():
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images / 16.0).astype(np.float32)[:, None], data.target.astype(np.int64)


def _image(fd: float, precision: float, recall: float, tstr: float | None, conditional: float | None) -> dict:
    return {"frechet_distance": fd, "precision": precision, "recall": recall, "density": precision,
            "coverage": recall, "tstr_accuracy": tstr, "conditional_accuracy": conditional, "images": 300}  # fmt: skip


def _entry(name: str, image: dict[str, Any], dcr: float, composite: float, **extra: Any) -> dict[str, Any]:
    """One sampler's results for an image table whose only other column is the label."""
    return {
        "name": name,
        "sampler": {"name": name, "temperature": 1.0, "diagonal": False, "classes": None},
        "quality": None, "detection_auc": None, "utility": None,
        "image": image,
        "privacy": {"dcr_ratio": dcr, "exact_copy_share": extra.get("copies", 0.0), "dcr_synthetic_median": dcr,
                    "dcr_real_median": 1.0, "pixel_dcr_ratio": dcr, "feature_dcr_ratio": dcr + 0.1},
        "composite": composite,
        "privacy_ok": extra.get("ok", True),
        "privacy_reason": extra.get("reason"),
    }  # fmt: skip


def _results() -> dict[str, Any]:
    samplers = [
        _entry("gmm", _image(12.3, 0.81, 0.74, 0.912, None), 1.02, 0.80),
        _entry("empirical", _image(6.1, 0.93, 0.88, 0.95, None), 0.12, 0.90, ok=False, reason=REFUSAL, copies=0.2),
        _entry("conditional", _image(14.0, 0.79, 0.70, 0.90, 0.85), 1.05, 0.76),
        _entry("prior", _image(30.1, 0.52, 0.61, 0.70, None), 1.20, 0.55),
    ]
    reference_image = {**_image(5.0, 0.95, 0.94, 0.967, 0.967), "frechet_floor": 5.0, "images": 1400}
    return {
        "format": REPORT_FORMAT,
        "model_fingerprint": "3f2a9c1b",
        "seed": 7,
        "label_column": "digit",
        "rows": {"synthetic_per_sampler": 300, "holdout": 397, "train": 1400},
        "latent": {"latent_dim": 4, "active_units": 4, "kl_to_prior_estimate": 0.4, "hole_fraction": 0.2,
                   "hole_quantile": 0.05, "gmm_components": 10, "kl_per_dim": [1.2, 0.9, 0.5, 0.3]},
        "reference": {"name": "real training images", "quality": None, "detection_auc": None, "utility": None,
                      "image": reference_image, "privacy": {"dcr_ratio": 1.0, "exact_copy_share": 0.0}},
        "samplers": samplers,
        "choice": {"name": "gmm", "reason": "best composite among samplers that pass the privacy guard"},
        "real_copy_share": 0.0,
    }  # fmt: skip


def _inputs(results: dict[str, Any], digits: tuple[np.ndarray, np.ndarray], labelled: bool = True) -> ReportInputs:
    images, labels = digits
    rng = np.random.default_rng(0)
    names = [entry["name"] for entry in results["samplers"]]
    latents = {name: rng.normal(0, 1.0, (200, 4)) for name in names}
    latents["aggregate posterior"] = rng.normal(0, 0.6, (300, 4))
    columns = {"digit": labels[:397]} if labelled else {}
    samplers = {
        name: (np.clip(images[i * 100 : i * 100 + 300] + rng.normal(0, 0.05 * i, (300, 1, 8, 8)), 0, 1),
               labels[i * 100 : i * 100 + 300] if labelled else None)
        for i, name in enumerate(names)
    }  # fmt: skip
    return ReportInputs(
        results=results,
        real=pd.DataFrame(columns),
        synthetic={name: pd.DataFrame({"digit": samplers[name][1]} if labelled else {}) for name in names},
        latents=latents,
        kinds={"digit": "categorical"} if labelled else {},
        images=ImageGallery(images[:397], labels[:397] if labelled else None, samplers,
                            [f"digit {d}" for d in range(10)] if labelled else None),
    )  # fmt: skip


def _without_labels() -> dict[str, Any]:
    results = _results()
    results["label_column"] = None
    for entry in [*results["samplers"], results["reference"]]:
        entry["image"]["tstr_accuracy"] = entry["image"]["conditional_accuracy"] = None
    return results


def test_write_report_adds_the_image_gallery(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    inputs = _inputs(_results(), digits)
    urls = write_report(str(tmp_path / "eval"), inputs)
    assert set(urls) == {"json", "markdown", "marginals", "latent", "scores", "images"}
    assert urls["images"].endswith("eval/plots/images.png")
    for key in ("marginals", "latent", "scores", "images"):
        assert storage.read_bytes(urls[key]).startswith(PNG_MAGIC)
    assert storage.read_json(urls["json"]) == inputs.results
    assert "(plots/images.png)" in storage.read_bytes(urls["markdown"]).decode()
    again = write_report(str(tmp_path / "again"), inputs)
    assert storage.read_bytes(again["images"]) == storage.read_bytes(urls["images"])  # reproducible bytes


def test_markdown_table_shows_image_scores_without_tabular_columns() -> None:
    text = render_markdown(_results())
    assert IMAGE_HEADER in text and "| quality |" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    assert rows[0] == "| 1 | `gmm` (chosen) | 12.300 | 0.810 | 0.740 | 0.912 | — | 1.020 | 0.0% | yes |"
    assert rows[2].startswith("| 3 | `conditional` | 14.000 | 0.790 | 0.700 | 0.900 | 0.850 |")
    assert f"**no**: {REFUSAL}" in rows[1]
    assert (
        rows[-1] == "| — | real training images (ceiling) | 5.000 | 0.950 | 0.940 | 0.967 | 0.967 | 1.000 | 0.0% | — |"
    )


def test_verdict_reads_the_image_scores() -> None:
    said = verdict(_results())
    assert said.startswith(
        "Use `gmm` here: its images sit at Fréchet distance 12.300 from real holdout images (prior: 30.100; real "
        "training images: 5.000) with precision 0.810 and recall 0.740, a classifier trained on them reaches "
        "accuracy 0.912 on real holdout images (trained on real images: 0.967)"
    )
    assert "no closer to training images than fresh real images do (DCR ratio 1.020)" in said
    assert "quality" not in said and "detection AUC" not in said
    assert f"refused `empirical`: {REFUSAL.rstrip('.')}." in said
    results = _results()
    results["choice"] = {"name": "conditional", "reason": "best"}
    assert "recognises the requested class in 85.0% of them (of real holdout images: 96.7%)" in verdict(results)


def test_report_without_labels(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    results = _without_labels()
    urls = write_report(str(tmp_path / "nolabel"), _inputs(results, digits, labelled=False))
    text = storage.read_bytes(urls["markdown"]).decode()
    assert "| rank | sampler | FD | precision | recall | DCR ratio | exact copies | privacy ok |" in text
    assert "accuracy" not in verdict(results)
    assert storage.read_bytes(urls["images"]).startswith(PNG_MAGIC)


def test_image_scores_need_a_gallery(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    inputs = _inputs(_results(), digits)
    inputs.images = None
    with pytest.raises(DataError, match="ImageGallery"):
        write_report(str(tmp_path / "bad"), inputs)
    assert not (tmp_path / "bad" / "report.json").exists()


def test_mixed_table_shows_both_kinds_of_score() -> None:
    results = _results()
    for entry in [*results["samplers"], results["reference"]]:
        entry["quality"] = {"score": 0.8, "column_shapes": 0.82, "column_pair_trends": 0.77}
        entry["detection_auc"], entry["utility"] = 0.6, {"macro_f1": 0.7, "accuracy": 0.75}
    text = render_markdown(results)
    assert "| quality | column shapes | pair trends | detection AUC | utility macro-F1 | FD | precision |" in text
    assert "| real training images (ceiling) | 0.800 |" in text
    said = verdict(results)
    assert said.startswith("Use `gmm` here: it scores 0.800 quality (prior: 0.800; real training rows: 0.800)")
    assert "its images sit at Fréchet distance 12.300" in said and "macro-F1 0.700" in said
    assert render_scores(results).startswith(PNG_MAGIC)


def test_label_shares_beside_images_show_without_detection_or_utility() -> None:
    """The label's column shapes (quality) are scored, detection and utility are not, the reference has no quality."""
    results = _results()
    for i, entry in enumerate(results["samplers"]):
        entry["quality"] = {"score": 0.95 - i / 100, "column_shapes": 0.95 - i / 100, "column_pair_trends": None}
    text = render_markdown(results)
    assert "| rank | sampler | quality | column shapes | FD | precision |" in text
    assert "detection AUC" not in text and "macro-F1" not in text
    assert "| — | real training images (ceiling) | — | — | 5.000 |" in text
    said = verdict(results)
    assert said.startswith("Use `gmm` here: it scores 0.950 quality (prior: 0.920), its images sit at Fréchet")
    assert render_scores(results).startswith(PNG_MAGIC)


def test_scores_plot_handles_missing_tabular_scores() -> None:
    assert render_scores(_results()).startswith(PNG_MAGIC)
    assert render_scores(_without_labels()).startswith(PNG_MAGIC)


def test_image_grid_is_bounded_and_checks_shapes(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    twelve = {f"s{i:02d}": (images[:50], labels[:50]) for i in range(MAX_SAMPLERS)}
    many = {**twelve, "s98": (images[:50], None), "s99": (images[:50], labels[:50])}
    png12 = render_image_grid((images, labels), twelve, sorted(twelve), None)
    png14 = render_image_grid((images, labels), many, sorted(many), None)
    assert png12[16:24] == png14[16:24]  # the same width and height: samplers past the twelfth are left out
    rgba = np.random.default_rng(0).random((30, 4, 16, 12)).astype(np.float32)
    assert render_image_grid((rgba, None), {"gmm": (rgba[:5], None)}, ["gmm"], None, per_row=6).startswith(PNG_MAGIC)
    with pytest.raises(DataError, match="sampler 'gmm'"):
        render_image_grid((images, labels), {"gmm": (rgba, None)}, ["gmm"], None)


def test_report_from_scored_digits(digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """ImageReference output drops into the entries as the job will put it, and report.json holds it as-is."""
    images, labels = digits
    order = np.random.default_rng(1).permutation(len(images))
    train, holdout = order[:1400], order[1400:]
    reference = ImageReference.fit(images[train], labels[train], images[holdout], labels[holdout], seed=0)
    settings = EvaluationConfig()
    real = reference.reference()
    results = _results()
    results["reference"] = {"name": "real training images", "quality": None, "detection_auc": None,
                            "utility": None, "image": {k: v for k, v in real.items() if k != "privacy"},
                            "privacy": real["privacy"]}  # fmt: skip
    fakes = {"fresh": (images[holdout], labels[holdout]), "copies": (images[train][:300], labels[train][:300])}
    results["samplers"] = []
    for name, (fake, fake_labels) in fakes.items():
        scored = reference.score(fake, fake_labels, requested=fake_labels)
        ok, reason = privacy.verdict(scored["privacy"], reference.baseline(), privacy_margin=settings.privacy_margin,
                                     max_copy_excess=settings.max_copy_excess)  # fmt: skip
        image = {k: v for k, v in scored.items() if k != "privacy"}
        entry = _entry(name, image, 1.0, image_composite(scored, real), ok=ok, reason=reason)
        results["samplers"].append({**entry, "privacy": scored["privacy"]})
    results["choice"] = {"name": "fresh", "reason": "best composite"}
    assert [e["privacy_ok"] for e in results["samplers"]] == [True, False]
    inputs = _inputs(results, digits)
    inputs.images = ImageGallery(images[holdout], labels[holdout], fakes, None)
    urls = write_report(str(tmp_path / "scored"), inputs)
    assert storage.read_json(urls["json"]) == results
    assert "refused `copies`: " in verdict(results)
