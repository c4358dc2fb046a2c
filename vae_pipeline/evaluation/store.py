"""Where the evaluation report lives and how generation reads it (the choice for `auto`, the privacy guard).

Kept apart from the evaluation job so generation can read a report without importing the scoring code.
"""

from __future__ import annotations

from typing import Any

from vae_pipeline import storage
from vae_pipeline.config import SamplerConfig
from vae_pipeline.errors import StorageError

EVALUATION_DIR = "evaluation"
REPORT_FILE = "report.json"
MARKDOWN_FILE = "report.md"
# v2: the privacy baseline from the training rows; v3: image scores; v4: one config per sampler
REPORT_FORMAT = "vae-pipeline/evaluation/v4"


def default_evaluation_url(model_url: str) -> str:
    return storage.join_url(model_url, EVALUATION_DIR)


def read_report(model_url: str) -> dict[str, Any] | None:
    """The model's evaluation report, or None when it has not been evaluated."""
    url = storage.join_url(default_evaluation_url(model_url), REPORT_FILE)
    if not storage.exists(url):
        return None
    report = storage.read_json(url)
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise StorageError(f"{storage.redact_url(url)} is not a {REPORT_FORMAT} report; rerun `vae-pipeline evaluate`")
    return report


def find_entry(report: dict[str, Any], sampler: SamplerConfig) -> dict[str, Any] | None:
    """The report's scores for exactly this sampler configuration, if it was evaluated."""
    wanted = sampler.model_dump(mode="json")
    for entry in report["samplers"]:
        if entry["sampler"] == wanted:
            return dict(entry)
    return None
