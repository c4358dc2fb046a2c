"""The layout of the model's data vector: which slice holds which column part and which likelihood scores it.

The transform produces it, the model and its losses consume it; neither imports the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

SpanKind = Literal["gaussian", "softmax", "bernoulli", "image"]


@dataclass(frozen=True)
class Span:
    """One slice `[start, end)` of the transformed vector.

    kind: `gaussian` (a continuous value in [-1, 1], one slot), `softmax` (a one-hot group: categories or the
        mode indicator of a continuous column), `bernoulli` (a null indicator, one slot).
    column: the original column the slice belongs to.
    mask: index of the null-indicator slot of that column, or None. Where that slot is 1 the column is null and
        this span carries no information, so the loss ignores it.
    """

    kind: SpanKind
    start: int
    end: int
    column: str
    mask: int | None = None

    @property
    def width(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Span:
        return cls(**data)
