"""Train/test splits, the artifact folder that carries them, and dataset records.

A split folder contains ``train.parquet``, ``test.parquet`` and ``metadata.json``
(the label column, the feature columns, the classes and the record of the data
set the splits came from). Steps pass it on as an artifact URI such as
``runs:/<run_id>/data``, never as a local path, so a step can run on another
machine than the one before it.

A dataset record is what MLflow shows as a run's dataset input: name, digest,
source, schema and row count. The load step describes the user's table once;
the record travels in ``metadata.json`` so that train and evaluate log the
same data set on their own runs without reading the original file again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from sklearn.model_selection import train_test_split

from steps.runner import StepError

logger = logging.getLogger(__name__)

SPLITS_ARTIFACT_PATH = "data"
TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"
METADATA_FILE = "metadata.json"
DEFAULT_DATASET = "iris"
DEFAULT_TARGET = "target"

# Hex characters of SHA-256 kept as a dataset digest. MLflow stores digests
# in a 36-character column and shows them in the UI, so the full hash is too long.
DIGEST_LENGTH = 16

# Classes named in an error message before the rest are counted.
MAX_CLASSES_SHOWN = 5


@dataclass(frozen=True)
class DatasetRecord:
    """A data set as MLflow records it for a run input, without the data itself."""

    name: str
    digest: str
    source_type: str
    source: dict[str, Any]
    schema: Schema
    rows: int
    elements: int

    @classmethod
    def describe(
        cls,
        frame: pd.DataFrame,
        *,
        name: str,
        source_type: str,
        source: dict[str, Any],
        digest: str | None = None,
    ) -> DatasetRecord:
        """Describe a frame. The digest defaults to a hash of its content."""
        return cls(
            name=name,
            digest=digest or frame_digest(frame),
            source_type=source_type,
            source=source,
            schema=frame_schema(frame),
            rows=len(frame),
            elements=int(frame.size),
        )

    def to_entity(self) -> Dataset:
        return Dataset(
            name=self.name,
            digest=self.digest,
            source_type=self.source_type,
            source=json.dumps(self.source),
            # The same layout as mlflow.data.pandas_dataset, so the UI renders the schema.
            schema=json.dumps({"mlflow_colspec": self.schema.to_dict()}),
            profile=json.dumps({"num_rows": self.rows, "num_elements": self.elements}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "source_type": self.source_type,
            "source": self.source,
            "schema": self.schema.to_dict(),
            "rows": self.rows,
            "elements": self.elements,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRecord:
        return cls(
            name=data["name"],
            digest=data["digest"],
            source_type=data["source_type"],
            source=data["source"],
            schema=Schema.from_json(json.dumps(data["schema"])),
            rows=data["rows"],
            elements=data["elements"],
        )


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    test: pd.DataFrame
    target: str
    # The data set the rows came from, or None for splits made from a bare frame.
    source: DatasetRecord | None = field(default=None, compare=False)

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


def column_type(column: pd.Series) -> DataType:
    """Return the MLflow type of a column from its dtype, without scanning every value.

    An object column whose values are all booleans is ``boolean``: that is how
    pandas reads a CSV column of true/false values with gaps. Any other column
    that is not boolean, numeric or datetime is ``string``.
    """
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return DataType.boolean
    if pd.api.types.is_integer_dtype(dtype):
        return DataType.integer if dtype.itemsize <= 4 else DataType.long
    if pd.api.types.is_float_dtype(dtype):
        return DataType.float if dtype.itemsize <= 4 else DataType.double
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return DataType.datetime
    if (
        pd.api.types.is_object_dtype(dtype)
        and pd.api.types.infer_dtype(column, skipna=True) == "boolean"
    ):
        return DataType.boolean
    return DataType.string


def frame_schema(frame: pd.DataFrame, *, all_required: bool = False) -> Schema:
    """Return the column schema of a frame.

    A column with missing values is optional unless ``all_required`` is set.
    Model signatures set it: to MLflow, an optional column is one a request
    may leave out, and the model needs every feature column, gaps or not.
    """
    return Schema(
        [
            ColSpec(
                column_type(frame[name]),
                name=str(name),
                required=all_required or not frame[name].hasnans,
            )
            for name in frame.columns
        ]
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """Return a content hash of every row, column name and dtype of a frame.

    Unlike MLflow's default pandas digest, which reads only the first 10,000
    rows, this one changes when any value changes.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(n), str(t)] for n, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


DATASET_LOG_ATTEMPTS = 3


def log_dataset_input(record: DatasetRecord, context: str) -> None:
    """Log a dataset record as an input of the active run, tagged with its context."""
    run_id = mlflow.active_run().info.run_id
    tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)]
    inputs = [DatasetInput(dataset=record.to_entity(), tags=tags)]
    # MLflow 3.17's SQL store checks for the dataset row and then inserts it, so
    # two runs logging the same dataset at once can both insert. The second
    # attempt finds the row and only links it to this run.
    for attempt in range(DATASET_LOG_ATTEMPTS):
        try:
            MlflowClient().log_inputs(run_id, inputs)
            return
        except MlflowException as exc:
            if "UNIQUE constraint" not in str(exc) or attempt == DATASET_LOG_ATTEMPTS - 1:
                raise
            logger.warning("Dataset %s was logged concurrently; retrying", record.name)


def log_split_inputs(splits: Splits, data_uri: str, *, split: str, context: str) -> None:
    """Log the data set the splits came from and one split as inputs of the active run.

    ``split`` is ``train`` or ``test``. The split's record points at the split
    folder ``data_uri``, and the source record, when the folder has one, at
    the user's original file.
    """
    frame = splits.train if split == "train" else splits.test
    prefix = f"{splits.source.name}-" if splits.source else ""
    record = DatasetRecord.describe(
        frame,
        name=f"{prefix}{split}",
        source_type=ArtifactUriSource._get_source_type(),
        source=ArtifactUriSource(data_uri).to_dict(),
    )
    if splits.source is not None:
        log_dataset_input(splits.source, "source")
    log_dataset_input(record, context)


def split_frame(
    frame: pd.DataFrame,
    target: str,
    test_size: float,
    random_state: int,
    *,
    source: DatasetRecord | None = None,
) -> Splits:
    """Split rows into train and test, stratified on the label column.

    Raises StepError when a class has fewer than 2 rows or ``test_size`` leaves
    either side too small to hold one row of every class.
    """
    where = f" in {source.name}" if source else ""
    counts = frame[target].value_counts()
    rare = counts[counts < 2]
    if not rare.empty:
        named = ", ".join(label_repr(label) for label in rare.index[:MAX_CLASSES_SHOWN])
        more = f" and {len(rare) - MAX_CLASSES_SHOWN} more" if len(rare) > MAX_CLASSES_SHOWN else ""
        raise StepError(
            f"class {label_repr(rare.index[0])} of column {target!r}{where} has 1 row; "
            f"stratified splitting needs at least 2 rows in every class (classes with 1 row: "
            f"{named}{more}): add rows of those classes or remove their rows"
            f"{_continuous_hint(frame[target], len(counts))}"
        )
    _check_split_sizes(len(frame), len(counts), test_size, where)

    train, test = train_test_split(
        frame, test_size=test_size, random_state=random_state, stratify=frame[target]
    )
    return Splits(train.reset_index(drop=True), test.reset_index(drop=True), target, source)


def label_repr(label: Any) -> str:
    """Return the repr of a class label, showing a numpy scalar as the plain value."""
    return repr(label.item() if isinstance(label, np.generic) else label)


def _check_split_sizes(rows: int, classes: int, test_size: float, where: str) -> None:
    # The sizes that train_test_split uses: the test side is rounded up.
    test_rows = math.ceil(test_size * rows)
    train_rows = rows - test_rows
    if test_rows >= classes and train_rows >= classes:
        return
    low, high = classes / rows, (rows - classes) / rows
    if low < high:
        advice = f"use a test_size from {low:.3g} to {high:.3g}, or add rows"
    elif low == high:
        advice = f"use test_size={low:.3g}, or add rows"
    else:
        advice = f"add rows: {classes} classes need at least {2 * classes} rows"
    raise StepError(
        f"cannot split {rows} rows{where} with test_size={test_size}: that gives "
        f"{train_rows} train and {test_rows} test rows, but each side needs at least one "
        f"row of every class ({classes}); {advice}"
    )


def _continuous_hint(labels: pd.Series, classes: int) -> str:
    if pd.api.types.is_float_dtype(labels.dtype) and classes > len(labels) // 2:
        return (
            f". The label column has {classes} distinct numbers in {len(labels)} rows: "
            "this pipeline trains a classifier, so the label must be a column of classes"
        )
    return ""


def write_splits(splits: Splits, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    splits.train.to_parquet(directory / TRAIN_FILE, index=False)
    splits.test.to_parquet(directory / TEST_FILE, index=False)
    metadata = {
        "target": splits.target,
        "features": splits.feature_columns,
        "classes": sorted(map(str, splits.train[splits.target].unique())),
        "rows": {"train": len(splits.train), "test": len(splits.test)},
        "source": splits.source.to_dict() if splits.source else None,
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
                f"invalid {parameter}={data_uri!r}: cannot download it ({_first_line(exc)}); "
                "expected the URI of a split folder written by load, such as runs:/<run_id>/data"
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
        train = _restore_missing(pd.read_parquet(local / TRAIN_FILE))
        test = _restore_missing(pd.read_parquet(local / TEST_FILE))
    source = metadata.get("source")
    record = DatasetRecord.from_dict(source) if source else None
    return Splits(train, test, metadata["target"], record)


def _restore_missing(frame: pd.DataFrame) -> pd.DataFrame:
    # Parquet gives back the gaps of an object column (booleans with missing
    # values) as None, where the frame that load wrote had NaN. The model
    # counts both as missing, but fitting on one marker keeps imputation simple.
    for name in frame.columns:
        if not pd.api.types.is_object_dtype(frame[name].dtype):
            continue
        frame[name] = frame[name].where(frame[name].notna(), np.nan)
    return frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
