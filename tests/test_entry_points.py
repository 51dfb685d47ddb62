"""The load, train and evaluate entry points, run through the real `mlflow run`.

Most tests read one chained run of the three entry points, made once for the
module in its own tracking store. Tests that need a store of their own (no
train run yet, several train runs, a failing run) make one with the
``tracking_uri`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.entities import Run

from steps.environment import model_requirements
from steps.runner import StepError, run_step
from steps.train import SKOPS_TRUSTED_TYPES
from tests.conftest import PROJECT_DIR, MlflowRunResult, run_entry_point, use_tracking_store

CLASSES = ["setosa", "versicolor", "virginica"]
MISSING_RUN_ID = "0123456789abcdef0123456789abcdef"


def printed(result: MlflowRunResult, key: str) -> str:
    """Return the value of the ``key=value`` line that a step printed on stdout."""
    match = re.search(rf"^{key}=(\S+)$", result.stdout, re.MULTILINE)
    assert match, f"no {key}= line in the output:\n{result.output}"
    return match.group(1)


def succeeded(result: MlflowRunResult) -> Run:
    assert result.returncode == 0, result.output
    assert result.run is not None, result.output
    assert result.run.info.status == "FINISHED"
    return result.run


def failed(result: MlflowRunResult) -> Run:
    assert result.returncode != 0, result.output
    assert result.run is not None, result.output
    assert result.run.info.status == "FAILED"
    return result.run


def artifact_paths(run_id: str, folder: str | None = None) -> set[str]:
    return {item.path for item in mlflow.MlflowClient().list_artifacts(run_id, folder)}


def read_artifact_json(run_id: str, path: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def conda_pip_pins() -> set[str]:
    with open(PROJECT_DIR / "conda.yaml", encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    return {pin for section in sections for pin in section}


@dataclass(frozen=True)
class Pipeline:
    """load, then train on its splits, then evaluate the trained model."""

    tracking_uri: str
    load: MlflowRunResult
    train: MlflowRunResult
    evaluate: MlflowRunResult
    data_uri: str
    model_uri: str


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory, env_root: Path) -> Iterator[Pipeline]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = use_tracking_store(monkeypatch, tmp_path_factory.mktemp("pipeline"), env_root)

        load = run_entry_point("load", {"test_size": 0.3, "random_state": 7})
        data_uri = printed(load, "data_uri")
        train = run_entry_point(
            "train",
            {
                "data_uri": data_uri,
                "n_estimators": 10,
                "max_depth": 3,
                "cv_folds": 2,
                "random_state": 1,
            },
        )
        model_uri = printed(train, "model_uri")
        evaluate = run_entry_point("evaluate", {"model_uri": model_uri, "min_accuracy": 0.5})
        yield Pipeline(uri, load, train, evaluate, data_uri, model_uri)


@pytest.fixture
def pipeline(pipeline_runs: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """The module's chained runs, with MLflow pointed at their store for this test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline_runs.tracking_uri)
    mlflow.set_tracking_uri(pipeline_runs.tracking_uri)
    yield pipeline_runs
    assert mlflow.active_run() is None, "a test left an MLflow run active"


@pytest.fixture
def held_out(pipeline: Pipeline, tmp_path: Path) -> pd.DataFrame:
    folder = mlflow.artifacts.download_artifacts(
        pipeline.data_uri, dst_path=str(tmp_path / "splits")
    )
    return pd.read_parquet(Path(folder) / "test.parquet")


@pytest.fixture
def model_dir(pipeline: Pipeline, tmp_path: Path) -> Path:
    model_uri = pipeline.model_uri
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model")))


# load


@pytest.mark.slow
def test_load_logs_params(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.load)

    assert run.data.params["test_size"] == "0.3"
    assert run.data.params["random_state"] == "7"
    assert run.data.tags["pipeline.step"] == "load"


@pytest.mark.slow
def test_load_logs_parquet_splits(pipeline: Pipeline, tmp_path: Path) -> None:
    run = succeeded(pipeline.load)
    copy = tmp_path / "splits"
    folder = Path(mlflow.artifacts.download_artifacts(pipeline.data_uri, dst_path=str(copy)))
    train = pd.read_parquet(folder / "train.parquet")
    test = pd.read_parquet(folder / "test.parquet")

    assert {"data/train.parquet", "data/test.parquet"} <= artifact_paths(run.info.run_id, "data")
    assert (len(train), len(test)) == (105, 45)
    assert sorted(test["target"].unique()) == CLASSES
    assert run.data.metrics["rows_train"] == 105
    assert run.data.metrics["rows_test"] == 45


@pytest.mark.slow
def test_load_records_data_uri(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.load)
    expected = f"runs:/{run.info.run_id}/data"

    assert run.data.tags["pipeline.data_uri"] == expected
    assert pipeline.data_uri == expected


# train


@pytest.mark.slow
def test_train_logs_params(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.train)

    assert run.data.params == {
        "data_uri": pipeline.data_uri,
        "n_estimators": "10",
        "max_depth": "3",
        "cv_folds": "2",
        "random_state": "1",
    }
    assert run.data.tags["pipeline.step"] == "train"
    assert run.data.tags["pipeline.data_uri"] == pipeline.data_uri


@pytest.mark.slow
def test_train_logs_accuracy_metrics(pipeline: Pipeline) -> None:
    metrics = succeeded(pipeline.train).data.metrics

    assert 0.8 <= metrics["train_accuracy"] <= 1.0
    assert 0.5 <= metrics["cv_accuracy_mean"] <= 1.0
    assert 0.0 <= metrics["cv_accuracy_std"] <= 0.5


@pytest.mark.slow
def test_train_logs_dataset_input(pipeline: Pipeline) -> None:
    inputs = succeeded(pipeline.train).inputs.dataset_inputs
    training = [
        item
        for item in inputs
        if {"key": "mlflow.data.context", "value": "training"}
        in [{"key": tag.key, "value": tag.value} for tag in item.tags]
    ]

    assert len(training) == 1
    dataset = training[0].dataset
    assert dataset.digest
    assert json.loads(dataset.source)["uri"] == pipeline.data_uri
    assert json.loads(dataset.profile)["num_rows"] == 105


@pytest.mark.slow
def test_train_records_model_uri(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.train)

    assert pipeline.model_uri.startswith("models:/")
    assert run.data.tags["pipeline.model_uri"] == pipeline.model_uri
    assert mlflow.models.get_model_info(pipeline.model_uri).run_id == run.info.run_id


@pytest.mark.slow
def test_train_model_predicts(model_dir: Path, held_out: pd.DataFrame) -> None:
    model = mlflow.pyfunc.load_model(str(model_dir))

    predictions = model.predict(held_out.drop(columns="target"))

    assert len(predictions) == len(held_out)
    assert set(predictions) <= set(CLASSES)
    assert (predictions == held_out["target"].to_numpy()).mean() > 0.8


@pytest.mark.slow
def test_train_model_signature(pipeline: Pipeline, held_out: pd.DataFrame) -> None:
    info = mlflow.models.get_model_info(pipeline.model_uri)

    assert info.signature is not None
    assert info.signature.inputs.input_names() == list(held_out.drop(columns="target").columns)
    assert info.saved_input_example_info is not None


@pytest.mark.slow
def test_train_model_input_example(model_dir: Path) -> None:
    example = json.loads((model_dir / "input_example.json").read_text(encoding="utf-8"))

    assert len(example["data"]) == 5
    assert len(example["columns"]) == 4


@pytest.mark.slow
def test_train_model_requirements(model_dir: Path) -> None:
    lines = (model_dir / "requirements.txt").read_text(encoding="utf-8").split()
    pins = conda_pip_pins()

    assert lines == model_requirements()
    assert set(lines) <= pins
    for package in ("mlflow", "scikit-learn", "skops"):
        assert any(line.startswith(f"{package}==") for line in lines), package


@pytest.mark.slow
def test_train_model_skops_format(model_dir: Path) -> None:
    with open(model_dir / "MLmodel", encoding="utf-8") as stream:
        flavor = yaml.safe_load(stream)["flavors"]["sklearn"]

    assert flavor["serialization_format"] == "skops"
    assert flavor["skops_trusted_types"] == SKOPS_TRUSTED_TYPES


# evaluate


@pytest.mark.slow
def test_evaluate_records_inputs(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.evaluate)

    assert run.data.tags["pipeline.step"] == "evaluate"
    assert run.data.tags["pipeline.model_uri"] == pipeline.model_uri
    assert run.data.tags["pipeline.data_uri"] == pipeline.data_uri


@pytest.mark.slow
def test_evaluate_logs_accuracy(
    pipeline: Pipeline, model_dir: Path, held_out: pd.DataFrame
) -> None:
    metrics = succeeded(pipeline.evaluate).data.metrics
    model = mlflow.pyfunc.load_model(str(model_dir))
    predictions = model.predict(held_out.drop(columns="target"))
    expected = (predictions == held_out["target"].to_numpy()).mean()

    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["accuracy_score"] == pytest.approx(expected)
    assert printed(pipeline.evaluate, "accuracy") == f"{expected:.4f}"


@pytest.mark.slow
def test_evaluate_logs_classifier_metrics(pipeline: Pipeline) -> None:
    metrics = succeeded(pipeline.evaluate).data.metrics

    for key in ("precision_score", "recall_score", "f1_score", "log_loss", "roc_auc"):
        assert key in metrics, f"metric {key} missing from {sorted(metrics)}"
    assert metrics["example_count"] == 45


@pytest.mark.slow
def test_evaluate_logs_per_class_metrics(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.evaluate)
    table = read_artifact_json(run.info.run_id, "per_class_metrics.json")

    assert [row["class"] for row in table] == CLASSES
    assert sum(row["support"] for row in table) == 45
    for row in table:
        for kind in ("precision", "recall", "f1"):
            assert run.data.metrics[f"{kind}_{row['class']}"] == pytest.approx(row[kind])


@pytest.mark.slow
def test_evaluate_logs_confusion_matrix(pipeline: Pipeline) -> None:
    run = succeeded(pipeline.evaluate)
    confusion = read_artifact_json(run.info.run_id, "confusion_matrix.json")
    matrix = confusion["matrix"]
    correct = sum(matrix[i][i] for i in range(len(matrix)))

    assert confusion["labels"] == CLASSES
    assert sum(map(sum, matrix)) == 45
    assert correct / 45 == pytest.approx(run.data.metrics["accuracy"])
    assert "confusion_matrix.png" in artifact_paths(run.info.run_id)


# Runs that need a store of their own


@pytest.mark.slow
def test_train_alone_loads_default_data(tracking_uri: str, tmp_path: Path) -> None:
    result = run_entry_point("train", {"n_estimators": 10, "cv_folds": 2})
    run = succeeded(result)
    own_data = f"runs:/{run.info.run_id}/data"
    folder = Path(mlflow.artifacts.download_artifacts(own_data, dst_path=str(tmp_path / "copy")))

    assert run.data.tags["pipeline.data_uri"] == own_data
    assert len(pd.read_parquet(folder / "train.parquet")) == 120
    assert len(pd.read_parquet(folder / "test.parquet")) == 30
    assert run.data.tags["pipeline.model_uri"] == printed(result, "model_uri")


@pytest.mark.slow
def test_evaluate_takes_newest_train(tracking_uri: str) -> None:
    cheap = {"n_estimators": 10, "cv_folds": 2}
    succeeded(run_entry_point("train", {**cheap, "random_state": 1}))
    newest = succeeded(run_entry_point("train", {**cheap, "random_state": 2}))
    # A newer train run that failed has no model, so evaluate must pass over it.
    failed(run_entry_point("train", {**cheap, "n_estimators": 0}))

    run = succeeded(run_entry_point("evaluate"))

    assert run.data.tags["pipeline.model_uri"] == newest.data.tags["pipeline.model_uri"]
    assert run.data.tags["pipeline.data_uri"] == newest.data.tags["pipeline.data_uri"]


@pytest.mark.slow
def test_evaluate_without_train_fails(tracking_uri: str) -> None:
    result = run_entry_point("evaluate")
    run = failed(result)

    assert "run `mlflow run . -e train` first" in run.data.tags["pipeline.error"]
    assert "run `mlflow run . -e train` first" in result.stderr


@pytest.mark.slow
def test_evaluate_below_min_accuracy(tracking_uri: str) -> None:
    # One tree of depth 1 has two leaves, so it predicts at most two of the three
    # balanced classes: its test accuracy cannot exceed 2/3.
    stump = {"n_estimators": 1, "max_depth": 1, "cv_folds": 2}
    model_uri = printed(run_entry_point("train", stump), "model_uri")

    result = run_entry_point("evaluate", {"model_uri": model_uri, "min_accuracy": 0.9})
    run = failed(result)
    accuracy = run.data.metrics["accuracy"]

    assert accuracy <= 2 / 3 + 1e-9
    assert run.data.tags["pipeline.error"] == (f"accuracy {accuracy:.4f} is below min_accuracy=0.9")
    assert "f1_score" in run.data.metrics
    assert "confusion_matrix.json" in artifact_paths(run.info.run_id)


INVALID_RUNS = [
    ("train", {"n_estimators": 0}, "n_estimators", "0", "an integer of at least 1"),
    ("train", {"max_depth": -2}, "max_depth", "-2", "at least 1, or 0 for unlimited depth"),
    ("load", {"test_size": 1.5}, "test_size", "1.5", "a number strictly between 0 and 1"),
    ("train", {"n_estimators": "abc"}, "n_estimators", "abc", "an integer of at least 1"),
    (
        "train",
        {"data_uri": f"runs:/{MISSING_RUN_ID}/data"},
        "data_uri",
        f"runs:/{MISSING_RUN_ID}/data",
        "runs:/<run_id>/data",
    ),
    (
        "evaluate",
        {"model_uri": "models:/m-0123456789abcdef"},
        "model_uri",
        "models:/m-0123456789abcdef",
        "models:/<model_id>",
    ),
    ("train", {"foo": 1}, "foo", "1", "train accepts data_uri, n_estimators"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("entry_point", "params", "name", "value", "allowed"),
    INVALID_RUNS,
    ids=[f"{case[0]}-{case[2]}={case[3]}" for case in INVALID_RUNS],
)
def test_invalid_value_fails_run(
    tracking_uri: str,
    entry_point: str,
    params: dict[str, object],
    name: str,
    value: str,
    allowed: str,
) -> None:
    cheap = {"n_estimators": 10, "cv_folds": 2} if entry_point == "train" else {}
    result = run_entry_point(entry_point, {**cheap, **params})
    run = failed(result)
    message = run.data.tags["pipeline.error"]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]

    assert f"{name}={value!r}" in message
    assert allowed in message
    assert error_lines == [f"error: {entry_point} run {run.info.run_id}: {message}"]
    assert "Traceback" not in result.stderr
    # What `mlflow run` logged before the step failed stays on the run.
    assert run.data.params[name] == value


# run_step in this process, without `mlflow run`


def only_run() -> Run:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    return runs[0]


def test_run_step_check_failure(tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    def body(params: dict[str, object]) -> None:
        mlflow.log_metric("rows", 3)
        raise StepError("invalid thing='x':\nexpected y")

    status = run_step("load", body, [])
    run = only_run()

    assert status == 2
    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.error"] == "invalid thing='x': expected y"
    assert run.data.metrics["rows"] == 3
    assert capsys.readouterr().err.endswith(
        f"error: load run {run.info.run_id}: invalid thing='x': expected y\n"
    )


def test_run_step_unexpected_error(tracking_uri: str) -> None:
    def body(params: dict[str, object]) -> None:
        raise RuntimeError("disk full\nsecond line")

    with pytest.raises(RuntimeError, match="disk full"):
        run_step("load", body, [])
    run = only_run()

    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.error"] == "RuntimeError: disk full"


def test_run_step_invalid_parameter(tracking_uri: str) -> None:
    called = []

    status = run_step("train", called.append, ["--n-estimators", "0"])
    run = only_run()

    assert status == 2
    assert called == []
    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.step"] == "train"
    assert run.data.tags["pipeline.error"].startswith("invalid n_estimators='0': ")


# Telemetry


def step_process_setting(env: dict[str, str]) -> str:
    """Return MLflow's telemetry setting as read inside a step process."""
    code = (
        "import steps.load\n"
        "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
        "print(MLFLOW_DISABLE_TELEMETRY.get())\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.strip()


def environment_without(*names: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in names}


def test_telemetry_off_by_default() -> None:
    env = environment_without("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")

    assert step_process_setting(env) == "True"


def test_telemetry_user_setting_kept() -> None:
    env = {**environment_without("DO_NOT_TRACK"), "MLFLOW_DISABLE_TELEMETRY": "false"}

    assert step_process_setting(env) == "False"


def test_prefect_analytics_off_by_default() -> None:
    code = "import os, steps\nprint(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])\n"
    env = environment_without("PREFECT_SERVER_ANALYTICS_ENABLED")

    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert completed.stdout.strip() == "false"
