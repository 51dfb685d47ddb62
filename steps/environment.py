"""Package pins from conda.yaml, reused as the logged model's requirements.

Passing the requirements to ``log_model`` skips MLflow's requirement
inference, which starts a subprocess and takes seconds on every train run.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from steps.params import PROJECT_DIR

CONDA_YAML_PATH = PROJECT_DIR / "conda.yaml"

# Packages a process needs to load the model with mlflow.pyfunc and predict.
MODEL_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")


def read_pip_pins(path: Path = CONDA_YAML_PATH) -> dict[str, str]:
    """Return ``{package: "package==version"}`` for the pip section of a conda env."""
    with open(path, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    pins: dict[str, str] = {}
    for dependency in env.get("dependencies", []):
        if isinstance(dependency, dict):
            for requirement in dependency.get("pip", []):
                name = requirement.split("==")[0].strip().lower()
                pins[name] = requirement.strip()
    return pins


def model_requirements(path: Path = CONDA_YAML_PATH) -> list[str]:
    """Return the pinned pip requirements of the packages the model needs."""
    pins = read_pip_pins(path)
    missing = [name for name in MODEL_PACKAGES if name not in pins]
    if missing:
        raise ValueError(f"{path} has no pip pin for {', '.join(missing)}")
    return [pins[name] for name in MODEL_PACKAGES]
