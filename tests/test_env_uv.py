"""`mlflow run --env-manager uv`: the step runs in an environment built from conda.yaml.

The environment lands under MLFLOW_ENV_ROOT, which the ``tracking_uri``
fixture points at a folder kept for the test session. With a warm uv cache,
building the environment and training took 15 s on an idle 2-core machine,
and this test took 39 s on a busy one (one measurement each). With a cold
cache, uv downloads the packages from PyPI.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import PROJECT_DIR, run_entry_point

# Packages whose version in the built environment must be the conda.yaml pin.
CHECKED_PACKAGES = ("mlflow", "scikit-learn", "skops", "pandas", "pyarrow")


def conda_pins() -> dict[str, str]:
    with open(PROJECT_DIR / "conda.yaml", encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    return dict(pin.split("==") for section in sections for pin in section)


def installed_version(python: Path, package: str) -> str:
    completed = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.strip()


@pytest.mark.slow
def test_train_in_uv_environment(
    tracking_uri: str, env_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interpreter must come from this machine: uv may fetch packages from
    # PyPI but not a Python build from elsewhere.
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")

    result = run_entry_point("train", {"n_estimators": 10, "cv_folds": 2}, env_manager="uv")

    assert result.returncode == 0, result.output
    assert result.run is not None
    assert result.run.info.status == "FINISHED"
    assert result.run.data.tags["mlflow.project.env"] == "uv"
    activate = re.search(rf"source ({re.escape(str(env_root))}/[^ ]+)/bin/activate", result.stderr)
    assert activate, f"the step did not run in an environment under {env_root}:\n{result.stderr}"
    python = Path(activate.group(1)) / "bin" / "python"
    pins = conda_pins()
    for package in CHECKED_PACKAGES:
        assert installed_version(python, package) == pins[package], package

    model_uri = result.run.data.tags["pipeline.model_uri"]
    assert mlflow.models.get_model_info(model_uri).run_id == result.run.info.run_id
