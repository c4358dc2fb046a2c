"""GPUs for a step: there already, or asked of the cluster's autoscaler and waited for, for a bounded time.

A KubeRay GPU worker group that scales from zero has no GPUs until something asks for them, and Ray Train or an
actor asking for a GPU that never comes waits forever. So a step that needs GPUs checks first: with
`ray.gpu_wait_s` set it asks the autoscaler (`request_resources`) and waits that long; otherwise, or when the wait
runs out, it fails with a one-line error, never a silent CPU run.
"""

from __future__ import annotations

import logging
import time

import ray
from ray.autoscaler.sdk import request_resources

from vae_pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

POLL_S = 2.0


def cluster_gpus() -> float:
    """GPUs on the cluster's live nodes, busy or not."""
    return float(ray.cluster_resources().get("GPU", 0))


def require_gpus(count: int, wait_s: float = 0.0, what: str = "worker") -> None:
    """Make sure the connected cluster has `count` GPUs, asking its autoscaler for them for up to `wait_s`."""
    if cluster_gpus() >= count:
        return
    if wait_s > 0:
        _wait_for_gpus(count, wait_s)
        if cluster_gpus() >= count:
            return
    waited = f" after waiting {wait_s:g}s for the autoscaler" if wait_s > 0 else ""
    raise ConfigError(
        f"use_gpu is true but the Ray cluster has {cluster_gpus():g} GPU(s) for {count} {what}(s){waited}; "
        "set use_gpu: false, connect to a cluster with GPUs (ray.address), or let an autoscaling cluster start "
        "GPU nodes with ray.gpu_wait_s"
    )


def _wait_for_gpus(count: int, wait_s: float) -> None:
    """Ask the autoscaler for `count` one-GPU bundles and poll until they are there or `wait_s` has passed.

    The request is withdrawn afterwards either way: it is persistent, and left in place it would keep GPU nodes
    up after the step. The step's own placement groups or actors hold the nodes it uses.
    """
    logger.info("asking the autoscaler for %d GPU(s); waiting up to %gs", count, wait_s)
    request_resources(bundles=[{"GPU": 1}] * count)
    deadline = time.monotonic() + wait_s
    try:
        while cluster_gpus() < count and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    finally:
        request_resources(bundles=[])
    logger.info("the cluster has %g GPU(s)", cluster_gpus())
