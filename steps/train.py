"""Entry point ``train``: fit the preprocessing and RandomForest pipeline on the training split.

Reads the split folder at ``data_uri`` (written by ``load``). With an empty
``data_uri`` it reads and splits the data set itself, with load's default
parameters, and logs the splits under this run's ``data/`` folder.

Logs to its run:

- parameters ``n_estimators``, ``max_depth``, ``cv_folds``, ``random_state``
  and ``data_uri``;
- metrics ``train_accuracy``, ``cv_accuracy_mean`` and ``cv_accuracy_std``
  (k-fold cross-validation on the training split, an overfitting check);
- dataset inputs: the training split (context ``training``, source
  ``data_uri``) and the table it came from (context ``source``);
- the model: a scikit-learn Pipeline that takes the raw feature columns,
  with a signature of those columns, an input example, pinned pip
  requirements and skops serialization;
- tags ``pipeline.data_uri`` (the splits used) and ``pipeline.model_uri``,
  the model URI, also printed on stdout as ``model_uri=<uri>``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from steps.data import Splits, column_type, frame_schema, log_split_inputs, log_splits, read_splits
from steps.environment import model_requirements
from steps.load import read_and_split
from steps.model import fit_and_score
from steps.params import parse_parameters
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, StepError, run_step

logger = logging.getLogger(__name__)

MODEL_NAME = "model"
INPUT_EXAMPLE_ROWS = 5

# Types inside the fitted pipeline that skops loads only when they are
# listed as trusted: the trees, the imputers' stored dtype, and the cast of
# categorical columns to Python objects. A unit test checks this list
# against skops.io.get_untrusted_types.
SKOPS_TRUSTED_TYPES = [
    "builtins.object",
    "numpy.asarray",
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
]


def _splits_for(data_uri: str) -> tuple[Splits, str]:
    if data_uri:
        return read_splits(data_uri), data_uri
    load_params = parse_parameters("load", [])
    logger.info("No data_uri given: loading the default data set with %s", load_params)
    splits, _ = read_and_split(load_params)
    return splits, log_splits(splits)


def model_signature(features: pd.DataFrame, labels: pd.Series) -> ModelSignature:
    """Describe the raw feature columns as inputs and one column of labels as output.

    Every input column is required: the pipeline needs each one, though a
    value in it may be missing.
    """
    # NOTE: MLflow's schema check rejects a gap in a column declared long
    # (an integer column that had no gaps in training), because pandas turns
    # such a column into floats. The model itself would impute the gap.
    outputs = Schema([ColSpec(column_type(labels))])
    return ModelSignature(inputs=frame_schema(features, all_required=True), outputs=outputs)


def train(params: dict[str, Any]) -> None:
    splits, data_uri = _splits_for(params["data_uri"])
    log_split_inputs(splits, data_uri, split="train", context="training")
    features = splits.train[splits.feature_columns]
    labels = splits.train[splits.target]

    try:
        result = fit_and_score(
            features,
            labels,
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            cv_folds=params["cv_folds"],
            random_state=params["random_state"],
        )
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    logger.info(
        "Trained on %d rows: train accuracy %.4f, cross-validated %.4f +/- %.4f",
        len(features),
        result.train_accuracy,
        result.cv_accuracy_mean,
        result.cv_accuracy_std,
    )

    mlflow.log_metrics(
        {
            "train_accuracy": result.train_accuracy,
            "cv_accuracy_mean": result.cv_accuracy_mean,
            "cv_accuracy_std": result.cv_accuracy_std,
        }
    )
    model_info = mlflow.sklearn.log_model(
        result.model,
        name=MODEL_NAME,
        signature=model_signature(features, labels),
        input_example=features.head(INPUT_EXAMPLE_ROWS),
        pip_requirements=model_requirements(),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
    mlflow.set_tags({DATA_URI_TAG: data_uri, MODEL_URI_TAG: model_info.model_uri})
    print(f"model_uri={model_info.model_uri}")


def main(argv: list[str] | None = None) -> int:
    return run_step("train", train, argv)


if __name__ == "__main__":
    sys.exit(main())
