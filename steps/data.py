"""Data sets, train/test splits and the artifact folder that carries them.

A split folder holds ``train.parquet``, ``test.parquet`` and ``metadata.json``
(the label column, the feature columns and the classes). Steps pass it on as
an artifact URI such as ``runs:/<run_id>/data``, never as a local path, so a
step can run on another machine than the one before it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException
from sklearn import datasets
from sklearn.model_selection import train_test_split

from steps.runner import StepError

logger = logging.getLogger(__name__)

SPLITS_ARTIFACT_PATH = "data"
TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"
METADATA_FILE = "metadata.json"
DEFAULT_DATASET = "iris"
DEFAULT_TARGET = "target"


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    test: pd.DataFrame
    target: str

    @property
    def feature_columns(self) -> list[str]:
        return [column for column in self.train.columns if column != self.target]


class ArtifactUriSource(DatasetSource):
    """A dataset source at an MLflow artifact URI (``runs:/`` or ``mlflow-artifacts:/``).

    MLflow 3.17 resolves no dataset source for these schemes by itself.
    """

    def __init__(self, uri: str):
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_artifact"

    def load(self, dst_path: str | None = None) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=self._uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> ArtifactUriSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> ArtifactUriSource:
        return cls(source_dict["uri"])


def load_builtin(name: str = DEFAULT_DATASET) -> pd.DataFrame:
    """Return a data set that ships with scikit-learn, labels as class names."""
    if name != DEFAULT_DATASET:
        raise StepError(f"unknown data set {name!r}: expected {DEFAULT_DATASET!r}")
    bunch = datasets.load_iris(as_frame=True)
    frame = bunch.data.copy()
    frame[DEFAULT_TARGET] = bunch.target_names[bunch.target.to_numpy()]
    return frame


def split_frame(frame: pd.DataFrame, target: str, test_size: float, random_state: int) -> Splits:
    """Split rows into train and test, stratified on the label column."""
    counts = frame[target].value_counts()
    rare = counts[counts < 2]
    if not rare.empty:
        raise StepError(
            f"class {rare.index[0]!r} of column {target!r} has {rare.iloc[0]} row; "
            "stratified splitting needs at least 2 rows in every class"
        )
    try:
        train, test = train_test_split(
            frame, test_size=test_size, random_state=random_state, stratify=frame[target]
        )
    except ValueError as exc:
        raise StepError(
            f"cannot split {len(frame)} rows with test_size={test_size}: {exc}"
        ) from exc
    return Splits(train.reset_index(drop=True), test.reset_index(drop=True), target)


def write_splits(splits: Splits, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    splits.train.to_parquet(directory / TRAIN_FILE, index=False)
    splits.test.to_parquet(directory / TEST_FILE, index=False)
    metadata = {
        "target": splits.target,
        "features": splits.feature_columns,
        "classes": sorted(map(str, splits.train[splits.target].unique())),
        "rows": {"train": len(splits.train), "test": len(splits.test)},
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def log_splits(splits: Splits) -> str:
    """Log the splits as artifacts of the active run and return their URI."""
    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        write_splits(splits, Path(tmp))
        mlflow.log_artifacts(tmp, artifact_path=SPLITS_ARTIFACT_PATH)
    return f"runs:/{run_id}/{SPLITS_ARTIFACT_PATH}"


def read_splits(data_uri: str, parameter: str = "data_uri") -> Splits:
    """Download a split folder from an artifact URI and read it.

    Raises StepError naming the parameter and the URI when the folder cannot
    be downloaded or lacks one of its files.
    """
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=data_uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise StepError(
                f"invalid {parameter}={data_uri!r}: cannot download it ({_first_line(exc)})"
            ) from exc
        missing = [
            name for name in (TRAIN_FILE, TEST_FILE, METADATA_FILE) if not (local / name).is_file()
        ]
        if missing:
            raise StepError(
                f"invalid {parameter}={data_uri!r}: not a split folder written by the load "
                f"step (missing {', '.join(missing)})"
            )
        metadata = json.loads((local / METADATA_FILE).read_text(encoding="utf-8"))
        train = pd.read_parquet(local / TRAIN_FILE)
        test = pd.read_parquet(local / TEST_FILE)
    return Splits(train, test, metadata["target"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
