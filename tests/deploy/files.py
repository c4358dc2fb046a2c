"""Reading the deployment files (deploy/, prefect.yaml, .dockerignore) for the tests in this folder."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import typer
import yaml

from vae_pipeline import cli

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
README = DEPLOY / "README.md"
WORK_POOL = DEPLOY / "prefect" / "kubernetes-work-pool.json"
CONFIGS = DEPLOY / "configs"
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "SAS", "CONNECTION_STRING")
PLACEHOLDER = re.compile(r"{{\s*([\w.\-$]+)\s*}}")


# ------------------------------------------------------------------ reading the files


def documents(path: Path) -> list[Any]:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(DEPLOY.glob("kuberay/*.yaml")) for doc in documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/kuberay, found {len(found)}"
    return found[0]


def prefect_deployments() -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in documents(REPO / "prefect.yaml")[0]["deployments"]}


def work_pool() -> dict[str, Any]:
    return json.loads(WORK_POOL.read_text())


def pin(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def console_script() -> str:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return next(name for name, target in scripts.items() if target == "vae_pipeline.cli:main")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            instructions.append((instruction, args.strip()))
    return instructions


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (its plain patterns, no `!` exceptions)."""
    lines = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()]
    globs = [line.removeprefix("**/") for line in lines if line and not line.startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, glob) or fnmatch.fnmatch(part, glob)
        for prefix, part in zip(prefixes, parts, strict=True)
        for glob in globs
    )


def app_dir() -> Path:
    return Path(next(args for instruction, args in dockerfile() if instruction == "WORKDIR"))


def groups(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["groupName"]: group for group in cluster_spec["workerGroupSpecs"]}


def containers(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for container in cluster_spec["headGroupSpec"]["template"]["spec"]["containers"]:
        yield "head", container
    for name, group in groups(cluster_spec).items():
        for container in group["template"]["spec"]["containers"]:
            yield name, container


def pool_container() -> dict[str, Any]:
    return work_pool()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]


def built_images(text: str) -> dict[str, str]:
    """{VARIANT: image tag} of every `docker build` command in a text."""
    images = {}
    for line in text.splitlines():
        if "docker build" in line:
            variant = re.search(r"VARIANT=(\w+)", line)
            tag = re.search(r"-t\s+(\S+)", line)
            assert variant and tag, f"a docker build command without VARIANT or -t: {line.strip()}"
            images[variant.group(1)] = tag.group(1)
    return images


def repo_path(path: str) -> Path:
    """A path the deployment files name, in the repository: image paths live under the Dockerfile's WORKDIR."""
    if path.startswith("/"):
        return REPO / Path(path).relative_to(app_dir())
    return REPO / path


def parse_command(argv: list[str]) -> click.Context:
    """Parse a `vae-pipeline ...` command line the way the CLI would, without running it."""
    assert argv[0] == console_script(), f"{argv[0]!r} is not the console script {console_script()!r}"
    commands = typer.main.get_command(cli.app).commands  # type: ignore[attr-defined]
    assert argv[1] in commands, f"{argv[1]!r} is not a vae-pipeline command; the commands are {sorted(commands)}"
    return commands[argv[1]].make_context(argv[1], argv[2:])


def readme_commands() -> list[list[str]]:
    """Every `vae-pipeline ...` command in deploy/README.md's code blocks: at the start of a line, after `--`
    (`ray job submit -- vae-pipeline ...`), and after the image of a `docker run` (whose entrypoint it is)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    found = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        end = next((i for i, arg in enumerate(argv) if arg in {"&&", "||", "|", ";"}), len(argv))
        argv = argv[:end]
        if argv[:2] == ["docker", "run"]:
            image = next(i for i, arg in enumerate(argv) if arg.startswith(f"{console_script()}:"))
            found.append([console_script(), *argv[image + 1 :]])
        elif "--" in argv and argv[argv.index("--") + 1 :][:1] == [console_script()]:
            found.append(argv[argv.index("--") + 1 :])
        elif argv and argv[0].split("/")[-1] == console_script():
            found.append([console_script(), *argv[1:]])
    return found


def deploy_files() -> list[Path]:
    """Every YAML and JSON file under deploy/, and prefect.yaml."""
    found = [path for path in DEPLOY.rglob("*") if path.suffix in {".yaml", ".yml", ".json"}]
    return sorted([*found, REPO / "prefect.yaml"])
