"""Reading, checking and preparing user tables, and the pipeline that learns from them.

Pure functions only: no `mlflow run`. The tables are data sets that ship with
scikit-learn, written by the tests to CSV and Parquet, some with missing
values and categorical and boolean columns added.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io
from mlflow.types import DataType
from sklearn.datasets import load_iris, load_wine

from steps import tables
from steps.data import split_frame
from steps.model import feature_kinds, fit_and_score
from steps.runner import StepError
from steps.tables import (
    canonical_labels,
    detect_format,
    load_builtin,
    mask_credentials,
    parse_column_list,
    read_table,
)
from steps.train import SKOPS_TRUSTED_TYPES, model_signature

CULTIVARS = np.array(["barolo", "grignolino", "barbera"])


def wine_table() -> pd.DataFrame:
    """Wine with gaps, text, boolean, constant, empty and identifier columns added.

    The label ``cultivar`` is text, and two rows have none.
    """
    bunch = load_wine(as_frame=True)
    frame = bunch.data.copy()
    rng = np.random.default_rng(0)
    frame.loc[rng.random(len(frame)) < 0.1, "alcohol"] = np.nan
    high = frame["proline"] > 800
    frame["region"] = np.where(high, "north", np.where(rng.random(len(frame)) < 0.5, "south", None))
    frame["organic"] = rng.random(len(frame)) < 0.5
    gaps = rng.random(len(frame)) < 0.2
    frame["certified"] = pd.array(
        np.where(gaps, None, rng.random(len(frame)) < 0.5), dtype="boolean"
    )
    frame["constant"] = 1
    frame["empty"] = np.nan
    frame["id"] = np.arange(len(frame))
    frame["cultivar"] = CULTIVARS[bunch.target.to_numpy()]
    frame.loc[[3, 50], "cultivar"] = None
    return frame


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return wine_table()


@pytest.fixture
def wine_csv(wine: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "wine.csv"
    wine.to_csv(path, index=False)
    return path


@pytest.fixture
def wine_parquet(wine: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "wine.parquet"
    wine.to_parquet(path, index=False)
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def iris_csv(tmp_path: Path, name: str = "iris.csv") -> Path:
    return write(tmp_path / name, load_builtin("iris").to_csv(index=False))


def error_of(path: Path | str, **options: str) -> str:
    options.setdefault("target", "target")
    with pytest.raises(StepError) as caught:
        read_table(str(path), **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


# Reading files


def test_csv_columns_and_types(wine_csv: Path) -> None:
    table = read_table(str(wine_csv), target="cultivar", drop_columns="id")
    dtypes = table.frame.dtypes

    assert table.feature_columns == [
        *load_wine().feature_names,
        "region",
        "organic",
        "certified",
    ]
    assert dtypes["alcohol"] == np.float64
    assert dtypes["magnesium"] == np.float64
    assert isinstance(dtypes["region"], pd.StringDtype)
    assert dtypes["organic"] == np.bool_
    assert pd.api.types.is_object_dtype(dtypes["certified"])
    assert isinstance(dtypes["cultivar"], pd.StringDtype)


def test_parquet_matches_csv(wine_csv: Path, wine_parquet: Path) -> None:
    from_csv = read_table(str(wine_csv), target="cultivar", drop_columns="id")
    from_parquet = read_table(str(wine_parquet), target="cultivar", drop_columns="id")

    assert from_parquet.feature_columns == from_csv.feature_columns
    assert from_parquet.frame.dtypes.to_dict() == from_csv.frame.dtypes.to_dict()
    assert from_parquet.frame["certified"].isna().sum() == from_csv.frame["certified"].isna().sum()


def test_missing_labels_dropped(wine_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = read_table(str(wine_csv), target="cultivar")

    assert table.rows_missing_target == 2
    assert len(table.frame) == 176
    assert "Dropped 2 of 178 rows" in caplog.text


def test_constant_and_empty_dropped(wine_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = read_table(str(wine_csv), target="cultivar")

    assert table.dropped == {"requested": [], "constant": ["constant"], "all missing": ["empty"]}
    assert "constant" not in table.frame.columns
    assert "empty" not in table.frame.columns
    assert "constant columns" in caplog.text
    assert "'constant'" in caplog.text
    assert "'empty'" in caplog.text


def test_identifier_warned(wine_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = read_table(str(wine_csv), target="cultivar")

    assert "id" in table.feature_columns
    assert "Column 'id' has a different value in every row" in caplog.text


def test_drop_columns_removed(wine_csv: Path) -> None:
    table = read_table(str(wine_csv), target="cultivar", drop_columns=" id , region,id")

    assert "id" not in table.frame.columns
    assert "region" not in table.frame.columns
    assert table.dropped["requested"] == ["id", "region"]


def test_source_record(wine_csv: Path) -> None:
    table = read_table(str(wine_csv), target="cultivar")
    record = table.source
    sha256 = hashlib.sha256(wine_csv.read_bytes()).hexdigest()

    assert record.name == "wine.csv"
    assert record.digest == sha256[:16]
    assert record.source_type == "local"
    assert record.source == {"uri": wine_csv.resolve().as_uri()}
    assert record.rows == 178
    assert record.schema.input_names()[-1] == "cultivar"
    assert len(record.schema.input_names()) == 20


def test_file_uri_read(wine_csv: Path) -> None:
    table = read_table(wine_csv.resolve().as_uri(), target="cultivar")

    assert len(table.frame) == 176


def test_gzip_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "iris-table"
    path.write_bytes(gzip.compress(load_builtin("iris").to_csv(index=False).encode()))

    assert detect_format(path) == ("csv", "gzip")
    assert len(read_table(str(path), target="target").frame) == 150


def test_parquet_by_content(wine: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "wine.data"
    wine.to_parquet(path, index=False)

    assert detect_format(path) == ("parquet", None)
    assert len(read_table(str(path), target="cultivar").frame) == 176


def test_format_forced(tmp_path: Path) -> None:
    path = iris_csv(tmp_path, "iris.parquet")

    assert detect_format(path, "csv") == ("csv", None)
    assert len(read_table(str(path), target="target", data_format="csv").frame) == 150


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_other_separators(tmp_path: Path, separator: str) -> None:
    path = write(tmp_path / "iris.csv", load_builtin("iris").to_csv(index=False, sep=separator))

    table = read_table(str(path), target="target")

    assert len(table.feature_columns) == 4


def test_tsv_with_dotted_name(tmp_path: Path) -> None:
    path = write(tmp_path / "iris.v2.tsv", load_builtin("iris").to_csv(index=False, sep="\t"))

    assert len(read_table(str(path), target="target").feature_columns) == 4


@pytest.mark.parametrize(
    ("name", "classes"), [("iris", 3), ("wine", 3), ("breast_cancer", 2), ("digits", 10)]
)
def test_builtin_data_sets(name: str, classes: int) -> None:
    table = read_table(name, target="target")

    assert table.frame["target"].nunique() == classes
    assert table.source.name == name
    assert table.source.source_type == "scikit-learn"
    assert table.source.rows == len(table.frame)


def test_builtin_labels_are_names() -> None:
    labels = set(read_table("iris", target="target").frame["target"])

    assert labels == {"setosa", "versicolor", "virginica"}


# Bad input: one StepError naming the file and the problem


def test_file_not_found(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent.csv")

    assert message.startswith(f"invalid data_path='{tmp_path / 'absent.csv'}': file not found")


def test_folder_rejected(tmp_path: Path) -> None:
    assert "a folder, not a CSV or Parquet file" in error_of(tmp_path)


def test_remote_file_uri_rejected() -> None:
    assert "not on host 'example.org'" in error_of("file://example.org/data.csv")


def test_http_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/iris.csv"

    message = error_of(url)

    assert message.startswith(f"invalid data_path={url!r}: cannot download it (")
    assert "Connection refused" in message


def test_http_silent_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "HTTP_TIMEOUT_S", 0.5)
    # A listening socket that never accepts: the connection opens, no response arrives.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/iris.csv"
        message = error_of(url)

    assert message.startswith(f"invalid data_path={url!r}: cannot download it (")
    assert "timed out" in message


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "empty.csv", content)

    assert error_of(path) == f"invalid data_path='{path}': the file is empty"


def test_header_only_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "header.csv", "a,b,target\n")

    assert error_of(path) == f"invalid data_path='{path}': the table has a header but no rows"


def test_header_only_parquet(tmp_path: Path) -> None:
    path = tmp_path / "header.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=float), "target": pd.Series([], dtype=str)}).to_parquet(
        path
    )

    assert "the table has a header but no rows" in error_of(path)


def test_malformed_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", "a,b,target\n1,2,x\n1,2,3,4,5\n")
    message = error_of(path)

    assert message.startswith(f"invalid data_path='{path}': cannot read it as CSV")
    assert "Expected 3 fields in line 3, saw 5" in message


def test_binary_csv(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"a,target\n\xff\xfe\x00\x81,x\n")

    assert "not UTF-8 text" in error_of(path)


def test_not_parquet(tmp_path: Path) -> None:
    path = iris_csv(tmp_path)
    message = error_of(path, data_format="parquet")

    assert message.startswith(f"invalid data_path='{path}': cannot read it as Parquet")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv.gz"
    path.write_bytes(gzip.compress(b"a,target\n1,x\n" * 100)[:40])

    assert "cannot read it as CSV" in error_of(path)


def test_duplicate_csv_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "twice.csv", "a,b,a,target,b,a\n1,2,3,x,4,5\n")
    message = error_of(path)

    assert "duplicate column names 'a' (3 times), 'b' (2 times)" in message
    assert message.startswith(f"invalid data_path='{path}'")


def test_duplicate_parquet_columns(tmp_path: Path) -> None:
    path = tmp_path / "twice.parquet"
    table = pa.Table.from_arrays(
        [pa.array([1, 2]), pa.array([3, 4]), pa.array(["x", "y"])], names=["a", "a", "target"]
    )
    pq.write_table(table, path)

    assert "duplicate column names 'a' (2 times)" in error_of(path)


def test_target_missing_lists_columns(tmp_path: Path) -> None:
    path = iris_csv(tmp_path)
    message = error_of(path, target="Target")

    assert message.startswith(f"invalid target='Target': {path} has no such column")
    assert "(did you mean 'target'?)" in message
    assert "its columns are 'sepal length (cm)', 'sepal width (cm)'" in message


def test_target_all_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "unlabelled.csv", "a,target\n1,\n2,\n")

    assert error_of(path) == (
        f"invalid target='target': column 'target' of {path} has no values in any of its 2 rows"
    )


def test_single_class(tmp_path: Path) -> None:
    path = write(tmp_path / "one.csv", "a,target\n1,x\n2,x\n3,\n")

    assert error_of(path) == (
        f"invalid target='target': column 'target' of {path} has one class ('x'); "
        "a classifier needs at least 2"
    )


def test_drop_unknown_column(tmp_path: Path) -> None:
    message = error_of(iris_csv(tmp_path), drop_columns="petal,sepal length (cm)")

    assert message.startswith("invalid drop_columns='petal,sepal length (cm)': ")
    assert "has no column 'petal'; its columns are" in message


def test_drop_target_rejected(tmp_path: Path) -> None:
    message = error_of(iris_csv(tmp_path), drop_columns="target")

    assert message == "invalid drop_columns='target': 'target' is the target column"


def test_unusable_type_named(tmp_path: Path) -> None:
    path = tmp_path / "dates.parquet"
    frame = load_builtin("iris")
    frame["measured"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.index, unit="D")
    frame.to_parquet(path)
    message = error_of(path)

    assert "columns 'measured' (datetime64[" in message
    assert "leave them out with drop_columns" in message


def test_no_features_left(tmp_path: Path) -> None:
    path = write(tmp_path / "bare.csv", "same,target\n1,x\n1,y\n")

    assert "no feature columns left besides 'target'" in error_of(path)


def test_lonely_class_named() -> None:
    frame = pd.DataFrame({"a": range(7), "target": ["x", "x", "x", "y", "y", "y", "z"]})

    with pytest.raises(StepError) as caught:
        split_frame(frame, "target", 0.3, 0)

    assert "class 'z' of column 'target' has 1 row" in str(caught.value)
    assert "add rows of those classes or remove their rows" in str(caught.value)


def test_lonely_integer_class() -> None:
    frame = pd.DataFrame({"a": range(5), "target": [1, 1, 2, 2, 3]})

    with pytest.raises(StepError, match=r"^class 3 of column 'target' has 1 row"):
        split_frame(frame, "target", 0.4, 0)


def test_split_too_small_advises() -> None:
    frame = pd.DataFrame({"a": range(8), "target": ["w", "x", "y", "z"] * 2})

    with pytest.raises(StepError) as caught:
        split_frame(frame, "target", 0.2, 0)

    assert str(caught.value) == (
        "cannot split 8 rows with test_size=0.2: that gives 6 train and 2 test rows, but "
        "each side needs at least one row of every class (4); use test_size=0.5, or add rows"
    )


# Types and small helpers


def test_float_labels_become_integers() -> None:
    labels = canonical_labels(pd.Series([1.0, 0.0, 1.0]))

    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 0, 1]


def test_fractional_labels_stay_floats() -> None:
    assert canonical_labels(pd.Series([0.5, 1.5])).dtype == np.float64


def test_boolean_labels() -> None:
    labels = canonical_labels(pd.Series([True, False], dtype=object))

    assert labels.dtype == np.bool_


def test_parse_column_list() -> None:
    assert parse_column_list("") == []
    assert parse_column_list(" a, b ,,a,c d ") == ["a", "b", "c d"]


def test_mask_credentials() -> None:
    assert mask_credentials("https://user:secret@host/x.csv") == "https://***@host/x.csv"
    assert mask_credentials("https://host/x.csv") == "https://host/x.csv"
    assert mask_credentials("runs:/abc/data/x.csv") == "runs:/abc/data/x.csv"


# The pipeline on categorical columns


@pytest.fixture(scope="module")
def wine_prepared() -> tuple[pd.DataFrame, pd.Series]:
    frame = wine_table()
    frame["certified"] = frame["certified"].astype(object).where(frame["certified"].notna(), np.nan)
    frame = frame.drop(columns=["constant", "empty", "id"]).dropna(subset=["cultivar"])
    frame["cultivar"] = frame["cultivar"].astype("str")
    return frame.drop(columns="cultivar"), frame["cultivar"]


@pytest.fixture(scope="module")
def wine_fit(wine_prepared: tuple[pd.DataFrame, pd.Series]):
    features, labels = wine_prepared
    return fit_and_score(features, labels, n_estimators=10, max_depth=0, cv_folds=2, random_state=0)


def test_feature_kinds(wine_prepared: tuple[pd.DataFrame, pd.Series]) -> None:
    numeric, categorical = feature_kinds(wine_prepared[0])

    assert categorical == ["region", "organic", "certified"]
    assert len(numeric) == 13


def test_pipeline_predicts_label_names(wine_prepared, wine_fit) -> None:
    features, labels = wine_prepared
    predictions = wine_fit.model.predict(features)

    assert set(predictions) <= set(CULTIVARS)
    assert (predictions == labels.to_numpy()).mean() > 0.9


def test_pipeline_skops_types(wine_fit) -> None:
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(wine_fit.model))

    assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES)
    assert "numpy.asarray" in untrusted


def test_pipeline_skops_round_trip(wine_prepared, wine_fit) -> None:
    features = wine_prepared[0]
    loaded = skops.io.loads(skops.io.dumps(wine_fit.model), trusted=SKOPS_TRUSTED_TYPES)

    assert (loaded.predict(features) == wine_fit.model.predict(features)).all()


def test_pipeline_request_gaps(wine_prepared, wine_fit) -> None:
    # The rows a served model gets: None and NaN gaps, and a region never seen.
    request = wine_prepared[0].head(3).astype({"organic": object}).reset_index(drop=True)
    request.loc[0, "region"] = None
    request.loc[1, "organic"] = None
    request.loc[1, "certified"] = None
    request.loc[2, "alcohol"] = np.nan
    request.loc[2, "region"] = "east"

    predictions = wine_fit.model.predict(request)

    assert len(predictions) == 3
    assert set(predictions) <= set(CULTIVARS)


def test_pipeline_boolean_only() -> None:
    features = pd.DataFrame({"flag": [True, False] * 10})
    labels = pd.Series(["on", "off"] * 10)
    result = fit_and_score(
        features, labels, n_estimators=3, max_depth=0, cv_folds=2, random_state=0
    )
    request = pd.DataFrame({"flag": pd.Series([True, None, False], dtype=object)})

    assert result.model.predict(request).tolist()[::2] == ["on", "off"]


def test_cv_folds_error_names_class() -> None:
    features = pd.DataFrame({"a": range(10)})
    labels = pd.Series(["x"] * 7 + ["y"] * 3)

    with pytest.raises(ValueError) as caught:
        fit_and_score(features, labels, n_estimators=2, max_depth=0, cv_folds=5, random_state=0)

    assert str(caught.value) == (
        "cv_folds=5 needs at least 5 training rows in every class, but the smallest class "
        "has 3 (class 'y'): lower cv_folds to 3 or add rows of that class"
    )


def test_signature_raw_columns(wine_prepared) -> None:
    features, labels = wine_prepared
    signature = model_signature(features, labels)
    types = {spec.name: spec.type for spec in signature.inputs.inputs}

    assert signature.inputs.input_names() == list(features.columns)
    assert all(spec.required for spec in signature.inputs.inputs)
    assert types["alcohol"] == DataType.double
    assert types["region"] == DataType.string
    assert types["organic"] == DataType.boolean
    assert types["certified"] == DataType.boolean
    assert signature.outputs.inputs[0].type == DataType.string


def test_iris_pipeline_matches_forest() -> None:
    bunch = load_iris(as_frame=True)
    result = fit_and_score(
        bunch.data, bunch.target, n_estimators=5, max_depth=2, cv_folds=2, random_state=3
    )

    assert len(result.classifier.estimators_) == 5
    assert result.classifier.max_depth == 2
    assert feature_kinds(bunch.data) == (list(bunch.data.columns), [])


def test_float_labels_rejected():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [1.5, 2.5, 1.5, 2.5]})
    with pytest.raises(StepError, match=r"non-integer numbers such as 1\.5"):
        tables.prepare_table(frame, target="label", source=None, where="labels.csv")


def test_integer_valued_float_labels_kept():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [1.0, 2.0, 1.0, 2.0]})
    table = tables.prepare_table(frame, target="label", source=None, where="labels.csv")
    assert table.frame["label"].nunique() == 2
