"""Entry point ``load``: read the data set and split it into train and test.

Reads the Iris data set that ships with scikit-learn, splits it stratified on
the label with ``test_size`` and ``random_state``, and logs to its run:

- artifacts ``data/train.parquet``, ``data/test.parquet`` and
  ``data/metadata.json`` (label column, feature columns, classes);
- metrics ``rows_train`` and ``rows_test``;
- tag ``pipeline.data_uri``: the URI of that folder (``runs:/<run_id>/data``),
  which is also printed on stdout as ``data_uri=<uri>`` for the next step.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import mlflow

from steps.data import DEFAULT_TARGET, load_builtin, log_splits, split_frame
from steps.runner import DATA_URI_TAG, run_step

logger = logging.getLogger(__name__)


def load(params: dict[str, Any]) -> None:
    frame = load_builtin()
    splits = split_frame(frame, DEFAULT_TARGET, params["test_size"], params["random_state"])

    data_uri = log_splits(splits)
    mlflow.log_metrics({"rows_train": len(splits.train), "rows_test": len(splits.test)})
    mlflow.set_tag(DATA_URI_TAG, data_uri)
    logger.info(
        "Split %d rows into %d train and %d test", len(frame), len(splits.train), len(splits.test)
    )
    print(f"data_uri={data_uri}")


def main(argv: list[str] | None = None) -> int:
    return run_step("load", load, argv)


if __name__ == "__main__":
    sys.exit(main())
