"""Read the table to train on, check it, and bring its columns to the model's types.

Reads ``data_path``: the name of a data set that ships with scikit-learn
(iris, wine, breast_cancer, digits), a local CSV or Parquet file, or the
URI of one: ``file://``, ``http(s)://``, or any URI that MLflow can download,
such as ``runs:/`` and ``mlflow-artifacts:/``. A downloaded file is kept in a
temporary folder only until it is read. Returns a Table with the label
column, the feature columns and the dataset record of the table as read.
Raises StepError naming the file and the problem for every input it cannot use.

The types of a Table's columns are the ones the model is trained on and its
signature declares: ``int64`` and ``float64`` numbers; ``bool``; ``object``
for booleans with missing values, the way pandas reads such a CSV column;
and ``str`` for every other categorical column. Missing values are NaN.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse, urlsplit, urlunsplit
from urllib.request import url2pathname

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import requests
import sklearn
from mlflow.exceptions import MlflowException
from sklearn import datasets

from steps.data import (
    DEFAULT_TARGET,
    DIGEST_LENGTH,
    ArtifactUriSource,
    DatasetRecord,
    label_repr,
)
from steps.runner import StepError

logger = logging.getLogger(__name__)

BUILTIN_DATASETS: dict[str, Callable[..., Any]] = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
}

PARQUET_SUFFIXES = frozenset({".parquet", ".pq", ".parq"})
COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zip", ".zst"})
PARQUET_MAGIC = b"PAR1"
COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
}
# Separators tried, in this order, when a CSV header line has no comma.
OTHER_DELIMITERS = (";", "\t", "|")
ARTIFACT_SCHEMES = frozenset({"runs", "mlflow-artifacts", "models"})
# Seconds to wait for an HTTP server to accept the connection, and then for
# each chunk of the response.
HTTP_TIMEOUT_S = 60

# One-hot encoding gives a categorical column one model input per distinct
# value. A column with more distinct values than this gets a warning.
MANY_CATEGORIES = 1000
# Tables with fewer rows than this get no identifier warning: in a small
# table, distinct values in every row are common and mean little.
MIN_ROWS_FOR_IDENTIFIER_CHECK = 50
MAX_NAMES_SHOWN = 30


@dataclass(frozen=True)
class Table:
    """A table ready to split: the label and feature columns in the model's types."""

    frame: pd.DataFrame
    target: str
    source: DatasetRecord
    # Columns left out of the features, by reason: requested, constant, all missing.
    dropped: dict[str, list[str]]
    rows_missing_target: int

    @property
    def feature_columns(self) -> list[str]:
        return [column for column in self.frame.columns if column != self.target]


def read_table(
    data_path: str, *, target: str, drop_columns: str = "", data_format: str = "auto"
) -> Table:
    """Read a data set by name or from a file or URI, and prepare it for training.

    ``drop_columns`` is a comma-separated list of columns to leave out.
    """
    name = data_path.strip()
    if name.lower() in BUILTIN_DATASETS:
        if data_format != "auto":
            logger.warning("Ignoring data_format=%s: %s is not a file", data_format, name)
        where = name.lower()
        frame, record = _read_builtin(where)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            frame, record = read_file(name, data_format, Path(tmp))
        where = mask_credentials(name)
    return prepare_table(
        frame,
        target=target,
        drop_columns=parse_column_list(drop_columns),
        source=record,
        where=where,
    )


def load_builtin(name: str = "iris") -> pd.DataFrame:
    """Return a data set that ships with scikit-learn, with the label in column ``target``.

    Labels are class names where the data set has them (``setosa``, ``class_0``,
    ``malignant``) and digits 0 to 9 for ``digits``.
    """
    if name not in BUILTIN_DATASETS:
        raise StepError(f"unknown data set {name!r}: expected one of {', '.join(BUILTIN_DATASETS)}")
    bunch = BUILTIN_DATASETS[name](as_frame=True)
    frame = bunch.data.copy()
    frame[DEFAULT_TARGET] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    return frame


def _read_builtin(name: str) -> tuple[pd.DataFrame, DatasetRecord]:
    frame = load_builtin(name)
    record = DatasetRecord.describe(
        frame,
        name=name,
        source_type="scikit-learn",
        source={
            "loader": f"sklearn.datasets.{BUILTIN_DATASETS[name].__name__}",
            "version": sklearn.__version__,
        },
    )
    return frame, record


def parse_column_list(raw: str) -> list[str]:
    """Split a comma-separated list of column names, dropping blanks and repeats."""
    names = [part.strip() for part in raw.split(",")]
    return list(dict.fromkeys(name for name in names if name))


def mask_credentials(uri: str) -> str:
    """Replace the user and password of a URL with ``***`` so it can be logged."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


# Reading files


def read_file(
    data_path: str, data_format: str, workdir: Path
) -> tuple[pd.DataFrame, DatasetRecord]:
    """Read a CSV or Parquet file, downloading it into ``workdir`` first if it is remote."""
    where = mask_credentials(data_path)
    path, source_type, source = fetch_file(data_path, workdir)
    try:
        empty = path.stat().st_size == 0
        file_format, compression = detect_format(path, data_format)
        digest = file_digest(path)
    except OSError as exc:
        raise StepError(f"invalid data_path={where!r}: cannot read it ({exc})") from exc
    if empty:
        raise StepError(f"invalid data_path={where!r}: the file is empty")

    if file_format == "parquet":
        frame = _read_parquet(path, where)
    else:
        frame = _read_csv(path, compression, where)
    record = DatasetRecord.describe(
        frame, name=path.name, source_type=source_type, source=source, digest=digest
    )
    logger.info("Read %d rows and %d columns from %s", len(frame), frame.shape[1], where)
    return frame, record


def fetch_file(data_path: str, workdir: Path) -> tuple[Path, str, dict[str, str]]:
    """Return a local path for ``data_path`` with its dataset source type and description.

    Local files are read in place, and remote ones are downloaded into ``workdir``.
    """
    parsed = urlparse(data_path)
    scheme = parsed.scheme.lower()
    if len(scheme) <= 1:  # a plain path, or one that starts with a Windows drive letter
        return _local_file(Path(data_path).expanduser(), data_path)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StepError(
                f"invalid data_path={data_path!r}: a file:// URI must name a file on this "
                f"machine, not on host {parsed.netloc!r}"
            )
        return _local_file(Path(url2pathname(parsed.path)), data_path)

    where = mask_credentials(data_path)
    try:
        if scheme in ("http", "https"):
            local = _download_http(data_path, workdir)
            source_type, source = "http", {"url": where}
        else:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=data_path, dst_path=str(workdir)
            )
            if scheme in ARTIFACT_SCHEMES:
                source_type = ArtifactUriSource._get_source_type()
            else:
                source_type = scheme
            source = {"uri": where}
    except (MlflowException, OSError) as exc:
        raise StepError(
            f"invalid data_path={where!r}: cannot download it ({_first_line(exc)})"
        ) from exc
    path = Path(local)
    if path.is_dir():
        raise StepError(f"invalid data_path={where!r}: a folder, not a CSV or Parquet file")
    return path, source_type, source


def _download_http(url: str, workdir: Path) -> Path:
    # MLflow 3.17's HTTPDatasetSource sets no timeout, so a silent server would hang the step.
    path = workdir / (Path(urlparse(url).path).name or "download")
    with requests.get(url, stream=True, timeout=HTTP_TIMEOUT_S) as response:
        response.raise_for_status()
        with open(path, "wb") as stream:
            for chunk in response.iter_content(chunk_size=1 << 20):
                stream.write(chunk)
    return path


def _local_file(path: Path, data_path: str) -> tuple[Path, str, dict[str, str]]:
    path = path.resolve()
    if not path.exists():
        raise StepError(f"invalid data_path={data_path!r}: file not found ({path})")
    if path.is_dir():
        raise StepError(f"invalid data_path={data_path!r}: a folder, not a CSV or Parquet file")
    return path, "local", {"uri": path.as_uri()}


def detect_format(path: Path, data_format: str = "auto") -> tuple[str, str | None]:
    """Return the format of a file (``csv`` or ``parquet``) and the compression of a CSV.

    ``auto`` decides by the file name extension (``.parquet``, ``.pq`` or
    ``.parq`` for Parquet), then by the Parquet magic bytes at the start of
    the file, and reads anything else as CSV. The compression always comes
    from the content, so a gzip file named ``data`` is read as well.
    """
    with open(path, "rb") as stream:
        head = stream.read(8)
    compression = next(
        (name for magic, name in COMPRESSION_MAGIC.items() if head.startswith(magic)), None
    )
    if data_format != "auto":
        return data_format, compression
    if _format_suffix(path) in PARQUET_SUFFIXES or head.startswith(PARQUET_MAGIC):
        return "parquet", None
    return "csv", compression


def _format_suffix(path: Path) -> str:
    # The extension before any compression extension: ".csv" for data.csv.gz.
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def file_digest(path: Path) -> str:
    """Return the first characters of the SHA-256 of a file's bytes."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()[:DIGEST_LENGTH]


def _read_csv(path: Path, compression: str | None, where: str) -> pd.DataFrame:
    options: dict[str, Any] = {"compression": compression, "encoding": "utf-8-sig"}
    try:
        options["sep"] = _csv_delimiter(path, compression)
        # Read the header row as data first: pandas renames a repeated column
        # name (a, a.1) when it reads the header itself.
        header = pd.read_csv(
            path, header=None, nrows=1, dtype=str, keep_default_na=False, **options
        )
        _check_unique_names([name for name in header.iloc[0] if name], where)
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError as exc:
        raise StepError(f"invalid data_path={where!r}: the file is empty") from exc
    except UnicodeDecodeError as exc:
        raise StepError(
            f"invalid data_path={where!r}: cannot read it as CSV: not UTF-8 text ({exc.reason} "
            f"at byte {exc.start}); save the file as UTF-8"
        ) from exc
    except (ValueError, OSError, EOFError, lzma.LZMAError) as exc:
        raise StepError(
            f"invalid data_path={where!r}: cannot read it as CSV ({_first_line(exc)})"
        ) from exc


def _csv_delimiter(path: Path, compression: str | None) -> str:
    # A CSV is comma-separated unless its header line has no comma but one of
    # the other usual separators, as in the semicolon files of some locales.
    if _format_suffix(path) == ".tsv":
        return "\t"
    line = _header_line(path, compression)
    if line is None or "," in line:
        return ","
    return next((delimiter for delimiter in OTHER_DELIMITERS if delimiter in line), ",")


def _header_line(path: Path, compression: str | None) -> str | None:
    openers: dict[str | None, Callable[..., IO[str]]] = {
        None: open,
        "gzip": gzip.open,
        "bz2": bz2.open,
        "xz": lzma.open,
    }
    opener = openers.get(compression)
    if opener is None:  # zip and zstd: pandas opens them, the separator stays a comma
        return None
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as stream:
        return stream.readline(1 << 16)


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    try:
        _check_unique_names(pq.read_schema(path).names, where)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise StepError(
            f"invalid data_path={where!r}: cannot read it as Parquet ({_first_line(exc)})"
        ) from exc


def _check_unique_names(names: Sequence[str], where: str) -> None:
    repeated = {name: count for name, count in Counter(names).items() if count > 1}
    if repeated:
        listed = _list_names([f"{name!r} ({count} times)" for name, count in repeated.items()])
        raise StepError(
            f"invalid data_path={where!r}: duplicate column names {listed}; "
            "rename the columns so that each name is unique"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Checking and preparing the table


def _check_labels_are_classes(labels: pd.Series, target: str, where: str) -> None:
    """Raise StepError for a label column of non-integer numbers, a regression target."""
    if not pd.api.types.is_float_dtype(labels):
        return
    fractional = labels[labels.to_numpy() % 1 != 0]
    if not fractional.empty:
        raise StepError(
            f"invalid target={target!r}: column {target!r} of {where} contains non-integer "
            f"numbers such as {float(fractional.iloc[0])!r}; a classifier needs classes: text, "
            "integers or booleans"
        )


def prepare_table(
    frame: pd.DataFrame,
    *,
    target: str,
    drop_columns: Sequence[str] = (),
    source: DatasetRecord,
    where: str,
) -> Table:
    """Check a raw table and return its label and feature columns in the model's types.

    ``where`` names the table in messages. Rows with a missing label are
    dropped, as are constant and all-missing feature columns, each with a
    warning. Raises StepError for a table the model cannot learn from.
    """
    _check_shape(frame, where)
    _check_columns(frame, target, drop_columns, where)
    frame = frame.drop(columns=list(drop_columns))

    frame, rows_missing_target = _drop_missing_labels(frame, target, where)
    frame[target] = canonical_labels(frame[target])
    _check_labels_are_classes(frame[target], target, where)
    classes = frame[target].unique()
    if len(classes) < 2:
        raise StepError(
            f"invalid target={target!r}: column {target!r} of {where} has one class "
            f"({label_repr(classes[0])}); a classifier needs at least 2"
        )

    frame = _canonical_features(frame, target, where)
    frame, uninformative = _drop_uninformative(frame, target)
    if frame.shape[1] == 1:
        raise StepError(
            f"invalid data_path={where!r}: no feature columns left besides {target!r}; "
            "the model needs at least one"
        )
    _warn_about_identifiers(frame, target)

    dropped = {"requested": list(drop_columns), **uninformative}
    return Table(frame, target, source, dropped, rows_missing_target)


def _check_shape(frame: pd.DataFrame, where: str) -> None:
    _check_unique_names([str(name) for name in frame.columns], where)
    if frame.shape[1] == 0:
        raise StepError(f"invalid data_path={where!r}: the table has no columns")
    if len(frame) == 0:
        raise StepError(f"invalid data_path={where!r}: the table has a header but no rows")


def _check_columns(
    frame: pd.DataFrame, target: str, drop_columns: Sequence[str], where: str
) -> None:
    columns = [str(name) for name in frame.columns]
    if target not in columns:
        close = get_close_matches(target, columns, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StepError(
            f"invalid target={target!r}: {where} has no such column{hint}; "
            f"its columns are {_list_names(columns, repr)}"
        )
    unknown = [name for name in drop_columns if name not in columns]
    if unknown:
        raise StepError(
            f"invalid drop_columns={','.join(drop_columns)!r}: {where} has no column "
            f"{_list_names(unknown, repr)}; its columns are {_list_names(columns, repr)}"
        )
    if target in drop_columns:
        raise StepError(
            f"invalid drop_columns={','.join(drop_columns)!r}: {target!r} is the target column"
        )


def _drop_missing_labels(frame: pd.DataFrame, target: str, where: str) -> tuple[pd.DataFrame, int]:
    missing = frame[target].isna()
    count = int(missing.sum())
    if count == len(frame):
        raise StepError(
            f"invalid target={target!r}: column {target!r} of {where} has no values "
            f"in any of its {len(frame)} rows"
        )
    if count:
        logger.warning(
            "Dropped %d of %d rows of %s with a missing %s label", count, len(frame), where, target
        )
        frame = frame.loc[~missing].reset_index(drop=True)
    return frame, count


def canonical_labels(labels: pd.Series) -> pd.Series:
    """Return labels with no missing values in the type predictions will have.

    Whole numbers stored as floats, as pandas reads an integer column with
    gaps, become integers again, so the model predicts 1 and not 1.0.
    """
    dtype = labels.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return labels.astype(bool)
    if pd.api.types.is_integer_dtype(dtype):
        return labels.astype("int64")
    if pd.api.types.is_float_dtype(dtype):
        values = labels.astype("float64")
        # A float64 represents every integer up to 2**53 exactly.
        if (np.mod(values, 1) == 0).all() and (values.abs() < 2**53).all():
            return values.astype("int64")
        return values
    if (
        pd.api.types.is_object_dtype(dtype)
        and pd.api.types.infer_dtype(labels, skipna=True) == "boolean"
    ):
        return labels.astype(bool)
    return labels.astype("str")


def canonical_feature(column: pd.Series) -> pd.Series | None:
    """Return a feature column in the type the model takes, or None if it has no such type.

    Datetimes, durations, intervals, complex numbers, bytes and nested values
    (lists, dicts) have none.
    """
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        if column.hasnans:
            return column.astype(object).where(column.notna(), np.nan)
        return column.astype(bool)
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        return _canonical_number(column)
    if isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)):
        return column.astype("str")
    if not pd.api.types.is_object_dtype(dtype):
        return None
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind == "boolean":
        if not column.hasnans:
            return column.astype(bool)
        return column.where(column.notna(), np.nan)
    if kind == "decimal":
        return column.astype("float64")
    if kind in ("string", "empty", "integer", "floating", "mixed-integer", "mixed-integer-float"):
        return column.astype("str")
    if kind == "mixed" and not _has_nested_values(column):
        return column.astype("str")
    return None


def _canonical_number(column: pd.Series) -> pd.Series:
    dtype = column.dtype
    if not pd.api.types.is_integer_dtype(dtype) or column.hasnans:
        return column.astype("float64")
    if dtype.kind == "u" and dtype.itemsize == 8 and column.max() > np.iinfo(np.int64).max:
        return column.astype("float64")
    return column.astype("int64")


def _has_nested_values(column: pd.Series) -> bool:
    present = column.dropna()
    first = present.iloc[0] if len(present) else None
    return isinstance(first, (list, tuple, dict, set, np.ndarray, bytes))


def _canonical_features(frame: pd.DataFrame, target: str, where: str) -> pd.DataFrame:
    unusable = []
    for name in frame.columns:
        if name == target:
            continue
        converted = canonical_feature(frame[name])
        if converted is None:
            unusable.append(f"{name!r} ({frame[name].dtype})")
        else:
            frame[name] = converted
    if unusable:
        raise StepError(
            f"invalid data_path={where!r}: columns {_list_names(unusable)} have types the "
            "model cannot use; leave them out with drop_columns, or convert them to numbers "
            "or text"
        )
    return frame


def _drop_uninformative(
    frame: pd.DataFrame, target: str
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    constant, empty = [], []
    for name in frame.columns:
        if name == target or frame[name].nunique(dropna=False) > 1:
            continue
        (empty if frame[name].isna().all() else constant).append(name)
    if constant:
        logger.warning("Dropped constant columns, which cannot help the model: %s", constant)
    if empty:
        logger.warning("Dropped columns with no values: %s", empty)
    return frame.drop(columns=constant + empty), {"constant": constant, "all missing": empty}


def _warn_about_identifiers(frame: pd.DataFrame, target: str) -> None:
    if len(frame) < MIN_ROWS_FOR_IDENTIFIER_CHECK:
        return
    for name in frame.columns:
        column = frame[name]
        if name == target or pd.api.types.is_float_dtype(column.dtype):
            continue
        distinct = column.nunique()
        if distinct == column.count():
            logger.warning(
                "Column %r has a different value in every row, like an identifier: "
                "leave it out with drop_columns unless it is a real feature",
                name,
            )
        elif distinct > MANY_CATEGORIES and not pd.api.types.is_integer_dtype(column.dtype):
            logger.warning(
                "Column %r has %d distinct values; one-hot encoding makes one model input of each",
                name,
                distinct,
            )


def _list_names(names: Sequence[str], formatter: Callable[[str], str] = str) -> str:
    shown = ", ".join(formatter(name) for name in names[:MAX_NAMES_SHOWN])
    if len(names) > MAX_NAMES_SHOWN:
        shown += f" and {len(names) - MAX_NAMES_SHOWN} more"
    return shown
