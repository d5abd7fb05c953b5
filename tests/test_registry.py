"""MLflow tracking and registry helpers against a real local store (sqlite + artifact folder, no server)."""

from __future__ import annotations

import dataclasses
import math
import re

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from anomaly_pipeline.registry import (
    RegistryConfig,
    aliases_of,
    configure,
    git_commit,
    list_versions,
    promote,
    register_version,
    training_run,
)

FEATURES = pd.DataFrame({"bytes_out": [1.0, 2.0, 3.0], "bytes_in": [10.0, 20.0, 30.0]})


class ColumnSumModel(mlflow.pyfunc.PythonModel):
    """A stand-in detector: the score is the row sum plus an offset that tells versions apart."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return model_input.sum(axis=1) + self.offset


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RegistryConfig:
    """One sqlite tracking/registry store and artifact folder for the whole module."""
    root = tmp_path_factory.mktemp("mlflow")
    config = RegistryConfig(
        tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}",
        artifact_location=str(root / "mlartifacts"),
        experiment="registry-tests",
    )
    configure(config)
    return config


def _model_config(store: RegistryConfig, model_name: str) -> RegistryConfig:
    """Same store, separate registered model, so each test starts without versions or aliases."""
    return dataclasses.replace(store, model_name=model_name)


def _train(config: RegistryConfig, offset: float, *, run_name: str = "train") -> str:
    """Log a run with params, metrics and a small pyfunc model under name='model'; return the run id."""
    model = ColumnSumModel(offset)
    with training_run(config, run_name, tags={"data_window": "2024-01-01/2024-01-07"}) as run:
        mlflow.log_params({"offset": offset, "hidden_dim": 16})
        mlflow.log_metrics({"average_precision": 0.5 + offset / 100, "train_loss": 0.1})
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(FEATURES, model.predict(None, FEATURES)),
            input_example=FEATURES.head(2),
            pip_requirements=["mlflow", "pandas"],  # skip requirement inference: keeps the test fast
        )
    return run.info.run_id


def test_configure_creates_the_experiment_once_with_the_artifact_folder(store: RegistryConfig) -> None:
    client = configure(store)  # second call: the experiment already exists
    experiment = client.get_experiment_by_name(store.experiment)
    assert experiment is not None
    assert experiment.artifact_location.startswith("file://")
    assert experiment.artifact_location.endswith("/mlartifacts")
    assert len(client.search_experiments(filter_string=f"name = '{store.experiment}'")) == 1
    assert mlflow.get_tracking_uri() == store.tracking_uri


def test_training_run_records_params_metrics_tags_and_the_model(store: RegistryConfig) -> None:
    config = _model_config(store, "run-only")
    run_id = _train(config, offset=1.0, run_name="smoke")
    client = configure(config)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "smoke"
    assert run.data.params["hidden_dim"] == "16"
    assert run.data.metrics["average_precision"] == pytest.approx(0.51)
    assert run.data.tags["data_window"] == "2024-01-01/2024-01-07"
    commit = run.data.tags["git_commit"]
    assert commit == git_commit()
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}", commit)
    # MLflow 3 keeps the model as a LoggedModel under the experiment's artifact folder.
    logged = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string="name = 'model'"
    )
    [model] = [m for m in logged if m.source_run_id == run_id]
    experiment = client.get_experiment(run.info.experiment_id)
    assert model.artifact_location.startswith(experiment.artifact_location)


def test_register_version_moves_challenger_to_the_newest(store: RegistryConfig) -> None:
    config = _model_config(store, "challenger-moves")
    client = configure(config)
    first = register_version(client, config, _train(config, 1.0), tags={"data_window": "w1"})
    assert first.status == "READY"
    assert first.aliases == ["challenger"]
    assert first.model_id is not None and first.source == f"models:/{first.model_id}"

    run_id = _train(config, 2.0)
    second = register_version(client, config, run_id, description="second model")
    assert (first.version, second.version) == ("1", "2")
    assert second.run_id == run_id
    assert aliases_of(client, config.model_name, first.version) == []
    assert aliases_of(client, config.model_name, second.version) == ["challenger"]
    assert client.get_model_version(config.model_name, "1").tags["data_window"] == "w1"
    assert client.get_model_version(config.model_name, "2").description == "second model"
    loaded = mlflow.pyfunc.load_model(f"models:/{config.model_name}@challenger")
    assert loaded.predict(FEATURES).tolist() == [13.0, 24.0, 35.0]


def test_promotion_rules_and_champion_loading(store: RegistryConfig) -> None:
    config = _model_config(store, "promotion")
    client = configure(config)
    name = config.model_name
    versions = [
        register_version(client, config, _train(config, float(offset))).version for offset in (1, 2, 3, 4)
    ]

    first = promote(client, config, versions[0], gate_passed=True, challenger_score=0.60)
    assert first.decision == "promoted" and first.promoted
    assert first.champion_version is None and first.champion_score is None
    assert "no champion" in first.reason
    assert aliases_of(client, name, versions[0]) == ["champion"]

    worse = promote(client, config, versions[1], gate_passed=True, challenger_score=0.55)
    assert worse.decision == "kept_champion" and not worse.promoted
    assert (worse.champion_version, worse.champion_score) == ("1", pytest.approx(0.60))
    assert worse.champion_after == "1"
    assert "0.5500" in worse.reason and "0.6000" in worse.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    failed = promote(client, config, versions[2], gate_passed=False, challenger_score=0.99)
    assert failed.decision == "gate_failed" and not failed.promoted
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    better = promote(client, config, versions[3], gate_passed=True, challenger_score=0.60)  # ties win
    assert better.decision == "promoted" and better.champion_version == "1"
    assert aliases_of(client, name, versions[3]) == ["challenger", "champion"]
    assert aliases_of(client, name, versions[0]) == []

    tags = client.get_model_version(name, versions[1]).tags
    assert tags["eval_average_precision"] == "0.55"
    assert tags["promotion_decision"] == "kept_champion"
    assert tags["compared_to"] == "1"
    assert float(tags["champion_score"]) == pytest.approx(0.60)
    first_tags = client.get_model_version(name, versions[0]).tags
    assert (first_tags["compared_to"], first_tags["champion_score"]) == ("none", "none")

    table = list_versions(client, name)
    assert table["version"].tolist() == [4, 3, 2, 1]
    assert table["decision"].tolist() == ["promoted", "gate_failed", "kept_champion", "promoted"]
    assert table["eval_average_precision"].tolist() == pytest.approx([0.60, 0.99, 0.55, 0.60])
    assert table.loc[table["version"] == 4, "aliases"].item() == ["challenger", "champion"]
    assert table["run_id"].notna().all()

    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert champion.predict(FEATURES).tolist() == [15.0, 26.0, 37.0]  # version 4: offset 4


def test_gate_failure_never_creates_a_champion(store: RegistryConfig) -> None:
    config = _model_config(store, "gate-failed-first")
    client = configure(config)
    version = register_version(client, config, _train(config, 1.0)).version
    decision = promote(client, config, version, gate_passed=False, challenger_score=0.9)
    assert decision.decision == "gate_failed"
    assert decision.champion_after is None
    assert aliases_of(client, config.model_name, version) == ["challenger"]
    assert list_versions(client, config.model_name)["decision"].tolist() == ["gate_failed"]


def test_refusals_say_what_to_do(store: RegistryConfig) -> None:
    config = _model_config(store, "refusals")
    client = configure(config)
    run_id = _train(config, 1.0)
    with pytest.raises(ValueError, match="logged no model named 'detector'"):
        register_version(client, config, run_id, artifact_path="detector")
    version = register_version(client, config, run_id).version
    with pytest.raises(ValueError, match="finite number"):
        promote(client, config, version, gate_passed=True, challenger_score=math.nan)
    with pytest.raises(ValueError, match="no version '99'"):
        promote(client, config, "99", gate_passed=True, challenger_score=0.5)
    assert list_versions(client, "never-registered").empty


def test_git_commit_is_unknown_outside_a_checkout(tmp_path) -> None:
    assert git_commit(cwd=tmp_path) == "unknown"


def test_champion_score_on_the_same_evaluation_data_decides(store: RegistryConfig) -> None:
    config = _model_config(store, "same-data")
    client = configure(config)
    name = config.model_name
    v1, v2, v3 = (register_version(client, config, _train(config, float(o))).version for o in (1, 2, 3))
    promote(client, config, v1, gate_passed=True, challenger_score=0.40)
    # v1's own tag says 0.40, but on v2's test window it scores 0.70: v2's 0.60 must not win.
    worse = promote(client, config, v2, gate_passed=True, challenger_score=0.60, champion_score=0.70)
    assert worse.decision == "kept_champion" and worse.champion_score == pytest.approx(0.70)
    assert "on the same evaluation data" in worse.reason
    assert client.get_model_version(name, v2).tags["champion_score_source"] == "same_evaluation_data"
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    better = promote(client, config, v3, gate_passed=True, challenger_score=0.75, champion_score=0.70)
    assert better.decision == "promoted"
    assert str(client.get_model_version_by_alias(name, "champion").version) == v3
    assert client.get_model_version(name, v3).tags["previous_champion"] == v1


def test_rollback_restores_the_previous_champion_and_records_it(store: RegistryConfig) -> None:
    from anomaly_pipeline.registry import champion_version, force_promote, repromote, rollback

    config = _model_config(store, "rollback")
    client = configure(config)
    name = config.model_name
    v1, v2, v3 = (register_version(client, config, _train(config, float(o))).version for o in (1, 2, 3))
    with pytest.raises(ValueError, match="no champion"):
        rollback(client, config)
    promote(client, config, v1, gate_passed=True, challenger_score=0.5)
    with pytest.raises(ValueError, match="no earlier champion"):
        rollback(client, config)
    promote(client, config, v2, gate_passed=True, challenger_score=0.6)
    promote(client, config, v3, gate_passed=True, challenger_score=0.7)
    assert champion_version(client, name) == v3

    done = rollback(client, config, reason="v3 floods the SOC with alerts", actor="alice")
    assert (done.from_version, done.to_version) == (v3, v2)
    assert champion_version(client, name) == v2
    demoted = client.get_model_version(name, v3).tags
    assert demoted["rolled_back"] == "true" and demoted["rollback_to"] == v2
    assert demoted["rollback_reason"] == "rolled back by alice: v3 floods the SOC with alerts"
    restored = client.get_model_version(name, v2).tags
    assert restored["restored_from"] == v3 and restored["promotion_decision"] == "rollback_restored"
    assert rollback(client, config).to_version == v1  # one step further back
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(FEATURES).tolist() == [12.0, 23.0, 34.0]  # version 1: offset 1

    # Promoting again applies the rules with the recorded score and gate verdict.
    assert repromote(client, config, v3).decision == "promoted"
    assert champion_version(client, name) == v3
    with pytest.raises(ValueError, match="already is the champion"):
        rollback(client, config, to_version=v3)
    forced = force_promote(client, config, v1, reason="incident 42", actor="bob")
    assert forced.decision == "forced" and champion_version(client, name) == v1
    assert client.get_model_version(name, v1).tags["promotion_reason"] == "forced by bob: incident 42"
    with pytest.raises(ValueError, match="needs a reason"):
        force_promote(client, config, v2, reason=" ")


def test_models_cli_promote_rollback_list(tmp_path, capsys) -> None:
    from anomaly_pipeline import settings
    from anomaly_pipeline.cli import main

    home = tmp_path / "state"
    config = RegistryConfig.from_state(settings.state_paths(home))
    client = configure(config)
    v1, v2 = (register_version(client, config, _train(config, float(o))).version for o in (1, 2))
    promote(client, config, v1, gate_passed=True, challenger_score=0.5)
    promote(client, config, v2, gate_passed=False, challenger_score=0.9)

    assert main(["--home", str(home), "models", "promote", v2]) == 1  # the gate failed: refused
    assert "gate_failed" in capsys.readouterr().out
    assert main(["--home", str(home), "models", "promote", v2, "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert main(["--home", str(home), "models", "promote", v2, "--force", "--reason", "hotfix"]) == 0
    assert "champion: version 2" in capsys.readouterr().out
    assert main(["--home", str(home), "models", "rollback", "--reason", "too many alerts"]) == 0
    assert "from version 2 to version 1" in capsys.readouterr().out
    assert main(["--home", str(home), "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "rollback_restored" in listing and "['challenger', 'champion']" not in listing
    assert main(["--home", str(home), "models", "rollback", "--to", "7"]) == 2
    assert "no version '7'" in capsys.readouterr().err
