"""Entry point ``evaluate``: score a trained model on the test split.

Reads the model at ``model_uri`` and the split folder at ``data_uri``. With an
empty ``model_uri`` it takes the model of the newest FINISHED train run in the
experiment; with an empty ``data_uri``, the splits that model was trained on.
Runs ``mlflow.models.evaluate`` as a classifier on the test split and logs:

- the default evaluator's classifier metrics (``accuracy_score``,
  ``f1_score``, ``precision_score``, ``recall_score``, ...) and plots,
  among them the confusion matrix;
- metric ``accuracy``, and per class ``precision_<class>``,
  ``recall_<class>`` and ``f1_<class>``;
- artifacts ``per_class_metrics.json`` and ``confusion_matrix.json``;
- tags ``pipeline.model_uri`` and ``pipeline.data_uri``.

Fails when ``accuracy`` is below ``min_accuracy``, after logging the metrics.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from steps.data import log_split_inputs, read_splits
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, STEP_TAG, StepError, run_step

logger = logging.getLogger(__name__)


def newest_model_uri(experiment_id: str) -> str:
    """Return the model URI of the newest FINISHED train run of the experiment."""
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs or MODEL_URI_TAG not in runs[0].data.tags:
        raise StepError(
            "no model_uri given and the experiment has no finished train run: "
            "run `mlflow run . -e train` first, or pass -P model_uri=<uri>"
        )
    return runs[0].data.tags[MODEL_URI_TAG]


def training_data_uri(model_info: mlflow.models.model.ModelInfo) -> str:
    """Return the split folder the model was trained on, from its train run."""
    run_id = model_info.run_id
    tags = mlflow.get_run(run_id).data.tags if run_id else {}
    if DATA_URI_TAG not in tags:
        raise StepError(
            f"no data_uri given and the train run of {model_info.model_uri!r} does not "
            f"record one: pass -P data_uri=<uri>"
        )
    return tags[DATA_URI_TAG]


def per_class_metrics(labels: pd.Series, predictions: pd.Series) -> pd.DataFrame:
    """Return precision, recall, F1 and support for each class, one row a class."""
    classes = sorted(set(labels) | set(predictions), key=str)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    return pd.DataFrame(
        {
            "class": [str(c) for c in classes],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )


def metric_key(prefix: str, label: str) -> str:
    """Build a metric name that MLflow accepts from a class label."""
    return f"{prefix}_{re.sub(r'[^0-9A-Za-z_.-]+', '_', label)}"


def evaluate(params: dict[str, Any]) -> None:
    run = mlflow.active_run()
    model_uri = params["model_uri"] or newest_model_uri(run.info.experiment_id)
    try:
        model_info = mlflow.models.get_model_info(model_uri)
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(
            f"invalid model_uri={model_uri!r}: cannot load it ({cause}); expected "
            "models:/<model_id>, runs:/<run_id>/model or the path of a saved model"
        ) from exc
    data_uri = params["data_uri"] or training_data_uri(model_info)
    mlflow.set_tags({MODEL_URI_TAG: model_uri, DATA_URI_TAG: data_uri})
    splits = read_splits(data_uri)
    log_split_inputs(splits, data_uri, split="test", context="evaluation")
    test = splits.test

    result = mlflow.models.evaluate(
        model=model,
        data=test,
        targets=splits.target,
        model_type="classifier",
        evaluators="default",
        # Model explainability needs the shap package, which the step environment lacks.
        evaluator_config={"log_model_explainability": False},
    )
    accuracy = float(result.metrics["accuracy_score"])
    predictions = pd.Series(model.predict(test[splits.feature_columns]))
    table = per_class_metrics(test[splits.target], predictions)
    classes = table["class"].tolist()

    mlflow.log_metric("accuracy", accuracy)
    for row in table.itertuples():
        mlflow.log_metrics(
            {
                metric_key("precision", row[1]): row.precision,
                metric_key("recall", row[1]): row.recall,
                metric_key("f1", row[1]): row.f1,
            }
        )
    mlflow.log_dict(table.to_dict(orient="records"), "per_class_metrics.json")
    matrix = confusion_matrix(
        test[splits.target].astype(str), predictions.astype(str), labels=classes
    )
    mlflow.log_dict({"labels": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")
    logger.info("Accuracy on %d test rows: %.4f", len(test), accuracy)
    print(f"accuracy={accuracy:.4f}")

    if accuracy < params["min_accuracy"]:
        raise StepError(f"accuracy {accuracy:.4f} is below min_accuracy={params['min_accuracy']}")


def main(argv: list[str] | None = None) -> int:
    return run_step("evaluate", evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
