"""One shard's rows, as a pure function: shard spec -> Arrow table in the training data's schema.

Latents come from the sampler, the decoder turns them into likelihood parameters, the model draws a data-space
vector from them (one-hot categories, null indicators), and the transform maps that back to the original columns.
Everything random flows from the shard's seed sequence, so a shard always has the same rows on the same device.

On a GPU the decoder and the likelihood draws run there, in large batches, and each batch is copied into the
host buffer that the inverse transform reads; latents from a non-Gaussian sampler are drawn on the host. A GPU
draws other random streams than a CPU, so its shards differ from a CPU's (the run id records the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from vae_pipeline.bundle import ModelBundle
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.models.base import FeatureMajorDecoder, LatentAffineFoldable
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, standard_normal_tensor

# Rows inverse-transformed per call: large enough that per-column call overhead vanishes, small enough that the
# (D, rows) float32 buffer stays modest; one Parquet row group.
_CHUNK_ROWS = 65_536


@dataclass
class ShardGenerator:
    """A loaded model, its statistics and a fitted sampler; reused for every shard a worker makes.

    It keeps one (D, chunk) float32 buffer between shards: writing into fresh memory costs a page fault per 4 KiB,
    which made the writes into a new buffer six times slower than into a reused one. So one generator serves one
    thread at a time.
    """

    bundle: ModelBundle
    posterior: AggregatePosterior
    sampler: LatentSampler
    batch_rows: int = 4_096
    device: str = "cpu"

    def __post_init__(self) -> None:
        # A single-Gaussian sampler is folded into the decoder, which then decodes the normal draws directly, when
        # the model can fold it (an optional capability: models/base.py).
        model = self.bundle.model
        form = self.sampler.affine_form() if isinstance(model, LatentAffineFoldable) else None
        self._fused = form is not None
        self._device = torch.device(self.device)
        self._on_host = self._device.type == "cpu"
        decoder = model
        if form is not None:
            assert isinstance(model, LatentAffineFoldable)
            decoder = model.with_latent_affine(*map(torch.from_numpy, form))
        self._decoder = decoder.to(self._device)
        self._feature_major = isinstance(decoder, FeatureMajorDecoder)
        self._buffer = torch.empty(0)

    def generate(self, spec: ShardSpec) -> pa.Table:
        latent_rng, output_seed, decode_rng = _generators(spec)
        output_generator = torch.Generator(self._device).manual_seed(output_seed)
        # Whole decode batches per chunk, so the draws are the same as one pass of batch_rows over the shard.
        chunk_rows = max(1, _CHUNK_ROWS // self.batch_rows) * self.batch_rows
        sizes = _batch_sizes(spec.rows, chunk_rows) or [0]
        starts = spec.start + np.concatenate([[0], np.cumsum(sizes)[:-1]])  # each chunk's first row in the dataset
        tables = [
            self._generate_chunk(rows, latent_rng, output_generator, int(start), decode_rng)
            for rows, start in zip(sizes, starts, strict=True)
        ]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()

    def _generate_chunk(
        self,
        rows: int,
        latent_rng: np.random.Generator,
        output_generator: torch.Generator,
        row_offset: int,
        decode_rng: np.random.Generator,
    ) -> pa.Table:
        """Decode batch by batch into one feature-major buffer, then inverse-transform it in one call."""
        transform = self.bundle.transform
        if self._buffer.shape[1:] < (rows,):
            # Pinned host memory for a GPU: its copies into the buffer then run at full bus speed.
            self._buffer = torch.empty((transform.output_dim, rows), pin_memory=not self._on_host)
        vector = self._buffer[:, :rows]  # (D, R); the tables made from it never share its memory
        labels = np.empty(rows, dtype=np.int64) if transform.conditional else None
        offset = 0
        for batch in _batch_sizes(rows, self.batch_rows):
            z, classes = self._latents(batch, latent_rng)
            condition = None
            if labels is not None:
                classes = classes if classes is not None else self._training_classes(batch, latent_rng)
                labels[offset : offset + batch] = classes
                condition = torch.from_numpy(transform.condition(classes)).to(self._device)
            with torch.inference_mode():
                self._decode_into(vector[:, offset : offset + batch], z, condition, output_generator)
            offset += batch
        # (R, D) column-major: each transform column reads contiguous memory.
        return transform.inverse_transform(vector.numpy().T, labels=labels, row_offset=row_offset, rng=decode_rng)

    def _decode_into(
        self, rows_out: torch.Tensor, z: torch.Tensor, condition: torch.Tensor | None, generator: torch.Generator
    ) -> None:
        """Decode (B, L) latents into the (D, B) slice of the host buffer."""
        model = self._decoder
        if not isinstance(model, FeatureMajorDecoder):  # e.g. the conv VAE: row-major, transposed once
            rows_out.copy_(model.generate(z, condition, generator).T)  # waits for a GPU
            return
        raw_t = model.decode_feature_major(z, condition)  # (D, B)
        if self._on_host:
            model.sample_feature_major(raw_t, generator, out=rows_out)
        else:
            rows_out.copy_(model.sample_feature_major(raw_t, generator))  # waits for the GPU

    def _latents(self, rows: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray | None]:
        """What the decoder reads, on its device: the sampler's latents, or for a folded sampler its normal draws."""
        if self._fused:
            return standard_normal_tensor(rng, rows, self.posterior.latent_dim, self._device), None
        sample = self.sampler.sample(rows, generator=rng)
        z = torch.from_numpy(np.ascontiguousarray(sample.z, dtype=np.float32))
        return z.to(self._device, non_blocking=True), sample.classes

    def _training_classes(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        """For a CVAE with an unconditional sampler: classes in their training proportions."""
        counts = np.asarray(self.posterior.class_counts, dtype=np.float64)
        return rng.choice(len(counts), size=rows, p=counts / counts.sum()).astype(np.int64)


def _generators(spec: ShardSpec) -> tuple[np.random.Generator, int, np.random.Generator]:
    """Latents, the likelihood draws, and decoding's own draws (rare categories); a third child leaves the first
    two, and so the shards of tables that need no decode draws, as they were."""
    latent_seq, output_seq, decode_seq = spec.seed_sequence().spawn(3)
    output_seed = int(output_seq.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)
    return np.random.default_rng(latent_seq), output_seed, np.random.default_rng(decode_seq)


def _batch_sizes(total: int, batch_rows: int) -> list[int]:
    full, rest = divmod(total, batch_rows)
    return [batch_rows] * full + ([rest] if rest else [])
