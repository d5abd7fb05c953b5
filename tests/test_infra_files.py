"""Deployment files that cannot be run here (no helm, no Docker) are still checked for what can be
checked: the Helm values against our schema of the chart's keys, the GPU run tags through the
dagster-k8s parser the K8s run launcher uses, the compose file's structure and that every
variable it reads is documented, and the Dockerfiles' pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import yaml

from anomaly_pipeline import settings

INFRA = Path(__file__).resolve().parent.parent / "infra"


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def test_helm_values_match_our_schema_of_the_chart():
    schema = json.loads((INFRA / "helm" / "values.schema.ours.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    values = _yaml(INFRA / "helm" / "values.yaml")
    jsonschema.Draft202012Validator(schema).validate(values)
    # The schema bites: a wrong launcher or a password written into the values is rejected.
    broken = json.loads(json.dumps(values))
    broken["runLauncher"]["type"] = "DefaultRunLauncher"
    broken["postgresql"]["postgresqlPassword"] = "hunter2"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
    assert {e.path[0] for e in errors} == {"runLauncher", "postgresql"}


def test_helm_values_and_instance_agree_on_the_gpu_pool():
    values = _yaml(INFRA / "helm" / "values.yaml")
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    instance = _yaml(INFRA / "production" / "dagster.yaml")
    gpu = {"key": "compute", "value": "gpu-preferred"}
    helm_limit = next(x["limit"] for x in limits if {k: x.get(k) for k in gpu} == gpu)
    yaml_limit = next(x["limit"] for x in instance["concurrency"]["runs"]["tag_concurrency_limits"]
                      if {k: x.get(k) for k in gpu} == gpu)
    assert helm_limit == yaml_limit >= 1
    from sensors.jobs import retrain_job

    assert retrain_job.tags.get("compute") == "gpu-preferred", "the GPU pool limits runs by this tag"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert {"name": "ANOMALY_PIPELINE_ENV", "value": "production"} in deployment["env"]


def test_gpu_run_tags_parse_with_dagster_k8s_and_request_a_gpu():
    dagster_k8s_job = pytest.importorskip("dagster_k8s.job", reason="dagster-k8s is in the dev extra")

    @dg.asset
    def probe() -> int:
        return 1

    job = dg.define_asset_job("gpu_probe", tags={"compute": "gpu-preferred", **settings.GPU_RUN_TAGS})
    run_tags = dg.Definitions(assets=[probe], jobs=[job]).resolve_job_def("gpu_probe").run_tags
    k8s = dagster_k8s_job.get_user_defined_k8s_config(run_tags)
    assert k8s.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert k8s.pod_spec_config["node_selector"] == {"anomaly-pipeline/node-pool": "gpu"}
    assert any(t["key"] == "nvidia.com/gpu" for t in k8s.pod_spec_config["tolerations"])
    # The Helm values send CPU runs to the CPU pool with the same label key, so the tag overrides it.
    launcher = _yaml(INFRA / "helm" / "values.yaml")["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher["runK8sConfig"]["podSpecConfig"]["nodeSelector"]) == {"anomaly-pipeline/node-pool"}


def _compose_variables(text: str) -> set[str]:
    """Names in ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``; ``$$`` is a literal dollar."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def test_compose_has_every_service_and_reads_only_documented_variables():
    text = (INFRA / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    # The Compose Specification schema (vendored from the docker-compose wheel; no Docker client here).
    spec = json.loads((INFRA / "compose" / "compose_spec.json").read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(spec).iter_errors(compose)]
    assert not errors, errors
    typo = json.loads(json.dumps(compose))
    typo["services"]["mlflow"]["imagee"] = typo["services"]["mlflow"].pop("image")
    assert any("imagee" in e.message for e in jsonschema.Draft7Validator(spec).iter_errors(typo))
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "code-location", "dagster-webserver", "dagster-daemon"} <= set(services)
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (INFRA / "README.md").read_text()))
    used = _compose_variables(text)
    assert used, "compose reads its secrets from the environment"
    assert used <= documented, f"undocumented in infra/README.md: {sorted(used - documented)}"
    for name, service in services.items():
        env = service.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else []):
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    # The containers get the same production switch and instance file the tests run against.
    assert services["code-location"]["environment"]["ANOMALY_PIPELINE_ENV"] == "production"
    mounts = services["dagster-daemon"]["volumes"]
    assert any(m.startswith("./production/dagster.yaml:") for m in mounts)
    for rel in ("compose/initdb", "production/workspace.yaml", "compose/empty"):
        assert (INFRA / rel).exists(), rel


def test_dockerfiles_pin_torch_first_and_serve_the_code_location():
    for name, index in (("Dockerfile.cpu", "whl/cpu"), ("Dockerfile.cuda", "whl/cu")):
        text = (INFRA / "docker" / name).read_text()
        torch_line = text.index('"torch==2.13.0"')
        assert index in text[text.rfind("\n", 0, torch_line - 200):torch_line]
        assert torch_line < text.index('pip install ".[k8s]"'), "torch must be installed before the project"
        assert "dagster\", \"api\", \"grpc\"" in text and "USER pipeline" in text
    assert (INFRA / "docker" / "Dockerfile.cuda").read_text().startswith("#")
    assert "FROM nvidia/cuda:" in (INFRA / "docker" / "Dockerfile.cuda").read_text()


def _postgres_installed() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.mark.skipif(not _postgres_installed(), reason="PostgreSQL is not installed (.ci/run installs it)")
def test_ci_script_starts_postgres_once_and_reuses_it():
    import psycopg

    script = INFRA / "ci" / "start_postgres.sh"
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    pg_dir = Path(tempfile.mkdtemp(prefix="anomaly-pipeline-pg-test-"))
    pg_dir.chmod(0o755)
    env = {**os.environ, "PG_CI_DIR": str(pg_dir)}
    try:
        first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        second = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert first.stdout == second.stdout and "starting PostgreSQL" not in second.stderr
        url = first.stdout.strip().removeprefix("export ANOMALY_PIPELINE_TEST_POSTGRES_URL=")
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("anomaly_pipeline_test",)
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_compose_publishes_the_unauthenticated_uis_on_loopback_by_default():
    services = yaml.safe_load((INFRA / "compose.yaml").read_text())["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published, "the UIs are published"
    for port in published:
        assert str(port).startswith("${ANOMALY_PIPELINE_BIND:-127.0.0.1}:"), port


def _snake(config: dict) -> dict:
    keys = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
            "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
            "jobMetadata": "job_metadata"}
    return {keys.get(k, k): v for k, v in config.items()}


def test_run_pods_get_the_resources_their_job_asks_for():
    """The merge dagster-k8s does for a launched run (K8sContainerContext.create_for_run): the
    launcher's config, then the code location's (only when includeConfigInLaunchedRuns is on), then
    the run's tags. Retraining gets the GPU tags' resources; other runs the launcher's."""
    container_context = pytest.importorskip("dagster_k8s.container_context", reason="dagster-k8s is in the dev extra")
    dagster_k8s_job = pytest.importorskip("dagster_k8s.job")
    from sensors.jobs import daily_scoring_job, retrain_job

    values = _yaml(INFRA / "helm" / "values.yaml")
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is False, \
        "the code server's small resources must not reach run pods"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    base = container_context.K8sContainerContext(
        run_k8s_config=dagster_k8s_job.UserDefinedDagsterK8sConfig.from_dict(_snake(launcher["runK8sConfig"])))

    def rendered(tags: dict) -> dict:
        user = container_context.K8sContainerContext(run_k8s_config=dagster_k8s_job.get_user_defined_k8s_config(tags))
        return base.merge(user).run_k8s_config.container_config["resources"]

    assert rendered(dict(retrain_job.tags)) == settings.GPU_RUN_TAGS["dagster-k8s/config"]["container_config"]["resources"]
    assert rendered(dict(retrain_job.tags))["requests"]["memory"] == "16Gi"
    assert rendered(dict(daily_scoring_job.tags or {})) == launcher["runK8sConfig"]["containerConfig"]["resources"]
    # What the issue saw: the code server's config in every run replaces the launcher's resources.
    server = container_context.K8sContainerContext(run_k8s_config=dagster_k8s_job.UserDefinedDagsterK8sConfig.from_dict(
        {"container_config": {"resources": deployment["resources"]}}))
    assert base.merge(server).run_k8s_config.container_config["resources"] == deployment["resources"]
