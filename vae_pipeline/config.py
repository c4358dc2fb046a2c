"""The pipeline configuration: frozen pydantic models, one YAML file, an unknown key is an error.

Every artifact stores the config that produced it (`PipelineConfig.model_dump(mode="json")`), so it can be
rebuilt from that alone. Credentials never live here: storage options that look like secrets are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from vae_pipeline import storage
from vae_pipeline.errors import ConfigError

# A column's role: how it is modelled and written back (transforms/roles.py infers it; data.column_kinds overrides).
ColumnKind = Literal["continuous", "categorical", "discrete", "id", "datetime", "text", "constant", "drop"]
# A location, spelled one way (storage.normalize_url): `out//c`, `./out/c/` and `out/c` are one output, one run.
Location = Annotated[str, AfterValidator(storage.normalize_url)]
# Where a step runs (vae_pipeline/executor.py): auto = in this process when one process suffices, else on Ray.
ExecutorSetting = Literal["auto", "local", "ray"]
_EXECUTOR_HELP = "auto: in this process when one process suffices (no cluster, one worker, fits memory); else Ray"

_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "sas", "connection_string")
# Values of secret-looking options that name a mode rather than hold a secret (gcsfs: token="anon").
_NON_SECRET_VALUES = {"anon", "google_default", "cloud", "cache"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_HOLDOUT_FRACTION = 0.1


class DataConfig(_Frozen):
    """Where the training table is and how to read its columns."""

    input_url: Location = "data/penguins.parquet"
    format: Literal["auto", "parquet", "csv", "npz"] = "auto"
    column_kinds: dict[str, ColumnKind] = Field(default_factory=dict)
    drop_columns: list[str] = Field(default_factory=list)
    label_column: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    categorical_max_distinct: int = Field(
        20, ge=1, description="integers with at most this many values are categorical"
    )
    max_categories: int = Field(
        1000, ge=2, description="one-hot slots of a categorical column; rarer values share one 'rare' slot"
    )
    text_min_count: int = Field(
        5, ge=2, description="a text column's values seen at least this often are modelled; rarer ones become null"
    )
    max_modes: int = Field(10, ge=1, le=50, description="mixture components per continuous column")
    fit_sample_rows: int = Field(50_000, ge=100, description="bounded reservoir for fitting each column's mixture")
    batch_rows: int = Field(65_536, ge=1, description="rows per Arrow record batch when streaming the input")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    holdout_fraction: float | None = Field(
        None, ge=0.0, lt=0.5, description="null: 10%, or more on a small table so the evaluation can score it"
    )
    split_seed: int = 0

    @property
    def holdout_share(self) -> float:
        """The holdout's share of rows: `holdout_fraction`, or 10% where it is left to training to choose."""
        return DEFAULT_HOLDOUT_FRACTION if self.holdout_fraction is None else self.holdout_fraction

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        _refuse_secrets(value, "")
        return value

    @property
    def dropped_columns(self) -> list[str]:
        """`drop_columns` and the columns whose `column_kinds` entry is `drop`: left out of everything."""
        return [*self.drop_columns, *(name for name, kind in self.column_kinds.items() if kind == "drop")]


def _refuse_secrets(options: dict[str, Any], prefix: str) -> None:
    """Configs are copied into every artifact, so credentials must come from the environment instead."""
    for name, item in options.items():
        dotted = f"{prefix}{name}"
        if isinstance(item, dict):
            _refuse_secrets(item, f"{dotted}.")
        elif any(word in name.lower() for word in _SECRET_WORDS) and item not in _NON_SECRET_VALUES:
            raise ValueError(
                f"storage option '{dotted}' looks like a credential; set it in the environment "
                "(e.g. AWS_SECRET_ACCESS_KEY) or fsspec's config instead, since configs are written into artifacts"
            )


class ModelConfig(_Frozen):
    # auto: `conv` when the table has an image column, else `mlp` (models/registry.py).
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    latent_dim: int = Field(16, ge=1)
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 256])
    conditional: bool = Field(False, description="condition encoder and decoder on the label column (a CVAE)")
    # The conv VAE: output channels of each stride-2 encoder block (the decoder mirrors them), and the pixel
    # likelihood. `bernoulli` (BCE on [0, 1] pixels) is the classic choice for digits and clothes;
    # `continuous_bernoulli` (Loaiza-Ganem & Cunningham 2019) is its normalised form for non-binary pixels;
    # `gaussian` has one learned scale per channel.
    conv_channels: list[int] = Field(default_factory=lambda: [32, 64])
    pixel_likelihood: Literal["bernoulli", "continuous_bernoulli", "gaussian"] = "bernoulli"

    @field_validator("conv_channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        if not value or any(width < 1 for width in value):
            raise ValueError("conv_channels needs at least one positive width, e.g. [32, 64]")
        return value

    @field_validator("hidden_dims")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(width < 1 for width in value):
            raise ValueError("hidden_dims needs at least one positive width, e.g. [256, 256]")
        return value


class TrainingConfig(_Frozen):
    epochs: int = Field(30, ge=1)
    batch_size: int | None = Field(
        None, ge=2, description="null: suits the table (training rows / 16, a power of two in 64..1024)"
    )
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    # 0.5 = reconstruction weighted twice the KL, as TVAE's loss_factor=2: with beta=1 the decoder learns to ignore
    # most latent dimensions on small tables and the columns come out nearly independent.
    beta: float = Field(0.5, ge=0, description="weight of the KL term")
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="autocast: auto = bf16 on GPUs that support it, else fp16 with loss scaling; off on CPU"
    )
    seed: int = 0
    run_name: str | None = Field(None, description="checkpoints live under <model_url>/checkpoints/<run_name>")
    keep_best: bool = Field(True, description="the bundle keeps the epoch with the lowest validation loss")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better validation loss"
    )
    executor: ExecutorSetting = Field("auto", description=_EXECUTOR_HELP)
    checkpoint_every_epochs: int | None = Field(
        None, ge=1, description="also checkpoint every this many epochs (always at the end, with the best epoch)"
    )
    checkpoint_interval_s: float = Field(
        60.0, ge=0, description="checkpoint when this long has passed since the last one (0: every epoch)"
    )


class FlowPriorSettings(_Frozen):
    """How the statistics step trains the flow prior (samplers/flow.py)."""

    conditional: bool = Field(False, description="condition on the label (needs data.label_column)")
    transforms: int = Field(3, ge=1)
    hidden: int = Field(64, ge=4)
    epochs: int = Field(60, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=8)


class DiffusionPriorSettings(_Frozen):
    """How the statistics step trains the latent diffusion prior (samplers/diffusion.py)."""

    conditional: bool = Field(False, description="condition on the label (needs data.label_column)")
    steps: int = Field(20, ge=1, description="solver steps when sampling (a sampler's `steps` overrides it)")
    solver: Literal["dpm-solver++", "heun"] = Field(
        "dpm-solver++",
        description="DPM-Solver++(2M), or EDM's Heun sampler (TabSyn's); a sampler's `solver` overrides it",
    )
    hidden: int = Field(256, ge=8)
    epochs: int = Field(60, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=8)


class PriorsConfig(_Frozen):
    """Learned priors the statistics step trains on the reservoir and stores beside the statistics (null: none)."""

    flow: FlowPriorSettings | None = FlowPriorSettings()
    diffusion: DiffusionPriorSettings | None = DiffusionPriorSettings()
    seed: int = 0
    use_gpu: bool = Field(
        False,
        description="train the priors on a GPU: this process's when the statistics run here, else a Ray task's each",
    )

    def requested(self) -> list[str]:
        """The learned priors to train, by sampler name."""
        return [name for name in ("flow", "diffusion") if getattr(self, name) is not None]

    @property
    def needs_gpu(self) -> bool:
        """Whether training them needs a GPU: `use_gpu` with at least one prior to train."""
        return self.use_gpu and bool(self.requested())


class StatisticsConfig(_Frozen):
    reservoir_size: int = Field(10_000, ge=10)
    gmm_max_components: int = Field(10, ge=1)
    hole_draws: int = Field(4_000, ge=100)
    hole_quantile: float = Field(0.01, gt=0, lt=0.5)
    batch_rows: int = Field(8_192, ge=1)
    num_workers: int = Field(1, ge=1)
    executor: ExecutorSetting = Field("auto", description=_EXECUTOR_HELP)
    seed: int = 0
    priors: PriorsConfig = PriorsConfig()


class _SamplerBase(_Frozen):
    temperature: float = Field(1.0, gt=0, description="scales the spread around the sampler's centre")


class AutoSamplerConfig(_SamplerBase):
    name: Literal["auto"] = Field("auto", description="the evaluation's best sampler that passes the privacy guard")


class PriorSamplerConfig(_SamplerBase):
    name: Literal["prior"] = "prior"


class GaussianSamplerConfig(_SamplerBase):
    name: Literal["gaussian"] = "gaussian"
    diagonal: bool = Field(False, description="drop the off-diagonal covariance")


class GMMSamplerConfig(_SamplerBase):
    name: Literal["gmm"] = "gmm"


class EmpiricalSamplerConfig(_SamplerBase):
    name: Literal["empirical"] = "empirical"


class ConditionalSamplerConfig(_SamplerBase):
    name: Literal["conditional"] = "conditional"
    classes: dict[str, float] | None = Field(
        None, description="label value -> share of rows; default the training shares"
    )


class FlowSamplerConfig(_SamplerBase):
    """The normalizing-flow prior trained by the statistics step (its training settings: statistics.priors.flow)."""

    name: Literal["flow"] = "flow"


class DiffusionSamplerConfig(_SamplerBase):
    """The latent diffusion prior trained by the statistics step (statistics.priors.diffusion)."""

    name: Literal["diffusion"] = "diffusion"
    steps: int | None = Field(None, ge=1, description="solver steps of the sampler; null: the trained default")
    solver: Literal["dpm-solver++", "heun"] | None = Field(None, description="null: the trained default")


# One model per sampler, told apart by `name`: each sampler's options are validated on their own.
SamplerConfig = Annotated[
    AutoSamplerConfig
    | PriorSamplerConfig
    | GaussianSamplerConfig
    | GMMSamplerConfig
    | EmpiricalSamplerConfig
    | ConditionalSamplerConfig
    | FlowSamplerConfig
    | DiffusionSamplerConfig,
    Field(discriminator="name"),
]
_SAMPLER_ADAPTER: TypeAdapter[SamplerConfig] = TypeAdapter(SamplerConfig)
# The one flat sampler config of earlier versions: its options and their defaults, and which sampler owns each.
_FLAT_SAMPLER_DEFAULTS: dict[str, Any] = {"diagonal": False, "classes": None}
_SAMPLER_OPTIONS = {"gaussian": "diagonal", "conditional": "classes"}


def sampler_config(name: str = "auto", **options: Any) -> SamplerConfig:
    """The sampler config for `name` with its options, e.g. `sampler_config("gaussian", diagonal=True)`."""
    return parse_sampler({"name": name, **options})


def parse_sampler(data: Any) -> SamplerConfig:
    """Validate a sampler mapping (from a report, a manifest, an actor's arguments); errors name the option."""
    try:
        return _SAMPLER_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(f"sampler {data!r}: {_first_problem(exc)}") from None


class EvaluationConfig(_Frozen):
    """Which sampler? Scores every sampler against real rows the model never trained on."""

    rows: int = Field(2_000, ge=20, description="synthetic rows per sampler, and the most real rows scored")
    temperatures: list[float] = Field(default_factory=lambda: [0.8], description="extra temperatures tried")
    min_holdout_rows: int = Field(15, ge=10, description="fewer holdout rows than this cannot be scored")
    min_class_rows: int = Field(10, ge=2, description="a class with fewer holdout or training rows is not scored")
    privacy_margin: float = Field(0.1, ge=0, lt=1, description="refuse if DCR ratio < 1 - margin")
    max_copy_excess: float = Field(0.01, ge=0, le=1, description="refuse if copies exceed the natural rate by more")
    seed: int = 0

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError("temperatures must be positive, e.g. [0.8]")
        return value


class GenerationConfig(_Frozen):
    rows: int = Field(10_000, ge=1)
    rows_per_shard: int = Field(50_000, ge=1)
    output_url: Location = "out/synthetic"
    seed: int = 0
    num_workers: int = Field(2, ge=1)
    executor: ExecutorSetting = Field(
        "auto", description="auto: in this process when the run is one shard and no cluster is set; else Ray actors"
    )
    batch_rows: int = Field(4_096, ge=1, description="rows decoded per forward pass")
    overwrite: bool = False
    resume: bool = Field(False, description="finish an interrupted run: redo only missing or damaged shards")
    max_shard_retries: int = Field(3, ge=0, description="times a shard is retried after its worker process dies")
    use_gpu: bool = Field(False, description="one GPU per worker; decodes gpu_batch_rows rows per forward pass")
    gpu_batch_rows: int = Field(65_536, ge=1, description="rows decoded per forward pass on a GPU")
    privacy_guard: bool = Field(True, description="refuse samplers whose rows sit closer to training rows than real")

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"

    @property
    def decode_batch_rows(self) -> int:
        """Rows per forward pass on the device the workers use."""
        return self.gpu_batch_rows if self.use_gpu else self.batch_rows


class AugmentConfig(_Frozen):
    """Class-balanced augmentation (`vae-pipeline augment`): the dataset written is the real rows plus, per class,
    the synthetic rows that reach `target`, drawn class by class in exact numbers."""

    enabled: bool = Field(False, description="write an augmented dataset instead of synthetic rows alone")
    target: str = Field("balance", description="balance, ratio:R, or CLASS=N,... (total rows per class)")
    provenance_column: str = Field("synthetic", min_length=1, description="boolean column: True on synthetic rows")
    synthetic_only: bool = Field(False, description="write only the synthetic rows (still with per-class counts)")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        from vae_pipeline.augment.targets import parse_target  # the parser lives with the augmentation code

        try:
            parse_target(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class RayConfig(_Frozen):
    address: str = Field("", description="empty: start a local instance")
    num_cpus: int | None = Field(None, ge=1, description="local instance only")
    gpu_wait_s: float = Field(
        0.0, ge=0, description="use_gpu on an autoscaling cluster: ask for GPU nodes and wait this long for them"
    )


class PipelineConfig(_Frozen):
    """The whole pipeline: one YAML file."""

    model_url: Location = "out/model"
    # Sections are frozen, so one shared default instance per section is safe.
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    statistics: StatisticsConfig = StatisticsConfig()
    sampler: SamplerConfig = AutoSamplerConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    generation: GenerationConfig = GenerationConfig()
    augment: AugmentConfig = AugmentConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="before")
    @classmethod
    def _flat_sampler(cls, data: Any) -> Any:
        """Configs stored before samplers had one model each (in bundles, manifests) carry every sampler's options
        at their defaults; those that do not belong to the named sampler are dropped, any other value still fails."""
        sampler = data.get("sampler") if isinstance(data, dict) else None
        if isinstance(sampler, dict):
            name = sampler.get("name", "auto")
            stale = {
                key
                for key, default in _FLAT_SAMPLER_DEFAULTS.items()
                if key in sampler and sampler[key] == default and _SAMPLER_OPTIONS.get(name) != key
            }
            if stale:
                data = {**data, "sampler": {k: v for k, v in sampler.items() if k not in stale}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.model.conditional and not self.data.label_column:
            raise ValueError("model.conditional needs data.label_column; set the label column or conditional: false")
        if self.sampler.name == "conditional" and not self.data.label_column:
            raise ValueError("sampler 'conditional' needs data.label_column; set it or pick another sampler")
        for name, prior in (("flow", self.statistics.priors.flow), ("diffusion", self.statistics.priors.diffusion)):
            if prior is None and self.sampler.name == name:
                raise ValueError(
                    f"sampler {name!r} needs its prior trained, but statistics.priors.{name} is null; "
                    "set its settings or pick another sampler"
                )
            if prior is not None and prior.conditional and not self.data.label_column:
                raise ValueError(
                    f"statistics.priors.{name}.conditional needs data.label_column; set the label or conditional: false"
                )
        if self.augment.enabled and not self.data.label_column:
            raise ValueError("augment needs the label to balance; pass --label COLUMN (data.label_column)")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> PipelineConfig:
        """A copy with dotted keys replaced, e.g. {"training.epochs": 5}; validated like the file."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown key '{dotted}'; check it against the config reference in README.md")
                node = node[part]
            node[leaf] = value
        return parse_config(data, source="overrides")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_config(data: Any, source: str = "config") -> PipelineConfig:
    """Validate a mapping; the error names the first bad key and what was wrong with it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, model, training, ...)")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc[:1] == ["sampler"] and len(loc) > 2:
        del loc[1]  # the union's tag (the sampler's name): `sampler.diagonal`, not `sampler.gmm.diagonal`
    key = ".".join(loc)
    if error["type"] == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        return f"key '{key}.name': {error['input'].get('name')!r} is not a sampler; choose one of {expected}"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'; remove it or check its spelling against the config reference in README.md"
    message = error["msg"].removeprefix("Value error, ")
    if not key:
        return message
    return f"key '{key}': {message} (got {error.get('input')!r})"


def load_config(url: str) -> PipelineConfig:
    """Read and validate a YAML config from any URL."""
    text = storage.read_bytes(url).decode()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{url} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_config(data, source=url)
