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
from vae_pipeline.errors import ConfigError
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.models.base import VAE, FeatureMajorDecoder, LatentAffineFoldable
from vae_pipeline.posterior.aggregate import AggregatePosterior
from vae_pipeline.samplers.base import LatentSampler, standard_normal_tensor
from vae_pipeline.samplers.conditional import ConditionalSampler
from vae_pipeline.samplers.learned import LearnedSampler
from vae_pipeline.transforms.table import TableTransform

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
        self._model = model.to(self._device)
        decoder = self._model
        if form is not None:
            assert isinstance(model, LatentAffineFoldable)
            decoder = model.with_latent_affine(*map(torch.from_numpy, form)).to(self._device)
        self._decoder = decoder
        self._buffer = torch.empty(0)
        self._class_samplers: dict[int, LatentSampler] = {}

    def generate(self, spec: ShardSpec) -> pa.Table:
        latent_rng, output_seed, decode_rng = _generators(spec)
        output_generator = torch.Generator(self._device).manual_seed(output_seed)
        rngs = (latent_rng, output_generator, decode_rng)
        if not spec.class_rows:
            return _joined(self._segment(spec.rows, None, spec.start, rngs))
        # An augmented run's exact quotas: the rows of each class in turn, drawn from that class's latents.
        tables, start = [], spec.start
        for code, rows in enumerate(spec.class_rows):
            if rows:
                tables += self._segment(rows, code, start, rngs)
                start += rows
        return _joined(tables)

    def _segment(self, rows: int, code: int | None, start: int, rngs: _Streams) -> list[pa.Table]:
        """`rows` rows (of class `code`, or of the sampler's classes), chunk by chunk."""
        # Whole decode batches per chunk, so the draws are the same as one pass of batch_rows over the shard.
        chunk_rows = max(1, _CHUNK_ROWS // self.batch_rows) * self.batch_rows
        sizes = _batch_sizes(rows, chunk_rows) or [0]
        starts = start + np.concatenate([[0], np.cumsum(sizes)[:-1]])  # each chunk's first row in the dataset
        return [self._generate_chunk(size, int(first), rngs, code) for size, first in zip(sizes, starts, strict=True)]

    def _generate_chunk(self, rows: int, row_offset: int, rngs: _Streams, code: int | None = None) -> pa.Table:
        """Decode batch by batch into one feature-major buffer, then inverse-transform it in one call."""
        latent_rng, output_generator, decode_rng = rngs
        transform = self.bundle.transform
        if self._buffer.shape[1:] < (rows,):
            # Pinned host memory for a GPU: its copies into the buffer then run at full bus speed.
            self._buffer = torch.empty((transform.output_dim, rows), pin_memory=not self._on_host)
        vector = self._buffer[:, :rows]  # (D, R); the tables made from it never share its memory
        labels = np.empty(rows, dtype=np.int64) if transform.conditional else None
        offset = 0
        decoder = self._decoder if code is None else self._model  # a class's latents are not the folded sampler's
        for batch in _batch_sizes(rows, self.batch_rows):
            z, classes = (
                self._latents(batch, latent_rng) if code is None else self._class_latents(batch, code, latent_rng)
            )
            condition = None
            if labels is not None:
                classes = classes if classes is not None else self._training_classes(batch, latent_rng)
                labels[offset : offset + batch] = classes
                condition = torch.from_numpy(transform.condition(classes)).to(self._device)
            with torch.inference_mode():
                self._decode_into(decoder, vector[:, offset : offset + batch], z, condition, output_generator)
            offset += batch
        # (R, D) column-major: each transform column reads contiguous memory.
        table = transform.inverse_transform(vector.numpy().T, labels=labels, row_offset=row_offset, rng=decode_rng)
        if code is not None and not transform.conditional:
            # The label is decoded like any column; a class's rows carry the class they were drawn for.
            table = transform.with_label(table, np.full(rows, code, dtype=np.int64))
        return table

    def _decode_into(
        self,
        model: VAE,
        rows_out: torch.Tensor,
        z: torch.Tensor,
        condition: torch.Tensor | None,
        generator: torch.Generator,
    ) -> None:
        """Decode (B, L) latents into the (D, B) slice of the host buffer."""
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

    def _class_latents(self, rows: int, code: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Latents of class `code` alone (its per-class Gaussian, or any sampler's under a CVAE's condition)."""
        if code not in self._class_samplers:
            self._class_samplers[code] = class_sampler(self.sampler, self.posterior, code, self.bundle.transform)
        sample = self._class_samplers[code].sample(rows, generator=rng)
        z = torch.from_numpy(np.ascontiguousarray(sample.z, dtype=np.float32))
        return z.to(self._device, non_blocking=True), np.full(rows, code, dtype=np.int64)

    def _training_classes(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        """For a CVAE with an unconditional sampler: classes in their training proportions."""
        counts = np.asarray(self.posterior.class_counts, dtype=np.float64)
        return rng.choice(len(counts), size=rows, p=counts / counts.sum()).astype(np.int64)


_Streams = tuple[np.random.Generator, torch.Generator, np.random.Generator]


def class_sampler(
    sampler: LatentSampler, posterior: AggregatePosterior, code: int, transform: TableTransform
) -> LatentSampler:
    """A sampler that draws only class `code`'s latents.

    The `conditional` sampler narrows to that class's Gaussian. Under a CVAE any sampler serves: the class is the
    decoder's condition. A plain model with another sampler has no class to draw from: a one-line error.
    """
    if isinstance(sampler, ConditionalSampler):
        label = str(posterior.class_labels[code])
        return ConditionalSampler(sampler.temperature, classes={label: 1.0}).fit(posterior)
    if isinstance(sampler, LearnedSampler) and sampler.conditional:
        return sampler.restricted_to(code)
    if transform.conditional:
        return sampler
    raise ConfigError(
        f"sampler {type(sampler).__name__} draws no particular class, and this model is not conditional; "
        "augment with sampler conditional (or auto), or train a CVAE (model.conditional: true) for any sampler"
    )


def _joined(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


def _generators(spec: ShardSpec) -> tuple[np.random.Generator, int, np.random.Generator]:
    """Latents, the likelihood draws, and decoding's own draws (rare categories); a third child leaves the first
    two, and so the shards of tables that need no decode draws, as they were."""
    latent_seq, output_seq, decode_seq = spec.seed_sequence().spawn(3)
    output_seed = int(output_seq.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)
    return np.random.default_rng(latent_seq), output_seed, np.random.default_rng(decode_seq)


def _batch_sizes(total: int, batch_rows: int) -> list[int]:
    full, rest = divmod(total, batch_rows)
    return [batch_rows] * full + ([rest] if rest else [])
