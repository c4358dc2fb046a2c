"""The statistics job's key bound on reservoir candidates, on real Ray: the same stored statistics with the bound,
without it, and after the fallback pass that a bound set too low triggers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.integration.conftest import TrainedModel
from vae_pipeline.posterior import job
from vae_pipeline.posterior.aggregate import ARRAYS_NAME, JSON_NAME
from vae_pipeline.posterior.job import run_statistics

pytestmark = pytest.mark.slow


def statistics_files(trained: TrainedModel, url: Path) -> dict[str, bytes]:
    # A 10-row reservoir: the penguins' ~240 training rows are many times more, so the bound applies.
    config = trained.config.with_overrides({"statistics.reservoir_size": 10})
    run_statistics(config, model_url=trained.model_url, statistics_url=str(url))
    return {name: (url / name).read_bytes() for name in (JSON_NAME, ARRAYS_NAME)}


def test_the_bound_and_its_fallback_store_the_statistics_of_every_row(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert job.reservoir_key_bound(240, 10) is not None
    bounded = statistics_files(trained, tmp_path / "bounded")
    monkeypatch.setattr(job, "reservoir_key_bound", lambda rows, size: None)
    assert statistics_files(trained, tmp_path / "unbounded") == bounded
    monkeypatch.setattr(job, "reservoir_key_bound", lambda rows, size: 2**40)  # no row's key is that small
    with caplog.at_level(logging.WARNING, logger="vae_pipeline.posterior.job"):
        assert statistics_files(trained, tmp_path / "fallback") == bounded
    assert "summarizing again without" in caplog.text
