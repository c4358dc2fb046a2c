"""One process's share of a generation run: a loaded model that writes shard after shard, with no Ray in sight.

The Ray actor in `job.py` is a thin wrapper around `ShardWriter`, and the local executor calls it in a loop, so a
shard has the same bytes whichever executor wrote it (Ray's preprocessors do the same: one piece of logic, run
in-process or at scale).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from vae_pipeline import steps, storage
from vae_pipeline.bundle import ModelBundle, load_bundle
from vae_pipeline.config import parse_sampler
from vae_pipeline.data import open_source
from vae_pipeline.errors import ArtifactMismatchError, ConfigError
from vae_pipeline.generation import output
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.generation.writer import write_shard
from vae_pipeline.posterior.aggregate import AggregatePosterior, load_posterior
from vae_pipeline.samplers.store import fitted_sampler

# Each writer decodes on one thread: a Ray actor holds one CPU, and the same thread count in-process keeps the
# floating-point reductions, and so the shards' bytes, the same as the actor's.
WRITER_THREADS = 1  # what executor.one_thread sets for the local executor's writer


class ShardWriter:
    """Holds one loaded model, its statistics and a fitted sampler for many shards.

    Arguments are plain JSON values, so a Ray actor can be built from the same ones.
    """

    def __init__(
        self,
        model_url: str,
        statistics_url: str,
        sampler: dict[str, Any],
        batch_rows: int,
        device: str,
        provenance: str | None = None,
    ) -> None:
        bundle, posterior = load_artifacts(model_url, statistics_url)
        self.bundle = bundle
        self.provenance = provenance  # an augmented run's boolean column: True on synthetic rows
        fitted = fitted_sampler(parse_sampler(sampler), posterior, statistics_url)
        self.generator = ShardGenerator(bundle, posterior, fitted, batch_rows, worker_device(device))
        self.counts: dict[str, Any] = {"pid": os.getpid(), "shards": 0, "rows": 0, "seconds": 0.0}
        if device == "cuda":
            self.counts["gpu"] = torch.cuda.get_device_name()

    def write(self, spec: dict[str, Any], output_url: str, run_id: str) -> dict[str, Any]:
        """Write one shard and its record, or reuse it if this run already finished it intact.

        Returns `{"record": <ShardRecord JSON>, "reused": bool}`.
        """
        shard = ShardSpec.from_json(spec)
        done = output.done_record(output_url, run_id, shard.name)
        if done is not None:
            return {"record": done.to_json(), "reused": True}
        started = time.perf_counter()
        table = self._real_rows(shard) if shard.source == "real" else self.generator.generate(shard)
        if self.provenance is not None:
            flags = pa.array(np.full(table.num_rows, shard.source != "real"), type=pa.bool_())
            table = table.append_column(pa.field(self.provenance, pa.bool_(), nullable=False), flags)
        record = write_shard(table, output_url, shard.index, shard.name)
        output.write_record(output_url, run_id, record)
        self.counts["shards"] += 1
        self.counts["rows"] += record.rows
        self.counts["seconds"] += time.perf_counter() - started
        return {"record": record.to_json(), "reused": False}

    def _real_rows(self, shard: ShardSpec) -> pa.Table:
        """Input rows [start, start + rows) as the model reads them (its columns, types), unchanged otherwise."""
        names = self.bundle.transform.schema.names
        parts, seen = [], 0
        for batch in open_source(self.bundle.config.data).batches():
            low, high = max(shard.start - seen, 0), min(shard.start + shard.rows - seen, batch.num_rows)
            if low < high:
                parts.append(pa.Table.from_batches([batch.slice(low, high - low)]).select(names))
            seen += batch.num_rows
            if seen >= shard.start + shard.rows:
                break
        table = pa.concat_tables(parts).combine_chunks()
        if table.num_rows != shard.rows:
            raise ArtifactMismatchError(
                f"the input now has fewer rows than shard {shard.name} copies ({table.num_rows} of {shard.rows}); "
                "it changed since the run was planned: rerun without --resume"
            )
        return table

    def usage(self) -> dict[str, Any]:
        """This writer's share of the run and its process's peak resident memory."""
        seconds = round(float(self.counts["seconds"]), 3)
        return {**self.counts, "seconds": seconds, "peak_rss_bytes": steps.peak_rss_bytes()}


def load_artifacts(model_url: str, statistics_url: str) -> tuple[ModelBundle, AggregatePosterior]:
    """The bundle and its statistics, refusing statistics computed for another model."""
    bundle = load_bundle(model_url)
    posterior = load_posterior(statistics_url)
    if posterior.model_fingerprint != bundle.fingerprint:
        raise ArtifactMismatchError(
            f"statistics at {storage.redact_url(statistics_url)} belong to model {posterior.model_fingerprint[:12]}, "
            f"not {bundle.fingerprint[:12]} at {storage.redact_url(model_url)}; rerun `vae-pipeline stats`"
        )
    return bundle, posterior


def worker_device(device: str) -> str:
    """The device a writer decodes on; a GPU that Ray assigned but torch cannot see is an error, not a CPU run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "generation.use_gpu is true but this worker sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}); install the CUDA build of torch on the GPU nodes "
            "(deploy/Dockerfile VARIANT=cuda) or set generation.use_gpu: false"
        )
    return device
