"""Entry point ``train``: fit a RandomForest on the training split.

Reads the split folder at ``data_uri`` (written by ``load``). With an empty
``data_uri`` it loads and splits the default data set itself, with load's
default parameters, and logs the splits under this run's ``data/`` folder.

Logs to its run:

- parameters ``n_estimators``, ``max_depth``, ``cv_folds``, ``random_state``
  and ``data_uri``;
- metrics ``train_accuracy``, ``cv_accuracy_mean`` and ``cv_accuracy_std``
  (k-fold cross-validation on the training split, an overfitting check);
- the training split as a dataset input (context ``training``) with its digest;
- the model, with signature, input example and pinned pip requirements;
- tags ``pipeline.data_uri`` (the splits used) and ``pipeline.model_uri``,
  the model URI, also printed on stdout as ``model_uri=<uri>``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import mlflow
import mlflow.data
from mlflow.models import infer_signature

from steps.data import (
    DEFAULT_TARGET,
    ArtifactUriSource,
    Splits,
    load_builtin,
    log_splits,
    read_splits,
    split_frame,
)
from steps.environment import model_requirements
from steps.model import fit_and_score
from steps.params import parse_parameters
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, StepError, run_step

logger = logging.getLogger(__name__)

MODEL_NAME = "model"

# Types inside the fitted model that skops does not load unless told to trust
# them. A unit test checks this list against skops.io.get_untrusted_types.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def _splits_for(data_uri: str) -> tuple[Splits, str]:
    if data_uri:
        return read_splits(data_uri), data_uri
    load_params = parse_parameters("load", [])
    logger.info("No data_uri given: loading the default data set with %s", load_params)
    splits = split_frame(
        load_builtin(), DEFAULT_TARGET, load_params["test_size"], load_params["random_state"]
    )
    return splits, log_splits(splits)


def train(params: dict[str, Any]) -> None:
    splits, data_uri = _splits_for(params["data_uri"])
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
    dataset = mlflow.data.from_pandas(
        splits.train, source=ArtifactUriSource(data_uri), targets=splits.target, name="train"
    )
    mlflow.log_input(dataset, context="training")

    model_info = mlflow.sklearn.log_model(
        result.model,
        name=MODEL_NAME,
        signature=infer_signature(features, result.model.predict(features)),
        input_example=features.head(5),
        pip_requirements=model_requirements(),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
    mlflow.set_tags({DATA_URI_TAG: data_uri, MODEL_URI_TAG: model_info.model_uri})
    print(f"model_uri={model_info.model_uri}")


def main(argv: list[str] | None = None) -> int:
    return run_step("train", train, argv)


if __name__ == "__main__":
    sys.exit(main())
