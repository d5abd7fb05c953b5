"""The requirements a logged model names: every one pinned, the project never from an index.

A model's ``requirements.txt`` is what ``mlflow models serve --env-manager virtualenv``,
``mlflow.pyfunc.get_model_dependencies`` and people rebuilding its environment install. The
project (``anomaly-pipeline``) is not on PyPI, so naming it there, pinned or not, lets a package of
the same name from an index be installed instead (dependency confusion; a squatter can publish
exactly the pinned version). So:

* the project is a wheel built from the code that is running (``build_wheel``: a plain zip of its
  modules and metadata, deterministic, well under a second; no build backend, no network), kept in
  the state folder's ``wheels/<sha256 prefix>/`` and never in the artifact store, where anyone with
  write access could swap it;
* the requirement is a direct reference with the wheel's SHA-256, through an environment variable:
  ``anomaly-pipeline @ file://${ANOMALY_PIPELINE_WHEELHOUSE}/<prefix>/anomaly_pipeline-<version>-py3-none-any.whl#sha256=<hex>``.
  pip never looks it up on an index, expands the variable, and refuses a file with another hash;
  with the variable unset the install fails instead of guessing;
* every other requirement is the project's own runtime dependency pinned ``==`` to the version
  installed when the model was logged (``pinned_requirements``); the wheel's metadata carries the
  same pins.

To rebuild a model's environment: ``ANOMALY_PIPELINE_WHEELHOUSE=$ANOMALY_PIPELINE_HOME/wheels pip
install -r requirements.txt``; or ``python -m anomaly_pipeline.project_wheel DIR`` from the same
commit and environment, which writes the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

import anomaly_pipeline

DIST_NAME = "anomaly-pipeline"
WHEELHOUSE_ENV = "ANOMALY_PIPELINE_WHEELHOUSE"
# The project's top-level packages and modules (pyproject.toml: packages.find, py-modules).
TOP_LEVEL = ("anomaly_pipeline", "assets", "sensors", "definitions")
ENTRY_POINTS = "[console_scripts]\nanomaly-pipeline = anomaly_pipeline.cli:main\n"
# What the scorer imports, when the project's metadata is not installed (a bare checkout).
CORE_REQUIREMENTS = ("torch", "torch-geometric", "numpy", "pandas", "scikit-learn", "mlflow", "pyarrow")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a fixed time stamp: the same code gives the same wheel bytes


def pinned_requirements() -> list[str]:
    """The project's runtime dependencies (no extras), each ``==`` the installed version.

    Raises:
        RuntimeError: a dependency is not installed, so it cannot be pinned.
    """
    try:
        declared = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        declared = list(CORE_REQUIREMENTS)
    env = default_environment()
    pins: list[str] = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({**env, "extra": ""}):
            continue  # an extra (dev, k8s, kafka) or another platform's dependency
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{requirement.name} (a dependency of {DIST_NAME}) is not installed, so the model's requirements "
                "cannot pin it; install the project's dependencies (make install) and log the model again"
            ) from None
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={installed}")
    return sorted(pins, key=str.lower)


def _sources() -> dict[str, bytes]:
    """Archive name -> bytes of every module of the running project (no caches)."""
    files: dict[str, bytes] = {}
    for name in TOP_LEVEL:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            if name == "anomaly_pipeline":
                raise RuntimeError("anomaly_pipeline cannot be found on sys.path")
            continue  # the Dagster layer is not on the path: the library alone
        origin = Path(spec.origin)
        if spec.submodule_search_locations is None:
            files[origin.name] = origin.read_bytes()
            continue
        root = origin.parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
                files[f"{name}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return files


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_name() -> str:
    return f"anomaly_pipeline-{anomaly_pipeline.__version__}-py3-none-any.whl"


def build_wheel(out_dir: str | Path) -> tuple[Path, str]:
    """Write the running project as a wheel to ``out_dir/<sha256[:16]>/``; return its path and SHA-256.

    Deterministic: the same code and installed dependency versions give the same bytes.
    """
    version = anomaly_pipeline.__version__
    info = f"anomaly_pipeline-{version}.dist-info"
    metadata = "".join([
        "Metadata-Version: 2.1\n", f"Name: {DIST_NAME}\n", f"Version: {version}\n",
        "Summary: anomaly-pipeline, built from the running code for a logged model's environment\n",
        f"Requires-Python: =={sys.version_info.major}.{sys.version_info.minor}.*\n",
        *(f"Requires-Dist: {pin}\n" for pin in pinned_requirements()),
    ])
    files = _sources()
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: anomaly_pipeline.project_wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = ENTRY_POINTS.encode()
    files[f"{info}/top_level.txt"] = "".join(f"{n}\n" for n in TOP_LEVEL).encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in sorted(files.items()))
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(files.items()):
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    payload = buffer.getvalue()
    sha256 = hashlib.sha256(payload).hexdigest()
    folder = Path(out_dir) / sha256[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name()
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        scratch = path.with_suffix(".tmp")
        scratch.write_bytes(payload)
        scratch.replace(path)
    return path, sha256


def project_requirement(sha256: str) -> str:
    """The requirement line for the wheel with ``sha256``: a direct reference, never an index."""
    return f"{DIST_NAME} @ file://${{{WHEELHOUSE_ENV}}}/{sha256[:16]}/{wheel_name()}#sha256={sha256}"


def model_requirements(wheelhouse: str | Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The model's ``pip_requirements`` and a record of the wheel for the MLmodel metadata.

    ``wheelhouse``: where the wheel is kept (the state folder's ``wheels/``); None builds it in a
    scratch folder for its hash only (rebuild it with ``python -m anomaly_pipeline.project_wheel``).
    """
    if wheelhouse is None:
        with tempfile.TemporaryDirectory(prefix="anomaly-pipeline-wheel-") as tmp:
            path, sha256 = build_wheel(tmp)
        where = f"not kept; rebuild with python -m anomaly_pipeline.project_wheel DIR ({path.name})"
    else:
        path, sha256 = build_wheel(wheelhouse)
        where = str(path)
    line = project_requirement(sha256)
    return [line, *pinned_requirements()], {"wheel": path.name, "sha256": sha256, "kept_at": where,
                                            "requirement": line, "wheelhouse_env": WHEELHOUSE_ENV}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m anomaly_pipeline.project_wheel OUT_DIR")
    built, digest = build_wheel(sys.argv[1])
    print(f"{built}  sha256={digest}")
