"""The production configuration, run for real: a Dagster instance on PostgreSQL (the file in
infra/production/dagster.yaml), an MLflow tracking server process with a PostgreSQL backend and a
proxied artifact store, and the pipeline's production resources selected by
``ANOMALY_PIPELINE_ENV=production``.

The Postgres tests need a server: ``eval "$(infra/ci/start_postgres.sh)"`` exports
``ANOMALY_PIPELINE_TEST_POSTGRES_URL`` (``.ci/run`` does this before ``make test``). Every module
run creates its own databases and drops them afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from anomaly_pipeline import settings
from anomaly_pipeline.registry import RegistryConfig, aliases_of, register_version, training_run

REPO = Path(__file__).resolve().parent.parent
PG_ENV = "ANOMALY_PIPELINE_TEST_POSTGRES_URL"
TINY_RUN_CONFIG = {
    "ops": {
        "hybrid_model": {"config": {"epochs_per_stage": 1, "hidden": 16}},
        "graph_windows": {"config": {"history": 4}},
        # The plumbing is under test, with a barely trained model: the quality gate is opened
        # (tests/test_quality_gate.py tests that it blocks).
        "model_evaluation": {"config": {"gate_margin": -1.0}},
    }
}
needs_postgres = pytest.mark.skipif(
    not os.environ.get(PG_ENV),
    reason=f"{PG_ENV} is not set: run `eval \"$(infra/ci/start_postgres.sh)\"` first (.ci/run does)",
)


# -- the configuration switch (no services needed) -----------------------------------------------


def test_production_settings_name_what_is_missing():
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI, ANOMALY_PIPELINE_HOME"):
        settings.ProductionSettings.from_env({})
    with pytest.raises(ValueError, match="is a local store"):
        settings.ProductionSettings.from_env(
            {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "ANOMALY_PIPELINE_HOME": "/srv/anomaly"})


def test_production_environment_selects_server_resources(monkeypatch, tmp_path):
    import definitions

    monkeypatch.setenv("ANOMALY_PIPELINE_ENV", "production")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("ANOMALY_PIPELINE_HOME", str(tmp_path / "shared"))
    monkeypatch.setenv("ANOMALY_PIPELINE_STORAGE_DIR", str(tmp_path / "values"))
    monkeypatch.setenv("ANOMALY_PIPELINE_EVENTS_PATH", str(tmp_path / "conn.log"))
    defs = definitions.build_definitions()
    resources = defs.resources
    assert resources["mlflow_resource"].tracking_uri == "http://mlflow.internal:5000"
    assert resources["mlflow_resource"].artifact_location is None  # the server's proxied store
    assert resources["io_manager"].base_dir == str(tmp_path / "values")
    assert resources["event_source"].kind == "file"
    assert defs.resolve_job_def("retrain_job") is not None

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="ANOMALY_PIPELINE_ENV=production needs MLFLOW_TRACKING_URI"):
        definitions.build_definitions()


# -- real PostgreSQL and a real MLflow server ------------------------------------------------------


def _admin_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="module")
def pg_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases on the test server (MLflow and Dagster both keep an alembic_version
    table, so they cannot share one), dropped afterwards."""
    base = os.environ[PG_ENV]
    suffix = uuid.uuid4().hex[:8]
    names = {"dagster": f"dagster_{suffix}", "mlflow": f"mlflow_{suffix}"}
    try:
        admin = _admin_connect(base)
    except Exception as exc:  # a set but unreachable server is a broken CI, not a skip
        pytest.fail(f"{PG_ENV}={base} is set but PostgreSQL does not answer: {exc}")
    with admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(base)
    urls = {key: parsed._replace(path=f"/{name}").geturl() for key, name in names.items()}
    yield urls
    with _admin_connect(base) as admin:
        for name in names.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(pg_databases, tmp_path_factory) -> Iterator[dict[str, object]]:
    """``mlflow server`` with the PostgreSQL backend store and a proxied artifact store (a folder
    here, an S3 bucket in infra/compose.yaml), on a free port; stopped afterwards."""
    artifacts = tmp_path_factory.mktemp("mlflow_artifacts")
    log_path = tmp_path_factory.mktemp("mlflow_log") / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg_databases["mlflow"],
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    previous_uri = mlflow.get_tracking_uri()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not become healthy; its log:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield {"url": url, "artifacts": artifacts}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        mlflow.set_tracking_uri(previous_uri)
        mlflow.set_registry_uri(previous_uri)


@needs_postgres
def test_register_through_the_server_and_read_back_by_alias(mlflow_server):
    from sklearn.linear_model import LinearRegression

    config = RegistryConfig(tracking_uri=mlflow_server["url"], experiment="production-check",
                            model_name="production-check-model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    model = LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=200))
    with training_run(config, "tiny") as run:
        mlflow.log_metric("roc_auc", 0.9)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])  # no env inference
    client = MlflowClient(tracking_uri=mlflow_server["url"])
    info = register_version(client, config, run.info.run_id, tags={"source": "test_production"})
    assert info.version == "1" and "challenger" in info.aliases
    client.set_registered_model_alias(config.model_name, "champion", info.version)

    by_alias = client.get_model_version_by_alias(config.model_name, "champion")
    assert by_alias.version == info.version and by_alias.tags["source"] == "test_production"
    assert set(aliases_of(client, config.model_name, info.version)) == {"challenger", "champion"}
    loaded = mlflow.pyfunc.load_model(f"models:/{config.model_name}@champion")
    np.testing.assert_allclose(loaded.predict(x[:20]), model.predict(x[:20]))
    # The artifacts went through the server into its artifact store, not to a client-side folder.
    assert any(p.name == "MLmodel" for p in Path(mlflow_server["artifacts"]).rglob("MLmodel"))


@needs_postgres
def test_pipeline_materializes_on_postgres_with_the_mlflow_server(pg_databases, mlflow_server, tmp_path, monkeypatch):
    import psycopg

    import definitions
    from assets.resources import EventSourceResource
    from assets.runner import run_full_pipeline

    home = tmp_path / "shared"
    dagster_home = settings.state_paths(home).ensure().dagster_home
    shutil.copyfile(REPO / "infra" / "production" / "dagster.yaml", dagster_home / "dagster.yaml")
    pg = urlparse(pg_databases["dagster"])
    for key, value in {"DAGSTER_PG_HOST": pg.hostname, "DAGSTER_PG_PORT": str(pg.port or 5432),
                       "DAGSTER_PG_DB": pg.path.lstrip("/"), "DAGSTER_PG_USERNAME": pg.username or "postgres",
                       "DAGSTER_PG_PASSWORD": pg.password or ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))  # restored afterwards; the runner sets it
    monkeypatch.setenv("ANOMALY_PIPELINE_ENV", "production")
    monkeypatch.setenv("ANOMALY_PIPELINE_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    resources = definitions.production_resources()
    resources["event_source"] = EventSourceResource(seed=3, n_users=30, n_servers=8, days=5,
                                                    events_per_user_day=40.0)

    summary = run_full_pipeline(str(home), run_config=TINY_RUN_CONFIG, resources=resources)

    assert summary["mlflow_tracking_uri"] == mlflow_server["url"]
    assert summary["model_version"] == "1" and "challenger" in summary["aliases"]
    # The run and its materializations are rows in PostgreSQL, read with plain SQL.
    with psycopg.connect(pg_databases["dagster"]) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_id = %s", (summary["dagster_run_id"],)).fetchone()
        materialized = {row[0] for row in conn.execute(
            "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (summary["dagster_run_id"],))}
    assert status == ("SUCCESS",)
    assert {'["raw_events"]', '["graph_windows"]', '["hybrid_model"]', '["registered_model"]'} <= materialized
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert instance.get_run_by_id(summary["dagster_run_id"]).status == dg.DagsterRunStatus.SUCCESS

    # The registered model is in the server's Postgres store and loads by alias over HTTP.
    with psycopg.connect(pg_databases["mlflow"]) as conn:
        versions = conn.execute("SELECT name, version FROM model_versions").fetchall()
    assert (summary["registered_model"], 1) in versions
    client = MlflowClient(tracking_uri=mlflow_server["url"])
    challenger = client.get_model_version_by_alias(summary["registered_model"], "challenger")
    assert challenger.version == summary["model_version"]
    from anomaly_pipeline.mlflow_model import to_model_input
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

    mlflow.set_tracking_uri(mlflow_server["url"])
    model = mlflow.pyfunc.load_model(f"models:/{summary['registered_model']}@challenger")
    events = generate_events(SyntheticConfig(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0))
    scored = model.predict(to_model_input(events.head(500)))
    assert len(scored) == 500 and scored["score"].notna().all()
