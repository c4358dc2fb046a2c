"""The deployment files agree with each other and with the code: KubeRay manifests, cluster configs, the image.

Fast and offline (no Docker, no cluster). They catch what a typo would otherwise break only on a cluster: a
manifest that does not parse or lacks a field KubeRay needs, an image, namespace or config path that differs between
files, a Ray or torch version that differs from the pins, a `vae-pipeline` command or option that does not exist.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray

from tests.deploy.files import (
    CONFIGS,
    DEPLOY,
    README,
    REPO,
    SECRET_WORDS,
    app_dir,
    built_images,
    console_script,
    containers,
    deploy_files,
    dockerfile,
    dockerignored,
    documents,
    groups,
    manifest,
    parse_command,
    pin,
    pool_container,
    prefect_deployments,
    readme_commands,
    repo_path,
    work_pool,
)
from vae_pipeline.config import load_config

# ------------------------------------------------------------------ every file parses


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_deploy_file_parses(path: Path) -> None:
    docs = documents(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


# ------------------------------------------------------------------ KubeRay


def test_ray_cluster_has_a_head_a_cpu_and_a_gpu_group() -> None:
    cluster = manifest("RayCluster")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert spec["rayVersion"] == ray.__version__ == pin("ray")
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "0"}
    ports = {port["containerPort"] for port in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001} <= ports
    by_name = groups(spec)
    assert set(by_name) == {"cpu", "gpu"}
    for name, group in by_name.items():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert all(isinstance(value, str) for value in group["rayStartParams"].values()), "KubeRay wants strings"
    gpu_limits = by_name["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu_limits["nvidia.com/gpu"]) >= 1
    assert by_name["gpu"]["minReplicas"] == 0, "GPU pods cost money: none until training asks for them"
    assert any(t["key"] == "nvidia.com/gpu" for t in by_name["gpu"]["template"]["spec"]["tolerations"])
    cpu_limits = by_name["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits


def test_ray_job_submits_over_http_retries_and_cleans_up_the_same_cluster() -> None:
    job, cluster = manifest("RayJob"), manifest("RayCluster")
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1"
    assert spec["submissionMode"] == "HTTPMode"
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"] == cluster["spec"], "rayjob.yaml's cluster drifted from raycluster.yaml"
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]


def test_ray_job_entrypoint_is_a_cli_command_with_a_config_that_loads() -> None:
    argv = shlex.split(manifest("RayJob")["spec"]["entrypoint"])
    context = parse_command(argv)
    assert argv[1] == "run", "the RayJob runs the whole flow"
    assert context.params["resume"] is True, "a retried attempt must finish the generation run, not be refused"
    config = load_config(str(repo_path(context.params["config"])))
    assert config.ray.address == "auto", "the RayJob's driver runs in the cluster"


@pytest.mark.parametrize("argv", readme_commands(), ids=" ".join)
def test_every_vae_pipeline_command_in_the_readme_parses(argv: list[str]) -> None:
    parse_command(argv)


def test_readme_names_only_files_that_exist() -> None:
    """Paths from the root, from deploy/ (links) or in the image (/app/...); URLs (s3://...) are not files."""
    named = re.findall(r"(?<![\w:/.-])(/?[\w.-][\w./-]*\.(?:yaml|json|md)|[\w./-]*Dockerfile)", README.read_text())
    missing = sorted({path for path in named if not (repo_path(path).exists() or (DEPLOY / path).exists())})
    assert not missing, "deploy/README.md names files that exist neither from the root nor from deploy/"


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_configs_load_and_use_shared_storage_and_several_workers(path: Path) -> None:
    config = load_config(str(path))
    for url in (config.data.input_url, config.model_url, config.generation.output_url):
        assert url.startswith("s3://"), f"{url}: every pod must reach it"
    assert config.training.num_workers > 1
    assert config.statistics.num_workers > 1
    assert config.generation.num_workers > 1


def test_cluster_configs_differ_only_where_they_should() -> None:
    cluster = manifest("RayCluster")["metadata"]
    base = load_config(str(CONFIGS / "cluster.yaml"))
    assert base.ray.address == "auto" and not base.training.use_gpu
    head = f"http://{cluster['name']}-head-svc.{cluster['namespace']}.svc.cluster.local:8265"
    expected = {
        "cluster-gpu.yaml": base.with_overrides(
            {
                "training.use_gpu": True,
                "generation.use_gpu": True,
                "generation.num_workers": 4,
                "ray.gpu_wait_s": 900,
            }
        ),
        "cluster-remote.yaml": base.with_overrides({"ray.address": head}),
    }
    for name, config in expected.items():
        assert load_config(str(CONFIGS / name)) == config, name


def test_every_config_path_the_deployments_name_is_in_the_image_and_loads() -> None:
    entrypoint = shlex.split(manifest("RayJob")["spec"]["entrypoint"])
    paths = [entrypoint[entrypoint.index("--config") + 1]]
    paths += [item["parameters"]["config_url"] for item in prefect_deployments().values()]
    copied = [args.split()[-1] for instruction, args in dockerfile() if instruction == "COPY"]
    for path in paths:
        load_config(str(repo_path(path)))
        if path.startswith("/"):
            inside = Path(path).relative_to(app_dir())
            assert any(inside.is_relative_to(Path(dest)) for dest in copied if dest != "./"), path


# ------------------------------------------------------------------ images


def test_images_agree_across_files_and_match_the_documented_builds() -> None:
    images = built_images(README.read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert images == built_images((DEPLOY / "Dockerfile").read_text())
    assert set(images) == {"cpu", "cuda"} and all(f":{version}-" in image for image in images.values())
    for spec in (manifest("RayCluster")["spec"], manifest("RayJob")["spec"]["rayClusterSpec"]):
        for group, container in containers(spec):
            assert container["image"] == images["cuda" if group == "gpu" else "cpu"], group
    assert work_pool()["variables"]["properties"]["image"]["default"] == images["cpu"]
    assert prefect_deployments()["augment-k8s"]["work_pool"]["job_variables"]["image"] == images["cpu"]


def test_dockerfile_installs_the_pinned_torch_and_ray_and_runs_the_console_script() -> None:
    instructions = dockerfile()
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    torch = re.search(r"^TORCH := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert torch and f'"{torch.group(1)}"' in runs, "the same torch as `make install`"
    assert 'pip install -c constraints.txt ".[cloud]"' in runs, "ray and the rest at the versions of constraints.txt"
    assert pin("ray") == ray.__version__
    assert ("ARG", "VARIANT=cpu") in instructions
    assert re.search(r"cpu\) index=\S+/whl/cpu", runs) and re.search(r"cuda\) index=\S+/whl/\$\{TORCH_CUDA\}", runs)
    user = [args for instruction, args in instructions if instruction == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert json.loads(dict(instructions)["ENTRYPOINT"]) == [console_script()]


def test_dockerignore_keeps_out_the_environment_and_keeps_in_what_the_image_copies() -> None:
    for path in (".venv", "out", ".git", "out/demo/model/bundle.json", "vae_pipeline/__pycache__/cli.pyc"):
        assert dockerignored(path), path
    for instruction, args in dockerfile():
        if instruction == "COPY":
            for source in args.split()[:-1]:
                assert not dockerignored(source), f"{source} is copied into the image but .dockerignore drops it"


# ------------------------------------------------------------------ secrets


def test_credentials_come_from_a_secret_never_from_the_files() -> None:
    pods = [container for _, container in containers(manifest("RayCluster")["spec"])]
    pods += [container for _, container in containers(manifest("RayJob")["spec"]["rayClusterSpec"])]
    pods.append(pool_container())
    for container in pods:
        assert {"secretRef": {"name": "vae-pipeline-storage", "optional": True}} in container["envFrom"]
        env = container.get("env")
        for item in env if isinstance(env, list) else []:
            if any(word in item["name"].upper() for word in SECRET_WORDS):
                assert "valueFrom" in item and "value" not in item, item["name"]
    kinds = [doc.get("kind") for path in deploy_files() for doc in documents(path)]
    assert "Secret" not in kinds
