"""The Prefect flow on its ephemeral API: caching by input and config, retries, and the run's artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

import flows.augment as augment_module
from flows.augment import augment, statistics_task
from tests.conftest import PENGUINS
from tests.integration.conftest import QUICK_EVALUATION, TrainedModel, tiny_config
from vae_pipeline import steps
from vae_pipeline.bundle import default_statistics_url, stored_fingerprint
from vae_pipeline.cli import describe
from vae_pipeline.config import parse_config
from vae_pipeline.errors import DataError
from vae_pipeline.generation.manifest import read_manifest
from vae_pipeline.rerun import reused_run

pytestmark = pytest.mark.slow


def flow_config(root: Path, input_url: str) -> dict[str, Any]:
    config = tiny_config(
        root,
        data={"input_url": input_url},
        training={"epochs": 3},
        evaluation=QUICK_EVALUATION,
        sampler={"name": "auto"},
        generation={"rows": 2000, "rows_per_shard": 1000, "num_workers": 1},
    )
    return config.to_json()


def test_a_rerun_on_unchanged_data_reuses_every_step_and_new_data_retrains(ray_instance: None, tmp_path: Path) -> None:
    data = tmp_path / "input.parquet"
    shutil.copy(PENGUINS, data)
    config = flow_config(tmp_path, str(data))
    state = augment(config=config, return_state=True)
    assert state.is_completed()
    model_url = config["model_url"]
    fingerprint = stored_fingerprint(model_url)
    records = {url: steps.read_record(url) for url in _step_urls(model_url)}
    manifest = read_manifest(config["generation"]["output_url"])
    assert manifest is not None and all(records.values())
    assert [entry["step"] for entry in manifest.extra["history"]] == ["train", "statistics", "evaluate"]
    shown = describe(config["generation"]["output_url"])["history"]
    assert list(shown) == ["train", "statistics", "evaluate", "generate"] and "peak RSS" in shown["train"]
    assert list(describe(model_url)["history"]) == ["train", "statistics", "evaluate"]

    second = augment(config=config, return_state=True)
    assert second.is_completed()
    assert stored_fingerprint(model_url) == fingerprint  # no retraining
    assert {url: steps.read_record(url) for url in _step_urls(model_url)} == records
    assert read_manifest(config["generation"]["output_url"]) == manifest
    timings = _artifact(second.state_details.flow_run_id, "step-timings")
    assert "true" in str(timings.data).lower()  # every step was reused
    summary = _artifact(second.state_details.flow_run_id, "augmentation-run")
    assert "2,000 in 2 shards" in str(summary.data) and "_manifest.json" in str(summary.data)
    # What `vae-pipeline run` asks before it starts Prefect: here, every step would be reused.
    reused = reused_run(parse_config(config))
    assert reused is not None and [step for step, _ in reused] == ["train", "statistics", "evaluate", "generate"]
    assert all(summary.startswith("reused: ") for _, summary in reused)
    assert reused[-1][1] == "reused: 2,000 rows in 2 shards (checksums verified)"

    table = pq.read_table(PENGUINS)
    pq.write_table(table.slice(0, table.num_rows - 40), data)  # new data lands at the same URL
    config["generation"]["output_url"] = str(tmp_path / "synthetic-2")
    third = augment(config=config, return_state=True)
    assert third.is_completed()
    assert stored_fingerprint(model_url) != fingerprint  # retrained on the new rows
    assert (
        reused_run(parse_config({**config, "generation": {**config["generation"], "output_url": str(tmp_path / "x")}}))
        is None
    )


def test_transient_failures_are_retried_and_user_errors_are_not(
    trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = augment_module.run_statistics

    def flaky(config: Any, model_url: str, **options: Any) -> str:
        calls.append("flaky")
        if len(calls) == 1:
            raise ConnectionResetError("the object store dropped the connection")
        return real(config, model_url=model_url, **options)

    monkeypatch.setattr(augment_module, "run_statistics", flaky)
    quick = statistics_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    def statistics_only() -> dict[str, Any]:
        return quick(trained.config.to_json(), trained.model_url)

    result = statistics_only()
    assert calls == ["flaky", "flaky"] and result["url"] == default_statistics_url(trained.model_url)

    def bad_data(config: Any, model_url: str, **options: Any) -> str:
        calls.append("bad")
        raise DataError("input has no rows")

    calls.clear()
    monkeypatch.setattr(augment_module, "run_statistics", bad_data)
    with pytest.raises(DataError, match="no rows"):
        statistics_only()
    assert calls == ["bad"]  # a user's mistake fails at once


def _step_urls(model_url: str) -> list[str]:
    return [model_url, default_statistics_url(model_url), f"{model_url}/evaluation"]


def _artifact(flow_run_id: Any, key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    assert found, f"no {key} artifact for flow run {flow_run_id}"
    return found[0]
