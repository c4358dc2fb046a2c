"""The generation device: GPU settings, the draws, and a GPU path that is either real or a clear error.

The CUDA tests run only where torch sees a GPU (never in CI); everything else runs on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.generation.test_worker import Fitted
from vae_pipeline.config import GenerationConfig, sampler_config
from vae_pipeline.errors import ConfigError
from vae_pipeline.generation.job import worker_device
from vae_pipeline.generation.plan import ShardSpec
from vae_pipeline.generation.worker import ShardGenerator
from vae_pipeline.samplers.base import standard_normal, standard_normal_tensor
from vae_pipeline.samplers.registry import build_sampler

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_gpu_decodes_its_own_batch_size() -> None:
    cpu = GenerationConfig(batch_rows=512, gpu_batch_rows=131_072)
    gpu = GenerationConfig(batch_rows=512, gpu_batch_rows=131_072, use_gpu=True)
    assert (cpu.device, cpu.decode_batch_rows) == ("cpu", 512)
    assert (gpu.device, gpu.decode_batch_rows) == ("cuda", 131_072)


def test_standard_normal_draws_are_the_same_as_a_tensor_on_a_cpu() -> None:
    as_array = standard_normal(np.random.default_rng(3), 50, 4)
    as_tensor = standard_normal_tensor(np.random.default_rng(3), 50, 4, "cpu")
    np.testing.assert_array_equal(as_array, as_tensor.numpy())


def test_an_explicit_cpu_device_writes_the_default_bytes(fitted: Fitted) -> None:
    spec = ShardSpec(index=0, rows=300, seed=11)
    sampler = build_sampler(sampler_config(name="gaussian")).fit(fitted.posterior)
    default = ShardGenerator(fitted.bundle, fitted.posterior, sampler, 64).generate(spec)
    explicit = ShardGenerator(fitted.bundle, fitted.posterior, sampler, 64, device="cpu").generate(spec)
    assert explicit.equals(default)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_worker_without_cuda_refuses_use_gpu_instead_of_running_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_device("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # what Ray sets for an actor given a GPU torch cannot use
    with pytest.raises(ConfigError, match=r"this worker sees no CUDA device \(CUDA_VISIBLE_DEVICES='7'\)"):
        worker_device("cuda")


@needs_cuda
@pytest.mark.parametrize("sampler", ["gaussian", "gmm", "conditional"])
def test_a_gpu_shard_is_reproducible_and_in_the_training_schema(
    fitted: Fitted, fitted_conditional: Fitted, sampler: str
) -> None:
    model = fitted_conditional if sampler == "conditional" else fitted
    fitted_sampler = build_sampler(sampler_config(name=sampler)).fit(model.posterior)  # type: ignore[arg-type]
    spec = ShardSpec(index=0, rows=70_000, seed=5)  # two chunks, the second short
    first = ShardGenerator(model.bundle, model.posterior, fitted_sampler, 65_536, device="cuda").generate(spec)
    again = ShardGenerator(model.bundle, model.posterior, fitted_sampler, 65_536, device="cuda").generate(spec)
    assert first.equals(again)
    assert first.num_rows == 70_000
    assert first.schema.names == model.bundle.transform.schema.names
    # The GPU draws its own random streams but the same distribution: category shares close to the CPU's.
    cpu = ShardGenerator(model.bundle, model.posterior, fitted_sampler, 4096).generate(spec)
    for column in ("species", "island"):
        gpu_share = first[column].value_counts().to_pylist()
        cpu_share = cpu[column].value_counts().to_pylist()
        shares = {item["values"]: item["counts"] / 70_000 for item in gpu_share}
        for item in cpu_share:
            assert abs(shares.get(item["values"], 0.0) - item["counts"] / 70_000) < 0.02
