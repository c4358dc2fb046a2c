"""`vae-pipeline serve`: the augmentation flow as a long-running Prefect deployment on a cron schedule.

Prefect's `serve` registers the deployment and its schedule with the API (PREFECT_API_URL, or the ephemeral one)
and runs the scheduled and manually triggered flow runs in this process. For a work pool and workers instead, see
`prefect.yaml` and deploy/README.md.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.schedules import CronSchedule
from pydantic import ValidationError

from flows.augment import augment
from vae_pipeline.errors import ConfigError

DEFAULT_NAME = "augment-serve"  # prefect.yaml registers vae-augment/augment; serving must not replace it


def cron_schedule(cron: str, timezone: str = "UTC") -> CronSchedule:
    """A validated schedule; a cron string or time zone that does not parse is a ConfigError naming it."""
    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"--cron {cron!r} / --timezone {timezone!r} does not parse ({reason}); "
            "use five fields 'minute hour day month weekday', e.g. '0 2 * * *' for 02:00 daily"
        ) from exc


def deployment_parameters(config_url: str) -> dict[str, Any]:
    """The flow reads its config at run time, so editing the file changes the next scheduled run."""
    return {"config_url": config_url}


def serve_augment(config_url: str, cron: str, timezone: str = "UTC", name: str = DEFAULT_NAME) -> None:
    """Register the `vae-augment/<name>` deployment on the schedule and serve its runs until interrupted."""
    schedule = cron_schedule(cron, timezone)
    augment.serve(
        name=name,
        schedules=[schedule],
        parameters=deployment_parameters(config_url),
        description=f"vae-pipeline augmentation of {config_url}",
        tags=["vae-pipeline"],
    )
