"""An augmented run's plan: the real rows per class, the synthetic rows each class needs, and the shards.

With `augment.enabled`, generation writes one dataset: every input row (copied into `real-*` shards, unless
`synthetic_only`) and, per class, exactly the synthetic rows that bring it to `augment.target`, in `part-*` shards
whose specs carry per-class quotas. A boolean provenance column tells the two apart. The manifest records the rows
per class and source.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vae_pipeline.augment.targets import parse_target
from vae_pipeline.config import AugmentConfig, GenerationConfig
from vae_pipeline.data import TableSource
from vae_pipeline.errors import ConfigError
from vae_pipeline.generation.plan import ShardSpec, plan_class_shards, plan_real_shards
from vae_pipeline.transforms.table import TableTransform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentPlan:
    """What an augmented run writes; `class_rows` are synthetic rows per label code (label_classes order)."""

    classes: list[str]
    real: dict[str, int]  # real rows per class (label as text); unlabelled rows are copied, not counted here
    class_rows: list[int]
    real_rows: int  # input rows copied (0 when synthetic_only)
    settings: AugmentConfig

    def specs(self, generation: GenerationConfig) -> list[ShardSpec]:
        synthetic = plan_class_shards(self.class_rows, generation.rows_per_shard, generation.seed)
        if not self.real_rows:
            return synthetic
        return synthetic + plan_real_shards(self.real_rows, generation.rows_per_shard, len(synthetic))

    def schema(self, transform: TableTransform) -> pa.Schema:
        """The dataset's schema: the model's columns, then the provenance column."""
        return transform.schema.append(pa.field(self.settings.provenance_column, pa.bool_(), nullable=False))

    def to_json(self) -> dict[str, Any]:
        """The manifest's `augment` section (and part of the run id)."""
        synthetic = dict(zip(self.classes, self.class_rows, strict=True))
        return {
            "target": self.settings.target,
            "provenance_column": self.settings.provenance_column,
            "synthetic_only": self.settings.synthetic_only,
            "classes": {name: {"real": self.real.get(name, 0), "synthetic": synthetic[name]} for name in self.classes},
            "real_rows": self.real_rows,
            "synthetic_rows": sum(self.class_rows),
        }


# Fewer real rows than this and a class's latents are a guess: its Gaussian (or a CVAE's condition) is fitted to a
# handful of points, and the per-class evaluation cannot judge its rows either.
MIN_CLASS_ROWS = 10


def plan_augment(settings: AugmentConfig, source: TableSource, transform: TableTransform) -> AugmentPlan:
    """Count the real rows per class in one pass over the label, and what the target adds to each.

    Raises:
        ConfigError: see `check_augment`.
    """
    label = transform.label_column
    if label is None:
        raise ConfigError("augment needs the label to balance; pass --label COLUMN (data.label_column)")
    real, rows, added = check_augment(settings, source, label)
    classes = [str(value) for value in transform.label_classes]
    class_rows = [added.get(name, 0) for name in classes]
    logger.info("augment: real rows per class %s; synthetic rows per class %s", real, added)
    return AugmentPlan(classes, real, class_rows, 0 if settings.synthetic_only else rows, settings)


def check_augment(
    settings: AugmentConfig, source: TableSource, label: str
) -> tuple[dict[str, int], int, dict[str, int]]:
    """Real rows per class, all rows, and the synthetic rows per class the target asks for; before any training.

    Raises:
        ConfigError: a provenance column the table already has, a label with a single class, a target naming an
            unknown class or asking for fewer rows than a class has, or a target that adds nothing.
    """
    if settings.provenance_column in source.schema.names:
        raise ConfigError(
            f"augment.provenance_column {settings.provenance_column!r} is already a column of the input; "
            "pick another name (--provenance-column)"
        )
    real, rows = _class_counts(source, label)
    if len(real) < 2:
        raise ConfigError(
            f"label column '{label}' has a single class ({sorted(real)}); there is nothing to balance: "
            "pick a label with at least two classes"
        )
    added = parse_target(settings.target).synthetic(real)
    if not sum(added.values()):
        raise ConfigError(
            f"--target {settings.target} adds no rows: every class already has its target ({real}); "
            "ask for more (e.g. CLASS=N with N above its count)"
        )
    return real, rows, added


def small_classes(real: dict[str, int], added: dict[str, int]) -> list[str]:
    """Warnings for classes to be topped up from fewer than MIN_CLASS_ROWS real rows, each naming the class."""
    return [
        f"class {name!r} has {real[name]} real rows; its {added[name]} synthetic rows come from latents fitted to "
        f"{real[name]} points (at least {MIN_CLASS_ROWS} are needed to model a class): treat them as a guess"
        for name in sorted(added)
        if added[name] and real[name] < MIN_CLASS_ROWS
    ]


def _class_counts(source: TableSource, label: str) -> tuple[dict[str, int], int]:
    """Real rows per class (as text) and all rows, streaming only the label column."""
    counts: Counter[str] = Counter()
    rows = 0
    for batch in source.batches():
        rows += batch.num_rows
        for entry in pc.value_counts(batch.column(label).drop_null()).to_pylist():
            counts[str(entry["values"])] += entry["counts"]
    return dict(counts), rows
