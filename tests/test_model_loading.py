"""Loading a registered model runs no code from the artifact, and tampered weights are refused.

A real sqlite MLflow store and artifact folder; the model is an untrained hybrid detector (its
weights are random but real tensors, which is all loading needs). Each tampering test edits the
artifact store on disk the way someone with write access to it could, and checks that the load
refuses (or ignores the file) and that the planted code never ran: every planted file writes a
marker file when executed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from anomaly_pipeline import registry
from anomaly_pipeline.detectors import WEIGHTS_FILE, HybridDetector
from anomaly_pipeline.graph import WindowConfig
from anomaly_pipeline.mlflow_model import load_pyfunc, log_hybrid_model
from anomaly_pipeline.models.hybrid import HybridConfig, HybridGNNLSTM
from anomaly_pipeline.project_wheel import WHEELHOUSE_ENV
from anomaly_pipeline.pyfunc_loader import DIGEST_TAG, LOADER_MODULE, ModelIntegrityError

WINDOW = WindowConfig(stride_hours=1.0, window_hours=2.0, history=3, coarse_stride_hours=None)


def _detector(tmp_path: Path) -> Path:
    detector = HybridDetector(HybridConfig(hidden=16, multi_scale=False))
    torch.manual_seed(0)
    detector.model = HybridGNNLSTM(detector.model_config)
    detector.threshold_ = 0.5
    return detector.save(tmp_path / "detector")


@pytest.fixture
def registered(tmp_path: Path) -> tuple[registry.RegistryConfig, str, Path]:
    """A version registered and made champion as the pipeline does; its model folder on disk."""
    config = registry.RegistryConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
        experiment="model-loading",
        model_name="hybrid-under-test",
    )
    client = registry.configure(config)
    with registry.training_run(config, "load-test") as run:
        info, digest = log_hybrid_model(_detector(tmp_path), WINDOW)
    version = registry.register_version(client, config, run.info.run_id, tags={DIGEST_TAG: digest})
    registry.promote(client, config, version.version, gate_passed=True, challenger_score=0.5)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
    assert str(model_dir).startswith(str(tmp_path / "artifacts"))  # the store itself, not a copy
    return config, f"models:/{config.model_name}@champion", model_dir


MARKER = "code_ran.marker"


def _data(model_dir: Path) -> Path:
    """The model's data folder, as its MLmodel names it."""
    return model_dir / yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]["data"]


def _plant(path: Path, marker_dir: Path) -> None:
    """A Python file that leaves a marker when executed or imported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"from pathlib import Path\nPath({str(marker_dir / MARKER)!r}).write_text('ran')\n"
                    "def _load_pyfunc(path):\n    return None\n")  # fmt: skip


def test_the_artifact_holds_no_code_and_names_the_installed_loader(registered, tmp_path: Path) -> None:
    config, uri, model_dir = registered
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == LOADER_MODULE == "anomaly_pipeline.pyfunc_loader"
    assert "code" not in flavor or not flavor["code"]
    assert "python_model" not in flavor and "cloudpickle_version" not in flavor
    assert not list(model_dir.rglob("*.py")) and not list(model_dir.rglob("*.pkl"))
    weights = _data(model_dir) / "detector" / WEIGHTS_FILE
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())["metadata"]["anomaly_pipeline"]
    assert meta["data_sha256"][f"detector/{WEIGHTS_FILE}"] == sha
    version = mlflow.MlflowClient().get_model_version_by_alias(config.model_name, "champion")
    assert version.tags[DIGEST_TAG] == meta["data_digest"]

    loaded, scorer = load_pyfunc(uri)
    assert scorer.window_config == WINDOW
    assert scorer.detector.threshold_ == 0.5
    expected = torch.load(tmp_path / "detector" / WEIGHTS_FILE, weights_only=True)
    for name, tensor in scorer.detector.model.state_dict().items():
        assert torch.equal(tensor, expected[name])
    assert loaded.loader_module == LOADER_MODULE


def test_modified_weights_are_refused(registered) -> None:
    _, uri, model_dir = registered
    weights = _data(model_dir) / "detector" / WEIGHTS_FILE
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1.0
    torch.save(state, weights)
    with pytest.raises(ModelIntegrityError, match=rf"changed \['detector/{WEIGHTS_FILE}'\].*modified after registration"):
        load_pyfunc(uri)
    # MLflow's own loader runs the same check through the installed loader module.
    with pytest.raises(ModelIntegrityError, match="does not match the SHA-256 recorded in its MLmodel"):
        mlflow.pyfunc.load_model(str(model_dir))


def test_weights_and_mlmodel_rewritten_together_are_refused_by_the_registry_tag(registered) -> None:
    _, uri, model_dir = registered
    weights = _data(model_dir) / "detector" / WEIGHTS_FILE
    state = torch.load(weights, weights_only=True)
    torch.save({k: v * 0 for k, v in state.items()}, weights)
    mlmodel = model_dir / "MLmodel"
    text = yaml.safe_load(mlmodel.read_text())
    text["metadata"]["anomaly_pipeline"]["data_sha256"][f"detector/{WEIGHTS_FILE}"] = hashlib.sha256(
        weights.read_bytes()
    ).hexdigest()
    mlmodel.write_text(yaml.safe_dump(text))
    with pytest.raises(ModelIntegrityError, match=f"differs from the {DIGEST_TAG} tag recorded in the registry"):
        load_pyfunc(uri)


def test_a_python_file_dropped_into_the_artifact_never_runs(registered, tmp_path: Path) -> None:
    _, uri, model_dir = registered
    for where in ("evil.py", "code/evil.py", "code/anomaly_pipeline/__init__.py", "python_model.py"):
        _plant(model_dir / where, tmp_path)
    _, scorer = load_pyfunc(uri)  # files outside the data folder are ignored
    assert scorer.detector.threshold_ == 0.5
    assert not (tmp_path / MARKER).exists()
    # Inside the data folder a new file is refused: the data must be exactly what was hashed.
    _plant(_data(model_dir) / "detector" / "evil.py", tmp_path)
    with pytest.raises(ModelIntegrityError, match=r"unexpected \['detector/evil.py'\]"):
        load_pyfunc(uri)
    assert not (tmp_path / MARKER).exists()


def test_an_mlmodel_pointed_at_artifact_code_is_refused_before_anything_is_imported(registered, tmp_path: Path) -> None:
    _, uri, model_dir = registered
    _plant(model_dir / "code" / "evil_loader.py", tmp_path)
    mlmodel = model_dir / "MLmodel"
    text = yaml.safe_load(mlmodel.read_text())
    text["flavors"]["python_function"].update(loader_module="evil_loader", code="code")
    mlmodel.write_text(yaml.safe_dump(text))
    with pytest.raises(ModelIntegrityError, match="its loader is 'evil_loader'.*asks for code from the artifact"):
        load_pyfunc(uri)
    assert not (tmp_path / MARKER).exists()


def test_a_model_logged_from_code_is_refused_without_running_it(tmp_path: Path) -> None:
    """What main registered before: ``python_model=<file>`` copies the file into the artifact and
    MLflow executes it on every load."""
    config = registry.RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     artifact_location=str(tmp_path / "artifacts"), experiment="legacy",
                                     model_name="legacy-hybrid")  # fmt: skip
    client = registry.configure(config)
    code = tmp_path / "model_code.py"
    code.write_text(
        "import mlflow\nfrom mlflow.pyfunc import PythonModel\n"
        "class M(PythonModel):\n    def predict(self, context, model_input, params=None):\n        return model_input\n"
        "mlflow.models.set_model(M())\n"
    )
    with registry.training_run(config, "legacy") as run:
        mlflow.pyfunc.log_model(name="model", python_model=str(code), pip_requirements=["mlflow"])
    version = registry.register_version(client, config, run.info.run_id)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source))
    [stored] = [p for p in model_dir.rglob("*.py")]
    _plant(stored, tmp_path)  # the artifact's copy now leaves a marker when executed
    with pytest.raises(ModelIntegrityError, match="holds a python_model"):
        load_pyfunc(f"models:/{config.model_name}/{version.version}")
    assert not (tmp_path / MARKER).exists()


def test_registering_the_same_run_again_keeps_the_digest(registered) -> None:
    config, _, _ = registered
    client = registry.configure(config)
    first = client.get_model_version(config.model_name, "1")
    again = registry.register_version(client, config, first.run_id)  # no tags given
    assert client.get_model_version(config.model_name, again.version).tags[DIGEST_TAG] == first.tags[DIGEST_TAG]
    _, scorer = load_pyfunc(f"models:/{config.model_name}/{again.version}")
    assert scorer.detector.threshold_ == 0.5


def _pip(requirements: Path, wheelhouse: Path | None, target: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != WHEELHOUSE_ENV}
    if wheelhouse is not None:
        env[WHEELHOUSE_ENV] = str(wheelhouse)
    return subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                           "--target", str(target), "-r", str(requirements)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_logged_requirements_are_pinned_and_name_the_project_only_by_its_wheels_hash(tmp_path: Path) -> None:
    """Issue 13: the requirements named `anomaly-pipeline` unpinned, and that name is not on PyPI."""
    wheelhouse = tmp_path / "wheels"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run():
        info, _ = log_hybrid_model(_detector(tmp_path), WINDOW, wheelhouse=wheelhouse)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
    lines = [x for x in (model_dir / "requirements.txt").read_text().splitlines() if x.strip()]
    project, pins = lines[0], lines[1:]
    for pin in pins:  # every other requirement: exactly the installed version
        name, _, version = pin.partition("==")
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?", name) and version, pin
        assert importlib.metadata.version(name.split("[")[0]) == version, pin
    assert {"torch", "torch-geometric", "numpy", "pandas", "mlflow", "scikit-learn"} <= {
        p.split("==")[0] for p in pins}
    # The project: a direct reference to a wheel by SHA-256, never a name an index could answer.
    assert not any(x.split(";")[0].strip() in ("anomaly-pipeline", "anomaly_pipeline") or
                   re.match(r"anomaly[-_]pipeline\s*(==|>=|~=|<)", x) for x in lines)
    match = re.fullmatch(r"anomaly-pipeline @ file://\$\{ANOMALY_PIPELINE_WHEELHOUSE\}/(\w{16})/"
                         r"(anomaly_pipeline-[\w.]+-py3-none-any\.whl)#sha256=(\w{64})", project)
    assert match, project
    wheel = wheelhouse / match[1] / match[2]
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == match[3]
    assert "/wheels/" not in str(model_dir) and not list(model_dir.rglob("*.whl"))  # not in the artifact store
    metadata = yaml.safe_load((model_dir / "MLmodel").read_text())["metadata"]["project_wheel"]
    assert metadata["sha256"] == match[3] and metadata["requirement"] == project

    only_project = tmp_path / "project.txt"
    only_project.write_text(project + "\n")
    installed = _pip(only_project, wheelhouse, tmp_path / "env")
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "env" / "anomaly_pipeline" / "pyfunc_loader.py").exists()
    assert _pip(only_project, None, tmp_path / "env2").returncode != 0  # no wheelhouse: no guessing
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # a swapped wheel
    refused = _pip(only_project, wheelhouse, tmp_path / "env3")
    assert refused.returncode != 0 and "do not match" in refused.stderr.lower().replace("\n", " ")
