"""Each column's role, decided from its profile after the pass, with the reason shown to the user.

Roles: continuous, discrete, categorical (numbers by transforms/discrete.py's rules), datetime (temporal types,
and strings in one date format), id, text, constant. `data.column_kinds` overrides the inference; the label
column is always categorical. A string column is tried in this order:

1. constant: one value and no nulls;
2. dates as text: every value in one date format (text_formats.py); every value a date but in several
   formats is a one-line error naming two of them (set the column to categorical to keep the strings);
3. numbers as text ("007", "12.50", "1,234"): modelled as numbers, written back in their format; integers
   that are unique and count up from 0 or 1 (or sit in a column named like an id) are ids;
4. id: at least `MIN_ID_ROWS` rows, at least 99% of them distinct, and not prose;
5. text: prose (long or many-worded values) with most values seen once, or any values nine in ten seen once
   (as a categorical its rare class would replay single rows);
6. categorical, the `max_categories - 1` most frequent values with a rare class for the rest.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

import pyarrow as pa

from vae_pipeline.config import DataConfig
from vae_pipeline.errors import DataError
from vae_pipeline.image_columns import image_shape
from vae_pipeline.transforms.base import ColumnTransform
from vae_pipeline.transforms.categorical import CategoricalColumn, TextColumn
from vae_pipeline.transforms.constant import ConstantColumn
from vae_pipeline.transforms.continuous import ContinuousColumn
from vae_pipeline.transforms.discrete import DiscreteColumn, numeric_decision
from vae_pipeline.transforms.identifier import IdColumn, id_reason, repeated_value_error
from vae_pipeline.transforms.image import ImageColumn
from vae_pipeline.transforms.inference import IMAGE, INTEGER, NUMBER, STRING, TEMPORAL
from vae_pipeline.transforms.parsed_text import ParsedTextColumn, parsed_profile
from vae_pipeline.transforms.profile import ColumnProfile
from vae_pipeline.transforms.text_formats import DateFormat, TextFormat, detect_format

MIN_ID_ROWS = 20  # fewer rows than this never make an id or text column: uniqueness means little there
ID_DISTINCT_SHARE = 0.99
TEXT_SINGLETON_SHARE = 0.9  # values seen once in this share of rows: a categorical tail would replay rows
PROSE_SINGLETON_SHARE = 0.5
PROSE_WORDS, PROSE_LENGTH = 4, 40  # median words, or mean characters, of free text
_ID_WORDS = {"id", "ids", "uuid", "guid", "key"}


@dataclass(frozen=True)
class Decision:
    """A column's role, why, and its (unfitted) transform."""

    role: str
    reason: str
    transform: ColumnTransform


def decide(
    field: pa.Field, plan: str, profile: ColumnProfile, config: DataConfig, *, is_label: bool = False
) -> Decision:
    """The role of one column, from its type family (`inference.plan_kind`), its profile and the config."""
    override = config.column_kinds.get(field.name)
    if is_label:
        label = CategoricalColumn(field.name, field.type, max_categories=config.max_categories, allow_rare=False)
        return Decision("categorical", "data.label_column", label)
    if plan == IMAGE:
        shape = "x".join(map(str, image_shape(field.type)))
        return Decision("image", f"{shape} {field.type.value_type} images", ImageColumn(field.name, field.type))
    if override is not None:
        return _overridden(field, plan, override, profile, config)
    if _is_constant(profile):
        return _constant(field, profile)
    if plan == TEMPORAL:
        return Decision("datetime", f"{field.type} values", _continuous(field, config))
    if plan in (INTEGER, NUMBER):
        if plan == INTEGER and _integer_id(field.name, profile, profile.minimum, profile.maximum):
            assert profile.values is not None
            return Decision("id", id_reason(profile.values, profile.non_null), IdColumn(field.name, field.type))
        return _numeric(field, profile, config)
    if plan == STRING:
        return _string(field, profile, config)
    return _categorical(field, profile, config)


def _overridden(field: pa.Field, plan: str, override: str, profile: ColumnProfile, config: DataConfig) -> Decision:
    reason = f"data.column_kinds: {override}"
    stats = profile.values
    if override == "categorical":
        _check_tail(field.name, profile, config)
        return Decision("categorical", reason, _categorical(field, profile, config).transform)
    if override == "constant":
        return Decision("constant", reason, ConstantColumn(field.name, field.type))
    if override == "id":
        assert stats is not None
        if stats.first_repeat is not None:
            raise repeated_value_error(field.name, stats)
        return Decision("id", reason, IdColumn(field.name, field.type))
    if override == "text":
        return Decision("text", reason, TextColumn(field.name, field.type, min_count=config.text_min_count))
    if plan != STRING:  # continuous, discrete or datetime on a number or temporal column
        role = "datetime" if plan == TEMPORAL else override
        column = DiscreteColumn if override == "discrete" else ContinuousColumn
        return Decision(role, reason, column(field.name, field.type, max_modes=config.max_modes))
    assert stats is not None
    text_format = detect_format(stats, field.name, "date")
    if text_format is None and override != "datetime":
        text_format = detect_format(stats, field.name, "number")
    if text_format is None:
        shown = next(iter(stats.shapes.values()), [0, ""])[1]
        wanted = "dates in one format" if override == "datetime" else "numbers or dates in one text format"
        raise DataError(
            f"column '{field.name}' has type {field.type}, which cannot be {override} (its values are not "
            f"{wanted}, e.g. {shown!r}); remove it from data.column_kinds or set it to categorical"
        )
    inner = "discrete" if override == "discrete" else "continuous"
    role = "datetime" if override == "datetime" or _is_date(text_format) else override
    return Decision(role, reason, _parsed(field, text_format, inner, config))


def _string(field: pa.Field, profile: ColumnProfile, config: DataConfig) -> Decision:
    stats = profile.values
    assert stats is not None
    for kind in ("date", "number"):
        text_format = detect_format(stats, field.name, kind)  # type: ignore[arg-type]
        if text_format is not None:
            return _text_numbers(field, profile, text_format, config)
    rows = profile.non_null
    prose = _prose(stats.sample())
    if rows >= MIN_ID_ROWS and stats.distinct_share >= ID_DISTINCT_SHARE and not prose:
        return Decision("id", id_reason(stats, rows), IdColumn(field.name, field.type))
    if rows >= MIN_ID_ROWS and (
        (prose and stats.singleton_share >= PROSE_SINGLETON_SHARE) or stats.singleton_share >= TEXT_SINGLETON_SHARE
    ):
        reason = f"free text, {stats.singleton_share:.0%} of values seen once"
        return Decision("text", reason, TextColumn(field.name, field.type, min_count=config.text_min_count))
    return _categorical(field, profile, config)


def _text_numbers(field: pa.Field, profile: ColumnProfile, text_format: TextFormat, config: DataConfig) -> Decision:
    """Dates or numbers written as text: categorical when few, an id when integers number the rows, else parsed."""
    cap = max(config.categorical_max_distinct, config.max_categories)
    numbers = parsed_profile(profile, text_format, cap)
    what = f"{'dates' if _is_date(text_format) else 'numbers'} as text, {text_format.describe()}"
    counts_rows = not _is_date(text_format) and pa.types.is_integer(numbers.arrow_type)
    if counts_rows and _integer_id(field.name, profile, numbers.minimum, numbers.maximum):
        assert profile.values is not None
        reason = f"{id_reason(profile.values, profile.non_null)}, {what}"
        return Decision("id", reason, IdColumn(field.name, field.type))
    kind, why = numeric_decision(numbers, config)
    if kind == "categorical":
        return Decision("categorical", f"{what}: {why}", _categorical(field, profile, config).transform)
    role = "datetime" if _is_date(text_format) else kind
    return Decision(role, f"{what}: {why}", _parsed(field, text_format, kind, config))


def _numeric(field: pa.Field, profile: ColumnProfile, config: DataConfig) -> Decision:
    kind, why = numeric_decision(profile, config)
    if kind == "categorical":
        return Decision("categorical", why, _categorical(field, profile, config).transform)
    column = DiscreteColumn if kind == "discrete" else ContinuousColumn
    return Decision(kind, why, column(field.name, field.type, max_modes=config.max_modes))


def _categorical(field: pa.Field, profile: ColumnProfile, config: DataConfig) -> Decision:
    column = CategoricalColumn(field.name, field.type, max_categories=config.max_categories)
    stats = profile.values
    if stats is None or not stats.counts:
        return Decision("categorical", f"{profile.n_distinct:,} values", column)
    values = f"{len(stats.counts):,}" if stats.counts_complete else f"more than {len(stats.counts):,}"
    if len(stats.counts) <= config.max_categories:
        return Decision("categorical", f"{values} values", column)
    return Decision("categorical", f"{values} values: {config.max_categories - 1:,} frequent + rare class", column)


def _constant(field: pa.Field, profile: ColumnProfile) -> Decision:
    stats = profile.values
    value = next(iter(stats.counts)) if stats is not None and stats.counts else next(iter(profile.distinct))
    return Decision("constant", f"one value, {str(value)[:30]!r}", ConstantColumn(field.name, field.type))


def _parsed(field: pa.Field, text_format: TextFormat, inner: str, config: DataConfig) -> ParsedTextColumn:
    cap = max(config.categorical_max_distinct, config.max_categories)
    options = {"inner": inner, "max_modes": config.max_modes, "distinct_cap": cap}
    return ParsedTextColumn(field.name, field.type, text_format=text_format, **options)  # type: ignore[arg-type]


def _continuous(field: pa.Field, config: DataConfig) -> ContinuousColumn:
    return ContinuousColumn(field.name, field.type, max_modes=config.max_modes)


def _is_constant(profile: ColumnProfile) -> bool:
    """One non-null value and no nulls (decimals and temporal values are left to the numeric transforms)."""
    if profile.nulls or pa.types.is_decimal(profile.arrow_type):
        return False
    stats = profile.values
    if stats is not None and stats.counts:
        return stats.counts_complete and len(stats.counts) == 1
    return profile.distinct_cap > 0 and not profile.overflowed and profile.n_distinct == 1


def _integer_id(name: str, profile: ColumnProfile, minimum: float, maximum: float) -> bool:
    """Unique integers that count rows (dense from 0 or 1), or unique integers in a column named like an id."""
    stats = profile.values
    if stats is None or profile.non_null < MIN_ID_ROWS or stats.first_repeat is not None:
        return False
    if stats.distinct_share < 1.0:
        return False
    counts_rows = minimum in (0, 1) and maximum - minimum + 1 <= 2 * profile.non_null
    return counts_rows or _id_name(name)


def _id_name(name: str) -> bool:
    words = [word.lower() for word in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if word]
    return bool(words) and (words[-1] in _ID_WORDS or words[0] == "id")


def _prose(sample: list[str]) -> bool:
    if not sample:
        return False
    words = statistics.median(len(value.split()) for value in sample)
    return words >= PROSE_WORDS or statistics.fmean(len(value) for value in sample) >= PROSE_LENGTH


def _check_tail(name: str, profile: ColumnProfile, config: DataConfig) -> None:
    """A categorical whose rare class would mostly replay values seen once is refused: that is free text."""
    stats = profile.values
    if stats is None or not stats.hash_cap or profile.non_null < MIN_ID_ROWS:
        return
    if len(stats.counts) > config.max_categories and stats.singleton_share >= TEXT_SINGLETON_SHARE:
        raise DataError(
            f"column '{name}' is set to categorical, but {stats.singleton_share:.0%} of its rows hold a value "
            "no other row has, which its rare class would copy; set data.column_kinds "
            f"{{{name}: text}} (or id, or drop)"
        )


def _is_date(text_format: TextFormat) -> bool:
    return isinstance(text_format, DateFormat)
