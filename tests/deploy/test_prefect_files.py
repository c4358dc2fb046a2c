"""prefect.yaml and the Kubernetes work pool template: valid for the installed Prefect, and true to the flow.

Offline: the deployments are validated with Prefect's own prefect.yaml model and their entrypoint is loaded, but
nothing is registered (a test against a running server does that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.files import (
    PLACEHOLDER,
    REPO,
    app_dir,
    documents,
    manifest,
    pool_container,
    prefect_deployments,
    work_pool,
)

SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


def test_prefect_yaml_is_valid_for_the_installed_prefect() -> None:
    models = pytest.importorskip("prefect.cli.deploy._models")  # the model `prefect deploy` validates with

    models.PrefectYamlModel.model_validate(documents(REPO / "prefect.yaml")[0])
    pools = {name: item["work_pool"]["name"] for name, item in prefect_deployments().items()}
    assert pools == {"augment": "vae-pipeline-process", "augment-k8s": "vae-pipeline-k8s"}


@pytest.mark.parametrize("name", ["augment", "augment-k8s"])
def test_deployment_runs_the_flow_with_its_own_parameters_on_a_valid_cron(name: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    deployment = prefect_deployments()[name]
    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    assert flow.name == "vae-augment"
    assert set(deployment["parameters"]) <= set(flow.parameters.properties)
    assert deployment["schedules"]
    for schedule in deployment["schedules"]:
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        assert isinstance(schedule["active"], bool)


def test_code_comes_from_the_checkout_or_the_image_never_from_git() -> None:
    deployments = prefect_deployments()
    for name, deployment in deployments.items():
        assert [next(iter(step)) for step in deployment["pull"]] == [SET_WORKING_DIRECTORY], name
    # The process deployment starts its runs in the folder `prefect deploy` ran in: its build step prints it.
    process = deployments["augment"]
    (build,) = process["build"]
    shell = build["prefect.deployments.steps.run_shell_script"]
    assert shell["script"] == "pwd"
    assert process["pull"][0][SET_WORKING_DIRECTORY] == {"directory": f"{{{{ {shell['id']}.stdout }}}}"}
    # The Kubernetes deployment starts them where the image keeps the code.
    assert deployments["augment-k8s"]["pull"][0][SET_WORKING_DIRECTORY] == {"directory": str(app_dir())}


def test_kubernetes_work_pool_extends_prefects_default_template() -> None:
    import prefect

    template = work_pool()
    variables = template["variables"]["properties"]
    views = Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    if views.exists():
        default = json.loads(views.read_text())["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]
        assert set(template["job_configuration"]) == set(default["job_configuration"])
        assert set(default["variables"]["properties"]) <= set(variables)
    used = set(PLACEHOLDER.findall(json.dumps(template["job_configuration"])))
    assert used <= set(variables), f"placeholders without a variable: {sorted(used - set(variables))}"
    container = pool_container()
    # The image's entrypoint is vae-pipeline: the job runs `env <prefect's command>` instead.
    assert container["command"] == ["env"] and container["args"] == "{{ command }}"
    assert variables["namespace"]["default"] == manifest("RayCluster")["metadata"]["namespace"]
    assert set(prefect_deployments()["augment-k8s"]["work_pool"]["job_variables"]) <= set(variables)
