"""MLflow 3 tracking and model registry: runs, versions, and the ``challenger`` / ``champion`` aliases.

The lifecycle (ARCHITECTURE.md, "Registry, drift, continuous learning"):

1. ``training_run`` opens an MLflow run in the project's experiment, tagged with the git commit;
   the trainer logs parameters, metrics, plots and the model (``mlflow.<flavor>.log_model(...,
   name="model")``, which in MLflow 3 creates a LoggedModel).
2. ``register_version`` registers that model as a new version of the registered model and points
   the alias ``challenger`` at it.
3. ``promote`` moves the alias ``champion`` to the challenger only when the blocking quality gate
   passed and the challenger's score is at least the champion's on the same metric (the champion's
   score is read from its version tag ``eval_<metric>``); the decision, both scores and the reason
   are recorded as tags on the challenger version. Whenever ``champion`` moves, the version it
   left is remembered on the new champion (``previous_champion``).
4. ``rollback`` moves ``champion`` back to that previous champion and records it on both versions;
   ``force_promote`` is an operator's explicit override, recorded as ``forced``.

Scoring loads ``models:/<name>@champion``. Only aliases are used, never the deprecated stages.
Everything works against a local ``sqlite:///`` store and artifact folder with no server; a remote
tracking server only changes ``RegistryConfig``.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anomaly_pipeline import settings

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_METRIC = "average_precision"
GIT_COMMIT_TAG = "git_commit"
DECISION_TAG = "promotion_decision"
GATE_TAG = "gate_passed"
PREVIOUS_CHAMPION_TAG = "previous_champion"
Decision = Literal["promoted", "kept_champion", "gate_failed", "forced"]


@dataclass(frozen=True)
class RegistryConfig:
    """Where MLflow keeps runs, artifacts and registered models, and which names this project uses.

    ``registry_uri`` defaults to ``tracking_uri``. ``artifact_location`` is used only when the
    experiment is created (a local folder or any URI MLflow understands, e.g. ``s3://...``).
    """

    tracking_uri: str
    registry_uri: str | None = None
    experiment: str = "anomaly-pipeline"
    artifact_location: str | None = None
    model_name: str = settings.MODEL_NAME

    @classmethod
    def from_state(cls, paths: settings.StatePaths | None = None, **overrides: str) -> RegistryConfig:
        """The embedded default: sqlite store and artifact folder under the project's state folder."""
        paths = paths or settings.state_paths()
        values: dict[str, str] = {
            "tracking_uri": paths.mlflow_tracking_uri,
            "artifact_location": str(paths.mlflow_artifacts),
        }
        values.update(overrides)
        return cls(**values)

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version, as ``register_version`` left it."""

    name: str
    version: str
    run_id: str | None
    source: str
    model_id: str | None
    status: str
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``, loadable with ``mlflow.pyfunc.load_model``."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class PromotionDecision:
    """What ``promote`` decided for one challenger version, and why."""

    model_name: str
    version: str
    metric: str
    decision: Decision
    challenger_score: float
    champion_version: str | None  # the champion it was compared with (None: there was none)
    champion_score: float | None
    reason: str

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    @property
    def champion_after(self) -> str | None:
        """The version holding ``champion`` after the decision."""
        return self.version if self.decision in ("promoted", "forced") else self.champion_version


def configure(config: RegistryConfig) -> MlflowClient:
    """Point MLflow at ``config``'s stores, make sure the experiment exists, return a client.

    Sets the process-wide tracking and registry URIs (``mlflow.start_run`` and ``log_model`` use
    them), creates the parent folder of a ``sqlite:///`` database and a local artifact folder,
    creates the experiment with ``artifact_location`` if it is missing and restores it if it was
    deleted. An existing experiment keeps its artifact location (MLflow cannot move it); a
    different requested location is logged as a warning.
    """
    registry_uri = config.effective_registry_uri
    for uri in {config.tracking_uri, registry_uri}:
        _ensure_sqlite_parent(uri)
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=registry_uri)
    _ensure_experiment(client, config)
    return client


def experiment_id(client: MlflowClient, config: RegistryConfig) -> str:
    """The id of ``config.experiment``, created if missing."""
    return _ensure_experiment(client, config)


@contextmanager
def training_run(
    config: RegistryConfig, run_name: str, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run in the project's experiment; the run ends (FAILED on error) on exit.

    Tags: ``git_commit`` (``git rev-parse HEAD`` of this checkout, ``unknown`` outside git),
    MLflow's own ``mlflow.source.git.commit`` when known, ``model_name``, then ``tags`` (which win).
    """
    client = configure(config)
    exp_id = _ensure_experiment(client, config)
    commit = git_commit()
    run_tags: dict[str, str] = {GIT_COMMIT_TAG: commit, "model_name": config.model_name}
    if commit != "unknown":
        run_tags["mlflow.source.git.commit"] = commit
    run_tags.update(tags or {})
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=run_tags) as run:
        yield run


def register_version(
    client: MlflowClient,
    config: RegistryConfig,
    run_id: str,
    artifact_path: str = "model",
    tags: dict[str, str] | None = None,
    description: str | None = None,
    *,
    await_seconds: int = 300,
) -> ModelVersionInfo:
    """Register the model logged by run ``run_id`` as a new version and alias it ``challenger``.

    ``artifact_path`` is the ``name=`` the model was logged under. MLflow 3 stores a logged model
    as a LoggedModel (``models:/<model_id>``) linked to its run; that is registered, with the run
    id and model id recorded on the version. A model saved the MLflow 2 way as run artifacts
    (``<artifact_path>/MLmodel`` under the run) is registered from the run's artifact folder.

    A hybrid detector logged by ``mlflow_model.log_hybrid_model`` gets the tag
    ``weights_sha256`` (its data's digest, checked on every load) when ``tags`` does not bring it:
    registering the same run again keeps the check.

    Raises:
        ValueError: the run logged no model under ``artifact_path``.
        RuntimeError: the version did not become READY within ``await_seconds``.
        pyfunc_loader.ModelIntegrityError: the logged data no longer matches its own record.
    """
    from anomaly_pipeline import pyfunc_loader

    name = config.model_name
    run = client.get_run(run_id)
    model_id, source = _model_source(client, run, artifact_path)
    tags = dict(tags or {})
    if pyfunc_loader.DIGEST_TAG not in tags:
        digest = _data_digest(source)
        if digest is not None:
            tags[pyfunc_loader.DIGEST_TAG] = digest
    try:
        client.create_registered_model(
            name, description="Graph-temporal anomaly detector for security telemetry (GNN + LSTM)."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    created = client.create_model_version(
        name=name,
        source=source,
        run_id=run_id,
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        description=description,
        await_creation_for=await_seconds,
        model_id=model_id,
    )
    version = _wait_until_ready(client, name, created.version, await_seconds)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return ModelVersionInfo(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        source=version.source,
        model_id=model_id,
        status=version.status,
        aliases=aliases_of(client, name, version.version),
    )


def _data_digest(source: str) -> str | None:
    """The verified data digest of a model logged with the project's loader; None for others."""
    from mlflow.models import Model

    from anomaly_pipeline import pyfunc_loader

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
    conf = Model.load(str(local / "MLmodel")).flavors.get("python_function") or {}
    if conf.get("loader_module") != pyfunc_loader.LOADER_MODULE or not conf.get("data"):
        return None
    return pyfunc_loader.verify_data(local / conf["data"], pyfunc_loader.recorded_hashes(local), "in its MLmodel file")


def promote(
    client: MlflowClient,
    config: RegistryConfig,
    version: str | int,
    *,
    gate_passed: bool,
    challenger_score: float,
    metric: str = DEFAULT_METRIC,
    higher_is_better: bool = True,
    champion_score: float | None = None,
) -> PromotionDecision:
    """Move ``champion`` to ``version`` iff the gate passed and it scores at least the champion.

    ``champion_score`` is the current champion's score on the *same evaluation data* as
    ``challenger_score`` (the caller scored both models on the challenger's test window); without
    it, the champion's score is its version tag ``eval_<metric>`` (from its own evaluation), and
    the tag ``champion_score_source`` says which was used.
    Rules, in order: gate failed -> ``gate_failed`` (the champion, if any, stays); no champion yet
    -> ``promoted``; ``version`` already champion -> ``promoted``; champion without a readable
    score -> ``promoted`` (there is nothing to beat, said in the reason); challenger score >=
    champion score (<= when ``higher_is_better`` is False) -> ``promoted``; else ``kept_champion``.

    Tags written on ``version``: ``eval_<metric>``, ``promotion_decision``, ``compared_to``
    (champion version or ``none``), ``champion_score`` (or ``none``), ``promotion_reason``.

    Raises:
        ValueError: ``challenger_score`` is not a finite number, or ``version`` does not exist.
    """
    name = config.model_name
    version = str(version)
    score = float(challenger_score)
    if not math.isfinite(score):
        raise ValueError(
            f"challenger_score for {metric} must be a finite number, got {challenger_score!r}; "
            "evaluate the model on labelled data before promoting it"
        )
    _get_version(client, name, version)
    score_tag = f"eval_{metric}"

    champion_version = _registered_aliases(client, name).get(CHAMPION)
    source = "none"
    if champion_version is None or champion_version == version:
        champion_score = None
    elif champion_score is not None and math.isfinite(float(champion_score)):
        champion_score, source = float(champion_score), "same_evaluation_data"
    else:
        champion = client.get_model_version(name, champion_version)
        champion_score, source = _parse_score(champion.tags.get(score_tag)), "champion_tag"
    where = " on the same evaluation data" if source == "same_evaluation_data" else ""

    decision: Decision
    if not gate_passed:
        decision = "gate_failed"
        reason = "the quality gate failed, so this version cannot become champion; " + (
            f"champion stays version {champion_version}" if champion_version else "there is no champion yet"
        )
    elif champion_version is None:
        decision = "promoted"
        reason = f"quality gate passed and there was no champion yet ({metric}={score:.4f})"
    elif champion_version == version:
        decision = "promoted"
        reason = f"version {version} already is the champion ({metric}={score:.4f})"
    elif champion_score is None:
        decision = "promoted"
        reason = (
            f"quality gate passed; champion version {champion_version} has no readable tag "
            f"'{score_tag}', so there is no score to beat"
        )
    else:
        better = score >= champion_score if higher_is_better else score <= champion_score
        relation = ">=" if higher_is_better else "<="
        if better:
            decision = "promoted"
            reason = (
                f"quality gate passed and {metric} {score:.4f} {relation} champion version "
                f"{champion_version}'s {champion_score:.4f}{where}"
            )
        else:
            decision = "kept_champion"
            reason = (
                f"quality gate passed but {metric} {score:.4f} is not {relation} champion version "
                f"{champion_version}'s {champion_score:.4f}{where}; champion stays"
            )

    record = {
        score_tag: repr(score),
        GATE_TAG: str(bool(gate_passed)).lower(),
        DECISION_TAG: decision,
        "compared_to": champion_version or "none",
        "champion_score": repr(champion_score) if champion_score is not None else "none",
        "champion_score_source": source,
        "promotion_reason": reason,
    }
    for key, value in record.items():
        client.set_model_version_tag(name, version, key, value)
    if decision == "promoted" and champion_version != version:
        _move_champion(client, name, version, champion_version)
    logger.info("model %s version %s: %s (%s)", name, version, decision, reason)
    return PromotionDecision(
        model_name=name,
        version=version,
        metric=metric,
        decision=decision,
        challenger_score=score,
        champion_version=champion_version,
        champion_score=champion_score,
        reason=reason,
    )


def force_promote(
    client: MlflowClient, config: RegistryConfig, version: str | int, *, reason: str, actor: str = "operator"
) -> PromotionDecision:
    """Make ``version`` champion by hand, whatever the gate and the scores said (``models promote --force``).

    For an operator's decision (e.g. a first champion on data without labels); recorded on the
    version as ``promotion_decision=forced`` with ``reason`` and ``actor``, so the registry shows
    that no rule made it champion. ``rollback`` undoes it.

    Raises:
        ValueError: ``version`` does not exist, or ``reason`` is empty.
    """
    name = config.model_name
    version = str(version)
    if not reason.strip():
        raise ValueError("a forced promotion needs a reason (e.g. --reason 'first champion, approved by ...')")
    target = _get_version(client, name, version)
    champion_version = _registered_aliases(client, name).get(CHAMPION)
    score_tag = f"eval_{DEFAULT_METRIC}"
    champion_score = None
    if champion_version is not None:
        champion_score = _parse_score(client.get_model_version(name, champion_version).tags.get(score_tag))
    text = f"forced by {actor}: {reason.strip()}"
    record = {
        DECISION_TAG: "forced",
        "compared_to": champion_version or "none",
        "champion_score": repr(champion_score) if champion_score is not None else "none",
        "promotion_reason": text,
    }
    for key, value in record.items():
        client.set_model_version_tag(name, version, key, value)
    if champion_version != version:
        _move_champion(client, name, version, champion_version)
    logger.info("model %s version %s: forced champion (%s)", name, version, text)
    score = _parse_score(target.tags.get(score_tag))
    return PromotionDecision(
        model_name=name,
        version=version,
        metric=DEFAULT_METRIC,
        decision="forced",
        challenger_score=score if score is not None else math.nan,
        champion_version=champion_version,
        champion_score=champion_score,
        reason=text,
    )


def repromote(client: MlflowClient, config: RegistryConfig, version: str | int) -> PromotionDecision:
    """Apply ``promote``'s rules again to ``version`` with the gate verdict and score recorded on it
    at registration (``models promote VERSION``): e.g. after the champion was rolled back.

    Raises:
        ValueError: ``version`` does not exist or carries no recorded score / gate verdict.
    """
    name = config.model_name
    tags = _get_version(client, name, str(version)).tags
    score = _parse_score(tags.get(f"eval_{DEFAULT_METRIC}"))
    gate = tags.get(GATE_TAG)
    if score is None or gate not in ("true", "false"):
        raise ValueError(
            f"model {name!r} version {version} has no recorded eval_{DEFAULT_METRIC} / {GATE_TAG} tags, so "
            "the promotion rules cannot be applied; use --force with a --reason to promote it by hand"
        )
    return promote(client, config, version, gate_passed=gate == "true", challenger_score=score)


@dataclass(frozen=True)
class RollbackResult:
    """What ``rollback`` did: ``champion`` moved from ``from_version`` to ``to_version``."""

    model_name: str
    from_version: str
    to_version: str
    reason: str


def rollback(
    client: MlflowClient,
    config: RegistryConfig,
    *,
    to_version: str | int | None = None,
    reason: str = "",
    actor: str = "operator",
) -> RollbackResult:
    """Move ``champion`` back to the champion before the current one (or to ``to_version``).

    The previous champion is the current champion's ``previous_champion`` tag, written whenever
    the alias moves. Recorded on both versions: the demoted one gets ``rolled_back=true``,
    ``rollback_to`` and ``rollback_reason``; the restored one ``restored_from`` and
    ``promotion_decision=rollback_restored``. The restored version's own ``previous_champion``
    is kept, so a second rollback goes one step further back.

    Raises:
        ValueError: no champion, no earlier champion recorded (and no ``to_version``), or
            ``to_version`` does not exist / already is the champion.
    """
    name = config.model_name
    current = _registered_aliases(client, name).get(CHAMPION)
    if current is None:
        raise ValueError(f"model {name!r} has no champion, so there is nothing to roll back")
    if to_version is None:
        previous = client.get_model_version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous or previous == "none":
            raise ValueError(
                f"champion version {current} of {name!r} has no earlier champion recorded; "
                "name the version to restore with --to VERSION"
            )
        to_version = previous
    target = str(to_version)
    _get_version(client, name, target)
    if target == current:
        raise ValueError(f"version {target} already is the champion of {name!r}")
    text = f"rolled back by {actor}" + (f": {reason.strip()}" if reason.strip() else "")
    client.set_registered_model_alias(name, CHAMPION, target)
    for key, value in {"rolled_back": "true", "rollback_to": target, "rollback_reason": text}.items():
        client.set_model_version_tag(name, current, key, value)
    for key, value in {"restored_from": current, DECISION_TAG: "rollback_restored", "promotion_reason": text}.items():
        client.set_model_version_tag(name, target, key, value)
    logger.info("model %s: champion rolled back from version %s to %s (%s)", name, current, target, text)
    return RollbackResult(model_name=name, from_version=current, to_version=target, reason=text)


DRIFT_REFERENCE_ARTIFACT = "reference/drift_reference.parquet"


def log_drift_reference(reference: pd.DataFrame) -> None:
    """Log the training reference for drift (features and scores, ``drift.drift_frame``) into the
    active run, so drift can later compare new days with *this* model's training data."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(DRIFT_REFERENCE_ARTIFACT).name
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(Path(DRIFT_REFERENCE_ARTIFACT).parent))


def load_drift_reference(client: MlflowClient, config: RegistryConfig, version: str | int) -> pd.DataFrame:
    """The drift reference logged with ``version``'s training run.

    Raises:
        ValueError: the version's run logged no reference (registered before references existed).
    """
    import tempfile

    mv = _get_version(client, config.model_name, str(version))
    names = {a.path for a in client.list_artifacts(mv.run_id, str(Path(DRIFT_REFERENCE_ARTIFACT).parent))}
    if DRIFT_REFERENCE_ARTIFACT not in names:
        raise ValueError(
            f"model {config.model_name!r} version {version} (run {mv.run_id}) has no {DRIFT_REFERENCE_ARTIFACT}; "
            "it was registered before drift references were logged: retrain (retrain_job) to get one"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(mv.run_id, DRIFT_REFERENCE_ARTIFACT, tmp)
        return pd.read_parquet(local)


def champion_version(client: MlflowClient, model_name: str) -> str | None:
    """The version holding ``champion``, or None when there is none (or the model is not registered)."""
    return _registered_aliases(client, model_name).get(CHAMPION)


def aliases_of(client: MlflowClient, model_name: str, version: str | int) -> list[str]:
    """The aliases (e.g. ``champion``, ``challenger``) pointing at ``version``, sorted."""
    _get_version(client, model_name, str(version))
    return sorted(alias for alias, v in _registered_aliases(client, model_name).items() if v == str(version))


def list_versions(client: MlflowClient, model_name: str, *, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """All versions of ``model_name``, newest first.

    Columns: ``version`` (int), ``aliases`` (list of str), ``created`` (UTC timestamp),
    ``run_id``, ``eval_<metric>`` (float, NaN when not evaluated), ``decision`` (the
    ``promotion_decision`` tag, None before ``promote``), ``status``. Empty (with these columns)
    when the model is not registered yet.
    """
    score_tag = f"eval_{metric}"
    columns = ["version", "aliases", "created", "run_id", score_tag, "decision", "status"]
    versions = _search_versions(client, model_name)
    if not versions:
        return pd.DataFrame(columns=columns)
    by_version: dict[str, list[str]] = {}
    for alias, v in _registered_aliases(client, model_name).items():
        by_version.setdefault(v, []).append(alias)
    rows = [
        {
            "version": int(mv.version),
            "aliases": sorted(by_version.get(str(mv.version), [])),
            "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
            "run_id": mv.run_id,
            score_tag: _parse_score(mv.tags.get(score_tag)),
            "decision": mv.tags.get(DECISION_TAG),
            "status": mv.status,
        }
        for mv in versions
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame[score_tag] = frame[score_tag].astype(float)
    return frame.sort_values("version", ascending=False, ignore_index=True)


def git_commit(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the checkout holding this package, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit or "unknown"


# -- internals ---------------------------------------------------------------------------------


def _ensure_sqlite_parent(uri: str) -> None:
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        db_path = uri[len(prefix) :].split("?", 1)[0]
        if db_path and db_path != ":memory:":
            Path(db_path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _artifact_uri(location: str) -> str:
    """A local folder as an absolute ``file://`` URI (created); any other URI unchanged."""
    if "://" in location:
        return location
    folder = Path(location).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


# The MLflow UI opens an experiment on the view its kind asks for; untagged, MLflow 3 opens the
# GenAI overview (traces, token usage). These tags declare a model-training experiment and say
# what it holds (the description is MLflow's note tag).
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "Training runs of the anomaly-pipeline hybrid GNN-LSTM detector (one `hybrid-*` run per Dagster "
        "training run: parameters, per-epoch training curves under `train/`, every detector's evaluation "
        "under `eval/`, the model card, the Great Expectations summary and the registered pyfunc model) "
        "and daily Evidently drift runs (`drift-<day>`). Models: see the registered model's champion alias."
    ),
}


def _ensure_experiment(client: MlflowClient, config: RegistryConfig) -> str:
    wanted = _artifact_uri(config.artifact_location) if config.artifact_location else None
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        try:
            return client.create_experiment(config.experiment, artifact_location=wanted, tags=EXPERIMENT_TAGS)
        except MlflowException as exc:
            # Another process created it between the lookup and the create.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(config.experiment)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        logger.warning("experiment %r was deleted; restoring it", config.experiment)
        client.restore_experiment(experiment.experiment_id)
    for key, value in EXPERIMENT_TAGS.items():  # experiments created before these tags existed
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    if wanted and experiment.artifact_location.rstrip("/") != wanted.rstrip("/") and _relocate_moved_home(
            config, experiment.artifact_location, wanted):
        experiment = client.get_experiment(experiment.experiment_id)
    if wanted and experiment.artifact_location.rstrip("/") != wanted.rstrip("/"):
        logger.warning(
            "experiment %r keeps its artifact location %s; the configured %s applies only to a new "
            "experiment (use another experiment name to change it)",
            config.experiment,
            experiment.artifact_location,
            wanted,
        )
    return experiment.experiment_id


# Where a local store keeps absolute artifact locations (MLflow resolves them when it writes).
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def _relocate_moved_home(config: RegistryConfig, stored: str, wanted: str) -> bool:
    """Point a local store that was copied or moved to a new state folder at that folder's artifacts.

    MLflow stores absolute ``file://`` artifact locations and has no API to move them, so a state
    folder copied with ``cp -a`` would keep logging into the *old* folder's ``mlartifacts``. When
    the sqlite database sits in the same folder as the wanted artifact root (the embedded layout:
    ``<home>/mlflow.db`` beside ``<home>/mlartifacts``) and the stored root is another folder's
    ``mlartifacts``, the stored prefixes are rewritten to the new root in this database only.
    Anything else (a server, a chosen location) is left alone. Returns whether it rewrote.
    """
    old, new = stored.rstrip("/"), wanted.rstrip("/")
    if not (old.startswith("file://") and new.startswith("file://") and old.endswith("/mlartifacts")):
        return False
    new_root = Path(urllib.parse.urlparse(new).path)
    databases = {_sqlite_file(uri) for uri in (config.tracking_uri, config.effective_registry_uri)} - {None}
    if not databases or any(db.parent != new_root.parent for db in databases):
        return False
    for db in databases:
        with sqlite3.connect(db) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table, column in _LOCATION_COLUMNS:
                if table in tables:
                    conn.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {column} = ? OR "
                                 f"{column} LIKE ? ESCAPE '\\'", (new, len(old) + 1, old, _like_prefix(old + "/")))
    logger.warning("state folder moved: artifact locations %s -> %s rewritten in %s", old, new,
                   ", ".join(str(db) for db in sorted(databases)))
    return True


def _sqlite_file(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return Path(path).expanduser().resolve() if path and path != ":memory:" else None


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with ``text`` (its wildcards escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _model_source(client: MlflowClient, run: Run, artifact_path: str) -> tuple[str | None, str]:
    """(model_id, source URI) of the model that ``run`` logged under ``artifact_path``."""
    run_id = run.info.run_id
    logged = []
    page_token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"name = '{artifact_path}'",
            page_token=page_token,
        )
        logged.extend(m for m in page if m.source_run_id == run_id)
        page_token = page.token
        if not page_token:
            break
    if logged:
        newest = max(logged, key=lambda m: m.creation_timestamp)
        return newest.model_id, newest.model_uri
    # A model saved as plain run artifacts (MLflow 2 layout, or mlflow.log_artifacts of a saved model).
    names = {info.path for info in client.list_artifacts(run_id, artifact_path)}
    if f"{artifact_path}/MLmodel" in names:
        return None, f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    raise ValueError(
        f"run {run_id} logged no model named '{artifact_path}'; log it inside training_run with "
        f"mlflow.<flavor>.log_model(..., name='{artifact_path}') or pass the name it was logged under"
    )


def _wait_until_ready(client: MlflowClient, name: str, version: str, await_seconds: int) -> ModelVersion:
    deadline = time.monotonic() + max(await_seconds, 0)
    while True:
        current = client.get_model_version(name, version)
        if current.status == "READY":
            return current
        if current.status == "FAILED_REGISTRATION" or time.monotonic() >= deadline:
            raise RuntimeError(
                f"model {name} version {version} is {current.status} "
                f"({current.status_message or 'no message'}) after {await_seconds} s; check the "
                "registry server's logs and the artifact store, then register again"
            )
        time.sleep(1.0)


def _move_champion(client: MlflowClient, name: str, version: str, previous: str | None) -> None:
    """Point ``champion`` at ``version``, remembering ``previous`` on it for ``rollback``."""
    client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous or "none")
    client.set_registered_model_alias(name, CHAMPION, version)


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise ValueError(
            f"model {name!r} has no version {version!r}; list the versions with list_versions()"
        ) from exc


def _registered_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version (as str) for registered model ``name``; empty if it is not registered."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(v) for alias, v in (model.aliases or {}).items()}


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    found: list[ModelVersion] = []
    page_token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=page_token)
        found.extend(page)
        page_token = page.token
        if not page_token:
            break
    return found


def _parse_score(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
