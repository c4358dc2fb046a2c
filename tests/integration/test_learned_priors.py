"""Learned priors end to end: trained by the statistics step, scored by the evaluation, generated from by the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PENGUINS
from tests.integration.conftest import run_cli, tiny_config
from vae_pipeline.evaluation.job import run_evaluation
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.posterior.job import run_statistics
from vae_pipeline.samplers.learned import LatentData
from vae_pipeline.training.job import run_training

SMALL = {
    "model": {"latent_dim": 4, "hidden_dims": [32, 32]},
    "training": {"executor": "local"},
    "statistics": {"executor": "local", "priors": {"flow": {"epochs": 20}, "diffusion": {"epochs": 40, "steps": 10}}},
    "evaluation": {"rows": 150, "temperatures": [0.8]},
    "generation": {"rows": 500, "executor": "local", "num_workers": 1},
}


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("priors")
    (root / "config.yaml").write_text(json.dumps(SMALL))
    result = run_cli(
        "run", "--config", str(root / "config.yaml"), "--input", PENGUINS, "--label", "species", "--model",
        str(root / "model"), "--output", str(root / "flow"), "--epochs", "20", "--sampler", "flow",
        "--no-privacy-guard",
    )  # fmt: skip
    return root, result


def test_the_flow_generates_from_the_stored_flow_prior(flow_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, result = flow_run
    assert result.returncode == 0, result.stderr[-2000:]

    manifest = read_manifest(str(root / "flow"))
    assert manifest is not None and manifest.rows == 500 and manifest.sampler["name"] == "flow"
    for name in ("flow", "diffusion"):
        meta = json.loads((root / "model" / "statistics" / "priors" / name / "prior.json").read_text())
        assert meta["curve"] and meta["seconds"] > 0
    assert "priors trained: flow" in result.stdout


def test_the_evaluation_scores_the_learned_priors(flow_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = flow_run
    report = json.loads((root / "model" / "evaluation" / "report.json").read_text())
    entries = {entry["name"]: entry for entry in report["samplers"]}

    assert {"flow", "diffusion", "flow@T=0.8"} <= set(entries)
    assert entries["flow"]["latent_log_likelihood"] is not None
    assert entries["diffusion"]["latent_log_likelihood"] is None  # no tractable density
    assert entries["gaussian"]["latent_log_likelihood"] is not None
    assert "## Latent fit" in (root / "model" / "evaluation" / "report.md").read_text()


def test_diffusion_generates_with_its_own_step_count_and_the_run_id_follows_the_weights(
    flow_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = flow_run
    outputs = []
    for steps in (5, 8):
        (root / f"diffusion{steps}.yaml").write_text(
            json.dumps({**SMALL, "sampler": {"name": "diffusion", "steps": steps}})
        )
        result = run_cli(
            "generate", "--config", str(root / f"diffusion{steps}.yaml"), "--model", str(root / "model"),
            "--output", str(root / f"diffusion{steps}"), "--no-privacy-guard",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(read_manifest(str(root / f"diffusion{steps}")))
    first, second = outputs
    assert first is not None and second is not None and first.run_id != second.run_id
    assert first.sampler == {"name": "diffusion", "temperature": 1.0, "steps": 5, "solver": None}


def test_a_sampler_whose_prior_is_not_trained_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(json.dumps({"statistics": {"priors": {"flow": None}}}))
    result = run_cli(
        "run", "--config", str(tmp_path / "config.yaml"), "--input", PENGUINS, "--model", str(tmp_path / "model"),
        "--output", str(tmp_path / "out"), "--sampler", "flow",
    )  # fmt: skip

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "statistics.priors.flow is null" in lines[0]
    assert not (tmp_path / "model").exists()


def test_the_privacy_guard_refuses_a_prior_that_memorised_its_training_latents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sharp model (beta 0.02, trained long) decodes a training row's latent back close to that row. A diffusion
    prior trained 3,000 epochs on 22 latents and kept at its best loss on those same rows, instead of held-out ones,
    memorises them; the guard, which judges every candidate by its decoded rows, refuses it. (Chosen on held-out
    rows, as `LatentData` splits them, the same prior stops at an early epoch and passes.)"""

    def selected_on_training_rows(posterior: AggregatePosterior, seed: int) -> LatentData:
        split = split_latents(posterior, seed)
        return dataclasses.replace(split, held=split.train)

    split_latents = LatentData.from_posterior
    monkeypatch.setattr(LatentData, "from_posterior", selected_on_training_rows)
    config = tiny_config(
        tmp_path,
        model={"latent_dim": 8, "hidden_dims": [128, 128]},
        training={"epochs": 1500, "beta": 0.02, "learning_rate": 0.003, "executor": "local"},
        statistics={"executor": "local", "reservoir_size": 24, "priors": {"flow": None, "diffusion": {"epochs": 3000}}},
        evaluation={"rows": 150, "temperatures": []},
    )
    run_training(config)
    run_statistics(config)
    report = json.loads(Path(run_evaluation(config)).read_text())

    entries = {entry["name"]: entry for entry in report["samplers"]}
    assert not entries["diffusion"]["privacy_ok"]
    assert "closer to training rows than fresh real rows" in entries["diffusion"]["privacy_reason"]
    assert entries["gaussian"]["privacy_ok"] and report["choice"]["name"] != "diffusion"
