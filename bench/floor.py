"""The floor: load, train and evaluate in one process, with the steps' own logging.

    python -m bench.floor [data_path=PATH target=COLUMN n_estimators=N ...]

Runs the bodies of the three entry points one after the other, each in its
own MLflow run, with the same parameters, artifacts and metrics as the real
steps, but with no Prefect, no ``mlflow run`` and no subprocess. Takes step
parameters as NAME=VALUE and passes each to the steps that declare it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from steps.evaluate import evaluate
from steps.load import load
from steps.params import parse_parameters
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, configure_logging
from steps.train import train

FLOOR_EXPERIMENT = "bench-floor"


def step_argv(entry_point: str, options: dict[str, str]) -> list[str]:
    """Turn pipeline options into the argv of one step, keeping those it declares."""
    declared = set(parse_parameters(entry_point, []))
    argv: list[str] = []
    for name, value in options.items():
        if name in declared:
            argv += ["--" + name.replace("_", "-"), value]
    return argv


def run_floor(options: dict[str, str]) -> dict[str, str]:
    """Run the three step bodies in this process and return their run ids."""
    mlflow.set_experiment(FLOOR_EXPERIMENT)
    run_ids: dict[str, str] = {}

    with mlflow.start_run(run_name="load") as run:
        load(parse_parameters("load", step_argv("load", options)))
        run_ids["load"] = run.info.run_id
    data_uri = mlflow.get_run(run_ids["load"]).data.tags[DATA_URI_TAG]

    train_options = {**options, "data_uri": data_uri}
    with mlflow.start_run(run_name="train") as run:
        train(parse_parameters("train", step_argv("train", train_options)))
        run_ids["train"] = run.info.run_id
    model_uri = mlflow.get_run(run_ids["train"]).data.tags[MODEL_URI_TAG]

    evaluate_options = {**options, "data_uri": data_uri, "model_uri": model_uri}
    with mlflow.start_run(run_name="evaluate") as run:
        evaluate(parse_parameters("evaluate", step_argv("evaluate", evaluate_options)))
        run_ids["evaluate"] = run.info.run_id
    return run_ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument(
        "options",
        nargs="*",
        metavar="NAME=VALUE",
        help="step parameters, such as n_estimators=20 (default: MLproject's defaults)",
    )
    args = parser.parse_args(argv)
    options = dict(item.split("=", 1) for item in args.options)
    configure_logging()
    run_floor(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
