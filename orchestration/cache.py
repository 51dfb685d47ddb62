"""Step cache: reuse a step's finished MLflow run instead of running the step again.

Before launching a step, the orchestrator computes the step's cache key and
searches the tracking store for a FINISHED run of the same entry point with
that key. The key is a SHA-256 over:

- the entry point and its effective parameters, converted to the types that
  MLproject declares, with defaults filled in, so ``100``, ``"100"`` and
  ``100.0`` give the same key for an int parameter;
- the code the step runs (``step_code_version``): its MLproject command and
  the project modules that the command imports, followed through their own
  imports, so editing train's code leaves load's key unchanged;
- the environment (``environment_spec``): the env manager and the project's
  environment file, and for ``local`` the interpreter and installed packages;
- its inputs (``step_inputs``): a content digest of each upstream split
  folder, model or data file that a parameter names.

Reads MLproject and the project files under the work dir, the file at
``data_path``, and run tags and artifacts in the tracking store. Writes
nothing itself: the orchestrator sets ``cache_tags(...)`` on each step run it
creates, so the key is stored with the run and the cache works wherever the
tracking store is shared.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from steps.params import MLPROJECT_PATH, ParameterError, load_entry_point_specs
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, STEP_TAG

logger = logging.getLogger(__name__)

# Tags on a step run. The key decides reuse, and the other tags show what went into it.
CACHE_KEY_TAG = "pipeline.cache_key"
CACHE_PARAMS_TAG = "pipeline.cache.params"
CACHE_CODE_TAG = "pipeline.cache.code_version"
CACHE_ENV_TAG = "pipeline.cache.env_spec"
CACHE_INPUTS_TAG = "pipeline.cache.inputs"

# Content digests that a producing step records next to its output URI tag.
# When a run lacks them, the digest is computed from the downloaded artifacts.
DATA_DIGEST_TAG = "pipeline.data_digest"
MODEL_DIGEST_TAG = "pipeline.model_digest"

# On the parent run: pipeline.cached.<entry point> = id of the step run it reused.
CACHED_RUN_TAG_PREFIX = "pipeline.cached."

# Part of the hashed payload, so keys computed by an older recipe never match.
KEY_SCHEMA = 1

ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")

# MLflow rejects tag values longer than this (mlflow.utils.validation in 3.17).
MAX_TAG_VALUE_LENGTH = 8000

# What load writes into its split folder (steps.data, which imports scikit-learn
# and pandas, so it is not imported here; a test keeps the names in step).
SPLIT_FILES = ("train.parquet", "test.parquet", "metadata.json")
MODEL_FILE = "MLmodel"
EVALUATE_METRIC = "accuracy"

_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_ENTRY_POINT_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
_HASH_CHUNK = 1 << 20
_HTTP_TIMEOUT_S = 60
# Folders that hold no project code, skipped when a step's files cannot be traced.
_SKIPPED_DIRS = {"__pycache__", "mlruns", "mlartifacts", "node_modules", "venv"}


class CacheError(RuntimeError):
    """A cache argument that cannot form a key, such as an unknown env manager."""


@dataclass(frozen=True)
class CacheLookup:
    """The cache state of one step launch.

    ``key`` is None when an input cannot be identified, and then the step runs
    without the cache and its run gets no cache tags. ``run`` is the finished
    run to reuse, or None when the step has to run.
    """

    entry_point: str
    key: str | None
    tags: dict[str, str] = field(default_factory=dict)
    run: Run | None = None

    @property
    def hit(self) -> bool:
        return self.run is not None


# --- The key ---------------------------------------------------------------


def normalize_params(
    entry_point: str, params: Mapping[str, object], *, mlproject: Path = MLPROJECT_PATH
) -> dict[str, Any]:
    """Return every declared parameter of the entry point, typed and validated.

    Parameters not given take their MLproject default. Raises ParameterError
    for an unknown name or an invalid value, with the same message as the step.
    """
    specs = load_entry_point_specs(entry_point, mlproject)
    declared = [spec.name for spec in specs]
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r}: {entry_point} accepts {', '.join(declared)}"
        )

    normalized: dict[str, Any] = {}
    for spec in specs:
        raw = params.get(spec.name, spec.default)
        if raw is None:
            raise ParameterError(f"missing {spec.name}: {entry_point} declares no default for it")
        if isinstance(raw, bool):
            raise ParameterError(f"invalid {spec.name}={raw!r}: expected a {spec.type}")
        value = spec.parse(str(raw))
        # -0.0 and 0.0 are the same value but serialise differently.
        normalized[spec.name] = value + 0.0 if isinstance(value, float) else value
    return normalized


def step_cache_key(
    entry_point: str,
    params: Mapping[str, object],
    *,
    code_version: str,
    env_spec: str,
    inputs: Mapping[str, str],
    mlproject: Path = MLPROJECT_PATH,
) -> str:
    """Return the cache key of a step: 64 hex digits of a SHA-256."""
    payload = {
        "schema": KEY_SCHEMA,
        "entry_point": entry_point,
        "params": normalize_params(entry_point, params, mlproject=mlproject),
        "code_version": code_version,
        "env_spec": env_spec,
        "inputs": {str(name): str(value) for name, value in inputs.items()},
    }
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


def cache_tags(
    entry_point: str,
    params: Mapping[str, object],
    *,
    code_version: str,
    env_spec: str,
    inputs: Mapping[str, str],
    mlproject: Path = MLPROJECT_PATH,
) -> dict[str, str]:
    """Return the tags that store a step's cache key and its readable parts on its run."""
    key = step_cache_key(
        entry_point,
        params,
        code_version=code_version,
        env_spec=env_spec,
        inputs=inputs,
        mlproject=mlproject,
    )
    normalized = normalize_params(entry_point, params, mlproject=mlproject)
    return {
        CACHE_KEY_TAG: key,
        CACHE_PARAMS_TAG: _tag_value(_canonical_json(normalized)),
        CACHE_CODE_TAG: _tag_value(code_version),
        CACHE_ENV_TAG: _tag_value(env_spec),
        CACHE_INPUTS_TAG: _tag_value(_canonical_json(dict(inputs))),
    }


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _tag_value(text: str) -> str:
    # Only the readable parts can be cut: the key tag is 64 characters.
    if len(text) <= MAX_TAG_VALUE_LENGTH:
        return text
    return text[: MAX_TAG_VALUE_LENGTH - 3] + "..."


# --- Look-up in the tracking store ------------------------------------------


def find_cached_run(
    client: MlflowClient, experiment_id: str, entry_point: str, key: str
) -> Run | None:
    """Return the newest FINISHED run of the entry point with this key whose outputs exist.

    Runs are ordered by start time, newest first, then by run id, so every
    look-up picks the same run when several carry the key (two pipelines that
    ran at the same moment). A run whose outputs no longer resolve is skipped
    with a WARNING. Deleted runs are never returned.
    """
    if not _KEY_PATTERN.fullmatch(key):
        raise CacheError(f"invalid cache key {key!r}: expected 64 lowercase hex digits")
    if not _ENTRY_POINT_PATTERN.fullmatch(entry_point):
        raise CacheError(f"invalid entry point {entry_point!r}: expected letters, digits, _.-")

    filter_string = (
        f"tags.`{CACHE_KEY_TAG}` = '{key}' and tags.`{STEP_TAG}` = '{entry_point}' "
        f"and attributes.status = '{RunStatus.to_string(RunStatus.FINISHED)}'"
    )
    candidates = _search_all(client, experiment_id, filter_string)
    candidates.sort(key=lambda run: run.info.run_id)
    candidates.sort(key=lambda run: run.info.start_time or 0, reverse=True)

    for run in candidates:
        reason = missing_outputs(client, run)
        if reason is None:
            return run
        logger.warning(
            "Not reusing %s run %s because %s: running the step again",
            entry_point,
            run.info.run_id,
            reason,
        )
    return None


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=100,
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def missing_outputs(client: MlflowClient, run: Run) -> str | None:
    """Return why a finished step run's outputs cannot be used, or None if they can.

    load needs its split folder, train its model and evaluate its accuracy
    metric. Other entry points have no recorded outputs to check.
    """
    entry_point = run.data.tags.get(STEP_TAG)
    if entry_point == "load":
        return _missing_files(client, run, DATA_URI_TAG, SPLIT_FILES)
    if entry_point == "train":
        return _missing_files(client, run, MODEL_URI_TAG, (MODEL_FILE,))
    if entry_point == "evaluate" and EVALUATE_METRIC not in run.data.metrics:
        return f"metric {EVALUATE_METRIC!r} is missing"
    return None


def _missing_files(client: MlflowClient, run: Run, tag: str, names: Iterable[str]) -> str | None:
    uri = run.data.tags.get(tag)
    if not uri:
        return f"tag {tag} is missing"
    try:
        listing = mlflow.artifacts.list_artifacts(
            artifact_uri=uri, tracking_uri=client.tracking_uri
        )
    except (MlflowException, OSError) as exc:
        return f"{uri} cannot be listed ({_first_line(exc)})"
    present = {PurePosixPath(info.path).name for info in listing if not info.is_dir}
    absent = [name for name in names if name not in present]
    if absent:
        return f"{uri} lacks {', '.join(absent)}"
    return None


def reuse_tags(entry_point: str, run_id: str) -> dict[str, str]:
    """Return the parent-run tag that links a reused step run."""
    return {CACHED_RUN_TAG_PREFIX + entry_point: run_id}


# --- Code version -------------------------------------------------------------


def step_code_version(work_dir: Path, entry_point: str) -> str:
    """Return a content hash of the code an entry point runs.

    Covers the entry point's command in MLproject and every project file that
    the command starts (``python -m pkg.mod`` or ``python script.py``) or
    imports, directly or through other project modules. Parameter declarations
    are left out because the key contains the effective values, and the
    environment file because ``environment_spec`` covers it. Line endings are
    normalised so that a Windows checkout hashes alike.
    """
    work_dir = work_dir.resolve()
    project = _read_yaml(work_dir / "MLproject")
    entry_points = project.get("entry_points") or {}
    if entry_point not in entry_points:
        raise CacheError(
            f"unknown entry point {entry_point!r} in {work_dir / 'MLproject'}: "
            f"expected one of {', '.join(entry_points)}"
        )
    command = str(entry_points[entry_point].get("command", ""))

    digest = hashlib.sha256(command.encode("utf-8") + b"\0")
    for path in step_source_files(work_dir, command):
        digest.update(path.relative_to(work_dir).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).digest())
    return "sha256:" + digest.hexdigest()


def step_source_files(work_dir: Path, command: str) -> list[Path]:
    """Return the project's Python files that an entry point command runs, sorted.

    Imports are read statically, in every branch and function, so a module
    that is imported only sometimes still counts. When the command starts
    neither a module nor a script, every Python file of the project counts.
    """
    # NOTE: modules loaded by importlib or by name in a string, and data files that a
    # step reads next to its code, are not seen. A change to them needs --force.
    work_dir = work_dir.resolve()
    roots, start = _command_start(work_dir, command)
    if not start:
        return _all_python_files(work_dir)

    seen: set[Path] = set()
    pending = list(start)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path, roots):
            pending.extend(_module_files(module, roots))
    return sorted(seen)


def _command_start(work_dir: Path, command: str) -> tuple[list[Path], list[Path]]:
    try:
        tokens = shlex.split(command)
    except ValueError:
        return [work_dir], []
    for index, token in enumerate(tokens):
        if token == "-m" and index + 1 < len(tokens):
            module = tokens[index + 1]
            files = _module_files(module, [work_dir])
            main = work_dir.joinpath(*module.split("."), "__main__.py")
            return [work_dir], files + ([main] if main.is_file() else [])
        if token.endswith(".py") and (work_dir / token).is_file():
            script = (work_dir / token).resolve()
            # Python puts the script's folder first on sys.path.
            return [script.parent, work_dir], [script]
    return [work_dir], []


def _imported_modules(path: Path, roots: list[Path]) -> set[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        logger.debug("Cannot parse %s, so its imports are not followed", path)
        return set()
    package = _package_of(path, roots)

    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_module(node, package)
            if base is None:
                continue
            if base:
                modules.add(base)
            # `from package import name` may name a submodule.
            modules.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return modules


def _absolute_module(node: ast.ImportFrom, package: list[str] | None) -> str | None:
    if node.level == 0:
        return node.module or ""
    if package is None or node.level - 1 > len(package):
        return None
    parent = package[: len(package) - (node.level - 1)]
    return ".".join([*parent, *([node.module] if node.module else [])])


def _package_of(path: Path, roots: list[Path]) -> list[str] | None:
    for root in roots:
        if path.is_relative_to(root):
            return list(path.parent.relative_to(root).parts)
    return None


def _module_files(module: str, roots: list[Path]) -> list[Path]:
    """Files that importing ``module`` executes: package ``__init__`` files and the module."""
    parts = [part for part in module.split(".") if part]
    for root in roots:
        files: list[Path] = []
        for depth in range(1, len(parts) + 1):
            stem = root.joinpath(*parts[:depth])
            if (stem / "__init__.py").is_file():
                files.append((stem / "__init__.py").resolve())
            elif stem.with_suffix(".py").is_file() and depth == len(parts):
                files.append(stem.with_suffix(".py").resolve())
            elif not stem.is_dir():
                break
        if files:
            return files
    return []


def _all_python_files(work_dir: Path) -> list[Path]:
    found = []
    for directory, subdirs, names in os.walk(work_dir):
        subdirs[:] = [name for name in subdirs if not _is_skipped(name)]
        found.extend(Path(directory, name) for name in names if name.endswith(".py"))
    return sorted(found)


def _is_skipped(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_DIRS


# --- Environment ---------------------------------------------------------------


def environment_spec(work_dir: Path, env_manager: str) -> str:
    """Describe the environment the steps run in, as one line of ``name=value`` parts.

    Names the env manager and hashes the environment file that MLflow picks
    for the project (docker_env, python_env, conda_env, then python_env.yaml
    or conda.yaml in the project folder), parsed so that comments and layout
    do not count. With ``local`` the steps run in the caller's interpreter, so
    its version and the hash of its installed packages count too.
    """
    if env_manager not in ENV_MANAGERS:
        raise CacheError(
            f"invalid env_manager={env_manager!r}: expected one of {', '.join(ENV_MANAGERS)}"
        )
    project = _read_yaml(work_dir / "MLproject")
    parts = [f"env_manager={env_manager}", _environment_file_part(work_dir, project)]
    if env_manager == "local":
        parts.append(f"python={platform.python_version()}")
        parts.append(f"packages={installed_packages_digest()}")
    return " ".join(parts)


def _environment_file_part(work_dir: Path, project: Mapping[str, Any]) -> str:
    if "docker_env" in project:
        return "docker_env=" + _sha256_text(_canonical_json(project["docker_env"]))
    for name in ("python_env", "conda_env"):
        if project.get(name):
            return f"{project[name]}={_yaml_digest(work_dir / project[name])}"
    for default in ("python_env.yaml", "conda.yaml"):
        if (work_dir / default).is_file():
            return f"{default}={_yaml_digest(work_dir / default)}"
    return "environment_file=none"


def installed_packages_digest() -> str:
    """Return a hash of the ``name==version`` list of this interpreter's packages."""
    pins = {
        f"{dist.metadata['Name'].lower()}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    return _sha256_text("\n".join(sorted(pins)))


def _yaml_digest(path: Path) -> str:
    return _sha256_text(_canonical_json(_read_yaml(path)))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            content = yaml.safe_load(stream)
    except OSError as exc:
        raise CacheError(f"failed to read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CacheError(f"invalid YAML in {path}: {_first_line(exc)}") from exc
    return content if isinstance(content, dict) else {}


# --- Inputs --------------------------------------------------------------------


def step_inputs(
    client: MlflowClient,
    entry_point: str,
    params: Mapping[str, Any],
    *,
    work_dir: Path | None = None,
) -> dict[str, str] | None:
    """Return the identity of a step's inputs, or None if the step cannot be cached.

    For each non-empty ``data_uri``, ``model_uri`` or ``data_path`` parameter
    the result contains the value and ``<name>_digest``, a content digest. A data
    set name in ``data_path`` has no digest: the name and the environment
    identify it. A relative local ``data_path`` is relative to ``work_dir``,
    the project folder the step runs in. evaluate with an empty ``model_uri``
    takes the newest train run, which changes over time, so it is never
    cached. An input that cannot be read gives None with a WARNING, and the
    step then reports the error.
    """
    if entry_point == "evaluate" and not params.get("model_uri"):
        logger.info("evaluate with no model_uri picks the newest train run: not cached")
        return None

    digest_functions: dict[str, Callable[[str], str | None]] = {
        "data_path": lambda value: data_source_digest(client, value, work_dir),
        "data_uri": lambda value: split_folder_digest(client, value),
        "model_uri": lambda value: model_digest(client, value),
    }
    inputs: dict[str, str] = {}
    for name, digest_of in digest_functions.items():
        value = str(params.get(name) or "")
        if not value:
            continue
        try:
            digest = digest_of(value)
        except (MlflowException, OSError, ValueError) as exc:
            logger.warning(
                "Cannot read %s=%r of %s (%s): running it without the cache",
                name,
                value,
                entry_point,
                _first_line(exc),
            )
            return None
        inputs[name] = value
        if digest is not None:
            inputs[f"{name}_digest"] = digest
    return inputs


def split_folder_digest(client: MlflowClient, data_uri: str) -> str:
    """Return the content digest of a split folder.

    Takes the ``pipeline.data_digest`` tag of the run that wrote the folder
    when it records one for this URI, and otherwise hashes the downloaded files.
    """
    recorded = _recorded_digest(
        client, _run_id_of(data_uri), DATA_URI_TAG, data_uri, DATA_DIGEST_TAG
    )
    return recorded or _downloaded_digest(client, data_uri)


def model_digest(client: MlflowClient, model_uri: str) -> str:
    """Return the content digest of a model folder.

    Takes the ``pipeline.model_digest`` tag of the train run that logged the
    model when it records one for this URI, and otherwise hashes the
    downloaded model files.
    """
    run_id = _run_id_of(model_uri)
    if run_id is None and model_uri.startswith("models:/m-"):
        run_id = client.get_logged_model(model_uri.removeprefix("models:/")).source_run_id
    recorded = _recorded_digest(client, run_id, MODEL_URI_TAG, model_uri, MODEL_DIGEST_TAG)
    return recorded or _downloaded_digest(client, model_uri)


def data_source_digest(
    client: MlflowClient, data_path: str, work_dir: Path | None = None
) -> str | None:
    """Return the content digest of the data file or folder that ``data_path`` names.

    A relative local path is resolved against ``work_dir`` (default: the
    current directory), because the load step opens it from the project
    folder it runs in. http(s) URLs are streamed, and other URIs are
    downloaded through MLflow. Returns None for a value that is neither a URI
    nor an existing local path, such as the name of a built-in data set.
    """
    value = data_path.strip()
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        local = Path(value).expanduser()
        if work_dir is not None and not local.is_absolute():
            local = work_dir / local
        return content_digest(local) if local.exists() else None
    if scheme == "file":
        return content_digest(Path(url2pathname(parsed.path)))
    if scheme in ("http", "https"):
        return _url_digest(value)
    return _downloaded_digest(client, value)


def content_digest(path: Path) -> str:
    """Return ``sha256:<hex>`` of a file, or of a folder's relative paths and file contents.

    Raises FileNotFoundError when the path does not exist.
    """
    if path.is_file():
        with open(path, "rb") as stream:
            return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    digest = hashlib.sha256()
    for file in sorted(item for item in path.rglob("*") if item.is_file()):
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(content_digest(file).encode("ascii") + b"\n")
    return "sha256:" + digest.hexdigest()


def _recorded_digest(
    client: MlflowClient, run_id: str | None, uri_tag: str, uri: str, digest_tag: str
) -> str | None:
    if run_id is None:
        return None
    tags = client.get_run(run_id).data.tags
    # The run may have written other outputs: the digest is only valid for the URI it tags.
    if tags.get(uri_tag) == uri:
        return tags.get(digest_tag) or None
    return None


def _run_id_of(uri: str) -> str | None:
    if not uri.startswith("runs:/"):
        return None
    run_id = uri.removeprefix("runs:/").split("/", 1)[0]
    return run_id or None


def _downloaded_digest(client: MlflowClient, uri: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri
        )
        return content_digest(Path(local))


def _url_digest(url: str) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
        while chunk := response.read(_HASH_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- One call for the orchestrator ----------------------------------------------


def lookup_step(
    client: MlflowClient,
    experiment_id: str,
    entry_point: str,
    params: Mapping[str, object],
    *,
    work_dir: Path,
    env_manager: str,
    use_cache: bool = True,
) -> CacheLookup:
    """Compute a step's cache key and find a finished run to reuse.

    With ``use_cache`` False (``--no-cache`` or ``--force <step>``) the key
    and tags are still computed, so the new run can be reused later, but no
    run is looked up.
    """
    mlproject = work_dir / "MLproject"
    normalized = normalize_params(entry_point, params, mlproject=mlproject)
    inputs = step_inputs(client, entry_point, normalized, work_dir=work_dir)
    if inputs is None:
        return CacheLookup(entry_point, key=None)

    tags = cache_tags(
        entry_point,
        normalized,
        code_version=step_code_version(work_dir, entry_point),
        env_spec=environment_spec(work_dir, env_manager),
        inputs=inputs,
        mlproject=mlproject,
    )
    key = tags[CACHE_KEY_TAG]
    if not use_cache:
        logger.info("Cache off for %s: running it (key %s)", entry_point, key[:12])
        return CacheLookup(entry_point, key, tags)

    run = find_cached_run(client, experiment_id, entry_point, key)
    if run is None:
        logger.info("No cached %s run with key %s: running it", entry_point, key[:12])
    else:
        logger.info("Reusing %s run %s (key %s)", entry_point, run.info.run_id, key[:12])
    return CacheLookup(entry_point, key, tags, run)
