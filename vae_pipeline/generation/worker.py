"""One shard's rows, as a pure function: shard spec -> Arrow table in the training data's schema.

Latents come from the sampler, the decoder turns them into likelihood parameters, the model draws a data-space
vector from them (one-hot categories, null indicators), and the transform maps that back to the original columns.
Everything random flows from the shard's seed sequence, so a shard always has the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from vae_pipeline.bundle import ModelBundle
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler


@dataclass
class ShardGenerator:
    """A loaded model, its statistics and a fitted sampler; reused for every shard a worker makes."""

    bundle: ModelBundle
    posterior: AggregatePosterior
    sampler: LatentSampler
    batch_rows: int = 4_096

    def generate(self, spec: ShardSpec) -> pa.Table:
        latent_rng, output_seed = _generators(spec)
        output_generator = torch.Generator().manual_seed(output_seed)
        tables = []
        for rows in _batch_sizes(spec.rows, self.batch_rows):
            tables.append(self._generate_batch(rows, latent_rng, output_generator))
        return pa.concat_tables(tables).combine_chunks()

    def _generate_batch(
        self, rows: int, latent_rng: np.random.Generator, output_generator: torch.Generator
    ) -> pa.Table:
        sample = self.sampler.sample(rows, generator=latent_rng)
        transform = self.bundle.transform
        classes = sample.classes
        condition = None
        if transform.conditional:
            if classes is None:
                classes = self._training_classes(rows, latent_rng)
            condition = torch.from_numpy(transform.condition(classes))
        with torch.inference_mode():
            raw = self.bundle.model.decode(
                torch.from_numpy(np.ascontiguousarray(sample.z, dtype=np.float32)), condition
            )
            vector = self.bundle.model.sample_output(raw, output_generator)
        return transform.inverse_transform(vector.numpy(), labels=classes if transform.conditional else None)

    def _training_classes(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        """For a CVAE with an unconditional sampler: classes in their training proportions."""
        counts = np.asarray(self.posterior.class_counts, dtype=np.float64)
        return rng.choice(len(counts), size=rows, p=counts / counts.sum()).astype(np.int64)


def _generators(spec: ShardSpec) -> tuple[np.random.Generator, int]:
    latent_seq, output_seq = spec.seed_sequence().spawn(2)
    output_seed = int(output_seq.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)
    return np.random.default_rng(latent_seq), output_seed


def _batch_sizes(total: int, batch_rows: int) -> list[int]:
    full, rest = divmod(total, batch_rows)
    return [batch_rows] * full + ([rest] if rest else [])
