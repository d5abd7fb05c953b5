"""MLflow's ``loader_module`` for the registered hybrid detector: the loader is installed code.

A model logged by ``mlflow_model.log_hybrid_model`` has a ``python_function`` flavor that names
this module (``loader_module: anomaly_pipeline.pyfunc_loader``), a ``data`` folder with the
weights (a torch state dict, read with ``weights_only=True``) and JSON configs, and no ``code``
entry: MLflow imports this module from the installed package and never puts a folder of the
artifact on ``sys.path``, and nothing is unpickled. Before, the model was logged *from code*:
``mlflow_model.py`` was copied into the artifact and executed on every load, so whoever could
write to the artifact store could run code inside ``serve``, ``stream`` and daily scoring.

Integrity: at registration the data folder's files are hashed (SHA-256 per file, and one digest
over the list of ``path sha256`` lines). The digest and the per-file hashes go into the MLmodel
metadata (``anomaly_pipeline.data_sha256``), and the digest into the model version's tag
``weights_sha256`` in the registry, which lives apart from the artifact store.
``_load_pyfunc`` refuses data that differs from the MLmodel's record (a changed, missing or
extra file); ``mlflow_model.load_pyfunc`` also compares with the registry's tag, so rewriting
the MLmodel file along with the weights is refused too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

LOADER_MODULE = __name__
METADATA_KEY = "anomaly_pipeline"
DIGEST_TAG = "weights_sha256"
_CHUNK = 1 << 20


class ModelIntegrityError(RuntimeError):
    """A model's files are not the ones recorded at registration, or it would run artifact code."""


def data_hashes(directory: str | Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by POSIX path relative to it, sorted."""
    root = Path(directory)
    hashes: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda handle=handle: handle.read(_CHUNK), b""):
                digest.update(block)
        hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


def digest_of(hashes: dict[str, str]) -> str:
    """One SHA-256 over ``"<path> <sha256>\\n"`` lines in path order: the version's fingerprint."""
    lines = "".join(f"{name} {value}\n" for name, value in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify_data(directory: str | Path, recorded: dict[str, str], where: str) -> str:
    """The digest of ``directory`` after checking its files against ``recorded``.

    Raises:
        ModelIntegrityError: a file changed, is missing or was added; the message names it.
    """
    found = data_hashes(directory)
    changed = sorted(n for n in recorded.keys() & found.keys() if recorded[n] != found[n])
    missing = sorted(recorded.keys() - found.keys())
    added = sorted(found.keys() - recorded.keys())
    if changed or missing or added:
        parts = [f"{label} {names}" for label, names in (("changed", changed), ("missing", missing),
                                                           ("unexpected", added)) if names]  # fmt: skip
        raise ModelIntegrityError(
            f"the model's data at {directory} does not match the SHA-256 recorded {where}: {'; '.join(parts)}. "
            "Refusing to load it: the artifact was modified after registration. Register the model again from "
            "a trusted run (or roll the champion back: anomaly-pipeline models rollback)"
        )
    return digest_of(found)


def recorded_hashes(model_dir: str | Path) -> dict[str, str]:
    """The per-file hashes in the MLmodel metadata of the model at ``model_dir``.

    Raises:
        ModelIntegrityError: the MLmodel has no record (not logged by ``log_hybrid_model``).
    """
    from mlflow.models import Model

    meta = Model.load(str(Path(model_dir) / "MLmodel")).metadata or {}
    record = meta.get(METADATA_KEY, {}).get("data_sha256") if isinstance(meta.get(METADATA_KEY), dict) else None
    if not isinstance(record, dict) or not record:
        raise ModelIntegrityError(
            f"the model at {model_dir} carries no SHA-256 record of its data (metadata "
            f"{METADATA_KEY}.data_sha256): it was not logged by anomaly_pipeline.mlflow_model.log_hybrid_model; "
            "retrain and register it with this version"
        )
    return {str(k): str(v) for k, v in record.items()}


def _load_pyfunc(data_path: str) -> Any:
    """MLflow's entry point: the scorer built from ``data_path`` after the integrity check."""
    from anomaly_pipeline.mlflow_model import HybridScorer

    data = Path(data_path)
    verify_data(data, recorded_hashes(_model_root(data)), "in its MLmodel file")
    return HybridScorer.from_directory(data)


def _model_root(data: Path) -> Path:
    """The model folder (the one holding MLmodel) above a data folder (MLflow nests it: data/<name>)."""
    for folder in data.parents:
        if (folder / "MLmodel").is_file():
            return folder
    raise ModelIntegrityError(f"no MLmodel file above {data}: not a logged MLflow model folder")
