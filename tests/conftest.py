"""Fixtures shared by the tests: a fresh SQLite tracking store per test and
helpers that run the project's entry points through the real ``mlflow run``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run

PROJECT_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# A run of `mlflow run` on Iris takes about 6 s here; this bounds a hung one.
MLFLOW_RUN_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for the environments `--env-manager uv` builds, kept per session."""
    return tmp_path_factory.mktemp("mlflow-envs")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_root: Path) -> Iterator[str]:
    """Point MLflow, in this process and in subprocesses, at a new SQLite store.

    The working directory moves to ``tmp_path`` too, so artifacts and any
    default ``mlflow.db`` land there and nowhere else.
    """
    yield use_tracking_store(monkeypatch, tmp_path, env_root)
    assert mlflow.active_run() is None, "a test left an MLflow run active"


def use_tracking_store(monkeypatch: pytest.MonkeyPatch, folder: Path, env_root: Path) -> str:
    """Create the environment of ``tracking_uri`` for a store in ``folder``.

    Fixtures with a wider scope than a test call this with their own
    ``pytest.MonkeyPatch.context()``.
    """
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENV_ROOT", str(env_root))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    # `mlflow run --env-manager local` starts steps with the `python` on PATH.
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    mlflow.set_tracking_uri(uri)
    return uri


@dataclass
class MlflowRunResult:
    returncode: int
    stdout: str
    stderr: str
    run: Run | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_entry_point(
    entry_point: str,
    params: dict[str, object] | None = None,
    *,
    env_manager: str = "local",
    experiment_name: str | None = None,
    project_uri: str = str(PROJECT_DIR),
    extra_args: list[str] | None = None,
) -> MlflowRunResult:
    """Run ``mlflow run <project> -e <entry_point>`` in a subprocess.

    The run is found by the id that `mlflow run` prints, so the result contains
    the run as the tracking store recorded it.
    """
    command = [
        str(VENV_BIN / "mlflow"),
        "run",
        project_uri,
        "-e",
        entry_point,
        "--env-manager",
        env_manager,
    ]
    if experiment_name:
        command += ["--experiment-name", experiment_name]
    for key, value in (params or {}).items():
        command += ["-P", f"{key}={value}"]
    command += extra_args or []
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=MLFLOW_RUN_TIMEOUT_S, check=False
    )
    match = re.search(r"in run with ID '([0-9a-f]{32})'", completed.stderr)
    run = mlflow.get_run(match.group(1)) if match else None
    return MlflowRunResult(completed.returncode, completed.stdout, completed.stderr, run)


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """Start one temporary Prefect server for the session's flows and yield its API URL.

    Flows called in-process use it directly. Subprocesses reach it through
    PREFECT_API_URL, which saves each of them the start of a temporary server
    of its own (4 to 5 s on the idle 2-core development machine).
    """
    # Imported here so that test modules without flows do not load Prefect.
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield PREFECT_API_URL.value()
