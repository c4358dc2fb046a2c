"""config.py: defaults, YAML loading, errors that name the dotted key, overrides, immutability."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from vae_pipeline.config import (
    DataConfig,
    GenerationConfig,
    ModelConfig,
    PipelineConfig,
    TrainingConfig,
    load_config,
    parse_config,
    sampler_config,
)
from vae_pipeline.errors import ConfigError, StorageError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    config = PipelineConfig()
    assert config.model_url == "out/model"
    assert config.data.input_url == "data/penguins.parquet"
    assert config.data.label_column is None
    assert config.model == ModelConfig(latent_dim=16, hidden_dims=[256, 256], conditional=False)
    assert (config.training.epochs, config.training.batch_size, config.training.seed) == (30, None, 0)
    assert config.training.executor == config.statistics.executor == config.generation.executor == "auto"
    assert config.sampler.name == "auto" and config.sampler.temperature == 1.0
    assert (config.generation.rows, config.generation.rows_per_shard, config.generation.overwrite) == (
        10_000,
        50_000,
        False,
    )
    assert config.ray.address == ""


def test_default_yaml_equals_the_defaults() -> None:
    assert load_config(str(REPO / "configs" / "default.yaml")) == PipelineConfig()


def test_demo_yaml_loads() -> None:
    config = load_config(str(REPO / "configs" / "demo.yaml"))
    assert config.data.label_column == "species"
    assert config.model.latent_dim == 8
    assert config.model.hidden_dims == [128, 128]
    assert config.training.epochs == 100
    assert config.generation.rows == 100_000
    assert config.generation.rows_per_shard == 25_000
    assert config.training.weight_decay == TrainingConfig().weight_decay  # unspecified keys keep their default


def test_load_config_from_yaml(tmp_path: Path) -> None:
    url = _write(tmp_path, "training:\n  epochs: 3\nmodel:\n  hidden_dims: [8]\nsampler:\n  name: gmm\n")
    config = load_config(url)
    assert config.training.epochs == 3
    assert config.model.hidden_dims == [8]
    assert config.sampler.name == "gmm"
    assert config.data == DataConfig()


def test_empty_yaml_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == PipelineConfig()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus: 1\n", "bogus"),
        ("training:\n  epoch: 3\n", "training.epoch"),
        ("data:\n  input_ulr: x.parquet\n", "data.input_ulr"),
        ("generation:\n  rows: 5\n  shards: 2\n", "generation.shards"),
    ],
)
def test_unknown_key_names_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"unknown key '{key}'")):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("training:\n  epochs: ten\n", "training.epochs"),
        ("training:\n  epochs: 0\n", "training.epochs"),
        ("model:\n  hidden_dims: []\n", "model.hidden_dims"),
        ("sampler:\n  name: magic\n", "sampler.name"),
        ("data:\n  validation_fraction: 0.7\n", "data.validation_fraction"),
        ("generation:\n  rows_per_shard: -1\n", "generation.rows_per_shard"),
    ],
)
def test_wrong_value_names_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}'")):
        load_config(_write(tmp_path, text))


def test_wrong_type_message_shows_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "training:\n  epochs: ten\n"))
    assert "'ten'" in str(info.value)
    assert "config.yaml" in str(info.value)  # the source is named


@pytest.mark.parametrize("name", ["key", "aws_secret_access_key", "token", "Password", "account_key", "sas_token"])
def test_secret_storage_option_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="looks like a credential"):
        parse_config({"data": {"storage_options": {name: "x"}}})


def test_harmless_storage_options_are_kept() -> None:
    config = parse_config({"data": {"storage_options": {"anon": True, "endpoint_url": "http://localhost:9000"}}})
    assert config.data.storage_options == {"anon": True, "endpoint_url": "http://localhost:9000"}


def test_conditional_model_needs_a_label() -> None:
    with pytest.raises(ConfigError, match=r"data\.label_column"):
        parse_config({"model": {"conditional": True}})
    config = parse_config({"model": {"conditional": True}, "data": {"label_column": "species"}})
    assert config.model.conditional


def test_conditional_sampler_needs_a_label() -> None:
    with pytest.raises(ConfigError, match=r"data\.label_column"):
        parse_config({"sampler": {"name": "conditional"}})


@pytest.mark.parametrize("text", ["training: [1, 2\n", "a: b: c\n", "\t- x\n"])
def test_invalid_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, text))


def test_with_overrides_dotted_keys_and_none_ignored() -> None:
    base = PipelineConfig()
    changed = base.with_overrides(
        {"training.epochs": 5, "generation.output_url": "memory://x", "model_url": "m", "sampler.name": None}
    )
    assert changed.training.epochs == 5
    assert changed.generation.output_url == "memory://x"
    assert changed.model_url == "m"
    assert changed.sampler.name == "auto"
    assert base.training.epochs == 30  # the original is untouched
    assert changed.with_overrides({}) == changed


def test_with_overrides_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        PipelineConfig().with_overrides({"training.epochs": "ten"})
    with pytest.raises(ConfigError, match=r"unknown key 'training\.epoch'"):
        PipelineConfig().with_overrides({"training.epoch": 3})


@pytest.mark.parametrize(
    ("obj", "attribute", "value"),
    [
        (PipelineConfig(), "model_url", "x"),
        (PipelineConfig().training, "epochs", 1),
        (DataConfig(), "label_column", "species"),
        (sampler_config(), "name", "prior"),
        (GenerationConfig(), "rows", 3),
    ],
)
def test_frozen(obj: pydantic.BaseModel, attribute: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        setattr(obj, attribute, value)


def test_to_json_round_trip() -> None:
    config = parse_config(
        {
            "data": {"label_column": "species", "column_kinds": {"year": "categorical"}},
            "model": {"conditional": True, "latent_dim": 3},
            "sampler": {"name": "conditional", "classes": {"Adelie": 2.0}},
        }
    )
    assert parse_config(config.to_json()) == config


@pytest.mark.parametrize("key", ["trainng.epochs", "training.epochs.x", "model_url.x"])
def test_with_overrides_unknown_dotted_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        PipelineConfig().with_overrides({key: 3})


def test_nested_secret_storage_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="aws_secret_access_key"):
        parse_config({"data": {"storage_options": {"client_kwargs": {"aws_secret_access_key": "x"}}}})


def test_missing_config_file_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"nope\.yaml does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
