"""A rerun with nothing to do: answered from the steps' own records, without Prefect's server or Ray.

Every step of `run` records what its artifact was computed from (`steps.py`) and reuses it when nothing changed.
When all four would reuse theirs (the bundle, the statistics, the report, and a committed dataset whose shards
all pass their checksums), running the flow would only start Prefect's temporary server to report four reuses;
`reused_run` finds that out first, with the same checks the steps make, and the CLI reports it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vae_pipeline.bundle import default_statistics_url
from vae_pipeline.config import PipelineConfig
from vae_pipeline.errors import VaePipelineError
from vae_pipeline.evaluation.job import reused_evaluation
from vae_pipeline.generation.job import reused_generation
from vae_pipeline.posterior.job import reused_statistics
from vae_pipeline.training.job import reused_training

logger = logging.getLogger(__name__)


def reused_run(config: PipelineConfig) -> list[tuple[str, str]] | None:
    """Each step's `reused: ...` summary when every step of the flow would reuse its artifact; else None.

    The generation check is the one the flow makes (it always resumes): the committed run is this run and every
    shard's checksum holds. Any error means the flow has work or a message to give, so it is left to the flow.
    """
    model_url = config.model_url
    statistics_url = default_statistics_url(model_url)
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("train", lambda: reused_training(config)),
        ("statistics", lambda: reused_statistics(config, model_url, statistics_url)),
        ("evaluate", lambda: reused_evaluation(config, model_url, statistics_url)),
        ("generate", lambda: reused_generation(config, model_url, statistics_url)),
    ]
    found = []
    for step, check in checks:
        try:
            summary = check()
        except (VaePipelineError, OSError) as exc:
            logger.info("rerun check: %s cannot be reused here (%s); running the flow", step, exc)
            return None
        if summary is None:
            logger.info("rerun check: %s has work to do; running the flow", step)
            return None
        found.append((step, summary))
    return found
