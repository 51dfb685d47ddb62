"""Train/test splits and the split folder: split_frame, write_splits, read_splits."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from steps.data import Splits, read_splits, split_frame, write_splits
from steps.runner import StepError

SPLIT_FILES = {"train.parquet", "test.parquet", "metadata.json"}


@pytest.fixture
def frame() -> pd.DataFrame:
    """Thirty rows, three balanced classes, two features that identify each row."""
    return pd.DataFrame(
        {
            "width": [float(i) for i in range(30)],
            "height": [float(i * i) for i in range(30)],
            "label": ["a", "b", "c"] * 10,
        }
    )


def test_split_sizes(frame: pd.DataFrame) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)

    assert len(splits.train) == 24
    assert len(splits.test) == 6


def test_split_is_stratified(frame: pd.DataFrame) -> None:
    splits = split_frame(frame, "label", test_size=0.3, random_state=0)

    assert splits.test["label"].value_counts().to_dict() == {"a": 3, "b": 3, "c": 3}
    assert splits.train["label"].value_counts().to_dict() == {"a": 7, "b": 7, "c": 7}


def test_split_partitions_rows(frame: pd.DataFrame) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)
    train_rows = set(splits.train["width"])
    test_rows = set(splits.test["width"])

    assert not train_rows & test_rows
    assert train_rows | test_rows == set(frame["width"])


def test_split_keeps_columns(frame: pd.DataFrame) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)

    assert list(splits.train.columns) == ["width", "height", "label"]
    assert splits.target == "label"
    assert splits.feature_columns == ["width", "height"]
    assert list(splits.train.index) == list(range(24))


def test_split_seed_reproducible(frame: pd.DataFrame) -> None:
    first = split_frame(frame, "label", test_size=0.2, random_state=5)
    second = split_frame(frame, "label", test_size=0.2, random_state=5)
    other = split_frame(frame, "label", test_size=0.2, random_state=6)

    pd.testing.assert_frame_equal(first.test, second.test)
    assert set(first.test["width"]) != set(other.test["width"])


def test_split_single_row_class_rejected(frame: pd.DataFrame) -> None:
    lonely = pd.concat([frame, pd.DataFrame({"width": [99.0], "height": [0.0], "label": ["d"]})])

    with pytest.raises(StepError, match=r"class 'd' of column 'label' has 1 row"):
        split_frame(lonely, "label", test_size=0.2, random_state=0)


def test_split_test_too_small_rejected(frame: pd.DataFrame) -> None:
    # Two test rows cannot hold one row of each of three classes.
    with pytest.raises(StepError, match=r"cannot split 30 rows with test_size=0.05"):
        split_frame(frame, "label", test_size=0.05, random_state=0)


def test_write_splits_files(frame: pd.DataFrame, tmp_path: Path) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)

    write_splits(splits, tmp_path / "data")

    assert {path.name for path in (tmp_path / "data").iterdir()} == SPLIT_FILES


def test_write_splits_metadata(frame: pd.DataFrame, tmp_path: Path) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)

    write_splits(splits, tmp_path)
    metadata = json.loads((tmp_path / "metadata.json").read_text(encoding="utf-8"))

    assert metadata["target"] == "label"
    assert metadata["features"] == ["width", "height"]
    assert metadata["classes"] == ["a", "b", "c"]
    assert metadata["rows"] == {"train": 24, "test": 6}


def assert_same_splits(actual: Splits, expected: Splits) -> None:
    assert actual.target == expected.target
    pd.testing.assert_frame_equal(actual.train, expected.train)
    pd.testing.assert_frame_equal(actual.test, expected.test)


def test_read_splits_local_folder(frame: pd.DataFrame, tmp_path: Path) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)
    write_splits(splits, tmp_path / "data")

    assert_same_splits(read_splits(str(tmp_path / "data")), splits)


def test_read_splits_run_artifacts(frame: pd.DataFrame, tmp_path: Path, tracking_uri: str) -> None:
    splits = split_frame(frame, "label", test_size=0.2, random_state=0)
    write_splits(splits, tmp_path / "folder")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path / "folder"), artifact_path="data")

    assert_same_splits(read_splits(f"runs:/{run.info.run_id}/data"), splits)


def test_read_splits_missing_file(frame: pd.DataFrame, tmp_path: Path) -> None:
    write_splits(split_frame(frame, "label", test_size=0.2, random_state=0), tmp_path)
    (tmp_path / "test.parquet").unlink()

    with pytest.raises(StepError, match=r"invalid data_uri='.*': .*missing test\.parquet"):
        read_splits(str(tmp_path))


def test_read_splits_unknown_run(tracking_uri: str) -> None:
    uri = "runs:/0123456789abcdef0123456789abcdef/data"

    with pytest.raises(StepError) as caught:
        read_splits(uri)

    assert str(caught.value).startswith(f"invalid data_uri={uri!r}: ")
    assert "\n" not in str(caught.value)


def test_read_splits_names_parameter(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"^invalid source_uri="):
        read_splits(str(tmp_path / "absent"), parameter="source_uri")
