"""Entry point ``load``: read the data set, check it and split it into train and test.

Reads ``data_path``: a data set that ships with scikit-learn (``iris``,
``wine``, ``breast_cancer``, ``digits``) or a CSV or Parquet file, local or at
a URI (``file://``, ``http(s)://``, ``runs:/``, ``mlflow-artifacts:/``), with
``data_format`` to force the format. Takes
``target`` as the label column, leaves out ``drop_columns`` and drops
constant and all-missing columns and rows without a label, each with a
warning. Splits the rows stratified on the label with ``test_size`` and
``random_state``, and logs to its run:

- the table as read, as a dataset input (context ``source``): name, digest,
  source, schema and row count;
- artifacts ``data/train.parquet``, ``data/test.parquet`` and
  ``data/metadata.json`` (label column, feature columns, classes, and the
  data set record), and ``dropped_columns.json`` (columns left out, by reason);
- metrics ``rows_train``, ``rows_test`` and ``rows_missing_target``;
- tag ``pipeline.data_uri``: the URI of that folder (``runs:/<run_id>/data``),
  which is also printed on stdout as ``data_uri=<uri>`` for the next step.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import mlflow

from steps.data import Splits, log_dataset_input, log_splits, split_frame
from steps.runner import DATA_URI_TAG, run_step
from steps.tables import Table, read_table

logger = logging.getLogger(__name__)

DROPPED_COLUMNS_FILE = "dropped_columns.json"


def read_and_split(params: dict[str, Any]) -> tuple[Splits, Table]:
    """Read and check the table that load's parameters name, then split it.

    The returned Table keeps its columns but no rows, so that only the split
    copies of the rows stay in memory.
    """
    table = read_table(
        params["data_path"],
        target=params["target"],
        drop_columns=params["drop_columns"],
        data_format=params["data_format"],
    )
    splits = split_frame(
        table.frame,
        table.target,
        params["test_size"],
        params["random_state"],
        source=table.source,
    )
    return splits, dataclasses.replace(table, frame=table.frame.head(0))


def load(params: dict[str, Any]) -> None:
    splits, table = read_and_split(params)
    log_dataset_input(table.source, "source")

    data_uri = log_splits(splits)
    mlflow.log_dict(table.dropped, DROPPED_COLUMNS_FILE)
    mlflow.log_metrics(
        {
            "rows_train": len(splits.train),
            "rows_test": len(splits.test),
            "rows_missing_target": table.rows_missing_target,
        }
    )
    mlflow.set_tag(DATA_URI_TAG, data_uri)
    logger.info(
        "Split %d rows of %s into %d train and %d test, with %d features",
        len(splits.train) + len(splits.test),
        table.source.name,
        len(splits.train),
        len(splits.test),
        len(splits.feature_columns),
    )
    print(f"data_uri={data_uri}")


def main(argv: list[str] | None = None) -> int:
    return run_step("load", load, argv)


if __name__ == "__main__":
    sys.exit(main())
