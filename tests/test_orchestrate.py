"""The training-pipeline flow and orchestrate.py.

The flow runs in-process against the session's temporary Prefect server and
a SQLite tracking store in a temporary folder. `python orchestrate.py` and
`mlflow run . -e main` run as subprocesses. Every chain uses cheap
parameters (10 trees, 2 folds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import mlflow
import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

import orchestrate
from orchestration.flow import FLOW_RUN_TAG, PipelineFailed, training_pipeline
from orchestration.options import (
    build_parser,
    parse_command_line,
    pipeline_parameters,
    resolve_parameter_values,
)
from orchestration.summary import SUMMARY_ARTIFACT_KEY, SUMMARY_FILE, PipelineResult, render_text
from orchestration.tracking import absolute_tracking_uri, ui_hint
from steps.params import load_entry_point_specs
from tests.conftest import PROJECT_DIR, run_entry_point, use_tracking_store

CHEAP = {"n_estimators": 10, "cv_folds": 2}
CHEAP_ARGS = ["--n-estimators", "10", "--cv-folds", "2"]
STEPS = ["load", "train", "evaluate"]
# A chain of three cheap steps took 20 to 60 s on the 2-core development machine.
# This bounds a hung one.
PIPELINE_TIMEOUT_S = 600


def steps_of(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """Return the child runs of a parent run, oldest first."""
    parent = client.get_run(parent_run_id)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def by_step(runs: list[Run]) -> dict[str, Run]:
    """Index runs by their pipeline.step tag, keeping the latest attempt of each step."""
    return {run.data.tags["pipeline.step"]: run for run in runs}


# --- Options built from MLproject ---------------------------------------------


def test_options_cover_step_parameters() -> None:
    declared = {
        spec.name
        for entry_point in STEPS
        for spec in load_entry_point_specs(entry_point)
        if spec.name not in ("data_uri", "model_uri")
    }
    assert set(pipeline_parameters()) == declared
    flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    for name in declared:
        assert "--" + name.replace("_", "-") in flags
    assert "--data-uri" not in flags
    assert "--model-uri" not in flags


def test_shared_parameter_is_one_option() -> None:
    random_state = pipeline_parameters()["random_state"]
    assert random_state.entry_points == ("load", "train")
    assert random_state.spec.default == 42


def test_shared_parameter_conflict(tmp_path: Path) -> None:
    project = yaml.safe_load((PROJECT_DIR / "MLproject").read_text(encoding="utf-8"))
    project["entry_points"]["train"]["parameters"]["random_state"]["default"] = 7
    mlproject = tmp_path / "MLproject"
    mlproject.write_text(yaml.safe_dump(project), encoding="utf-8")
    with pytest.raises(ValueError, match="random_state"):
        pipeline_parameters(mlproject)


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for parameter in pipeline_parameters().values():
        spec = parameter.spec
        shown = "empty" if spec.default == "" else str(spec.default)
        option_help = text[text.index(f"{spec.flag} {spec.type.upper()} ") :]
        assert f"({spec.type}, default: {shown})" in option_help.split(" --")[0]
    for flag in ("--experiment-name", "--env-manager", "--project-uri", "--version"):
        assert flag in text


def test_options_accept_underscores() -> None:
    options = parse_command_line(["--n_estimators", "10", "--cv_folds=2", "--random-state", "7"])
    assert options.parameters == {"n_estimators": 10, "cv_folds": 2, "random_state": 7}


def test_options_default_to_nothing_given() -> None:
    options = parse_command_line([])
    assert options.parameters == {}
    assert options.experiment_name is None
    assert options.env_manager == "local"
    assert options.project_uri == str(PROJECT_DIR)
    assert options.version is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--n-estimators", "0"], "argument --n-estimators: invalid n_estimators='0'"),
        (["--max-depth", "deep"], "argument --max-depth: invalid max_depth='deep'"),
        (["--test-size", "1.5"], "argument --test-size: invalid test_size='1.5'"),
        (["--cv-folds", "1"], "argument --cv-folds: invalid cv_folds='1'"),
        (["--min-accuracy", "nan"], "argument --min-accuracy: invalid min_accuracy='nan'"),
        (["--env-manager", "pip"], "argument --env-manager: invalid choice: 'pip'"),
        (["--experiment-name", " "], "argument --experiment-name: invalid value ' '"),
        (["--n-est", "5"], "unrecognized arguments: --n-est 5"),
    ],
)
def test_options_reject_invalid(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_options_reject_folder_without_mlproject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(["--project-uri", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument --project-uri: invalid value {str(tmp_path)!r}" in error
    assert "no MLproject file" in error


def test_cli_rejects_before_runs_start(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        orchestrate.main(["--n-estimators", "0"])
    assert exit_info.value.code == 2
    assert "--n-estimators" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_parameters_reject_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown pipeline parameter n_trees"):
        resolve_parameter_values(pipeline_parameters(), {"n_trees": 5})


def test_parameters_fill_defaults() -> None:
    values = resolve_parameter_values(pipeline_parameters(), {"n_estimators": 10})
    assert values["n_estimators"] == 10
    assert values["test_size"] == 0.2
    assert values["random_state"] == 42


# --- Tracking URIs --------------------------------------------------------------


def test_relative_tracking_uri_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert absolute_tracking_uri("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_ui_hint_masks_password() -> None:
    hint = ui_hint("postgresql://alice:s3cret@127.0.0.1:5432/mlflow")
    assert hint.startswith("mlflow ui --backend-store-uri ")
    assert "s3cret" not in hint
    assert "alice:***@127.0.0.1" in hint
    assert ui_hint("http://127.0.0.1:5000").startswith("open http://127.0.0.1:5000")


# --- The whole chain, in-process ------------------------------------------------


@dataclass
class FinishedPipeline:
    tracking_uri: str
    client: MlflowClient
    result: PipelineResult
    parent: Run
    steps: dict[str, Run]


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, env_root: Path, prefect_api_url: str
) -> Iterator[FinishedPipeline]:
    """One successful pipeline run, shared by the tests that inspect it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = use_tracking_store(monkeypatch, tmp_path_factory.mktemp("pipeline"), env_root)
        result = training_pipeline(parameters=CHEAP, experiment_name="chain")
        client = MlflowClient(uri)
        steps = steps_of(client, result.parent_run_id)
        yield FinishedPipeline(
            uri, client, result, client.get_run(result.parent_run_id), by_step(steps)
        )
    assert mlflow.active_run() is None, "the flow left an MLflow run active"


def test_chain_nests_steps(finished: FinishedPipeline) -> None:
    parent_id = finished.parent.info.run_id
    assert finished.parent.info.status == "FINISHED"
    assert finished.parent.data.tags["pipeline.step"] == "main"
    assert list(finished.steps) == STEPS
    for step, run in finished.steps.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent_id
        assert run.info.run_name == step
        assert finished.parent.data.tags[f"pipeline.{step}_run_id"] == run.info.run_id


def test_chain_wires_uris(finished: FinishedPipeline) -> None:
    load, train, evaluate = (finished.steps[step] for step in STEPS)
    data_uri = load.data.tags["pipeline.data_uri"]
    model_uri = train.data.tags["pipeline.model_uri"]
    assert data_uri == f"runs:/{load.info.run_id}/data"
    assert train.data.params["data_uri"] == data_uri
    assert evaluate.data.params["model_uri"] == model_uri
    assert evaluate.data.params["data_uri"] == data_uri
    assert finished.parent.data.tags["pipeline.data_uri"] == data_uri
    assert finished.parent.data.tags["pipeline.model_uri"] == model_uri
    assert finished.result.model_uri == model_uri


def test_chain_records_parameters(finished: FinishedPipeline) -> None:
    parent = finished.parent.data.params
    assert parent["n_estimators"] == "10"
    assert parent["cv_folds"] == "2"
    assert parent["test_size"] == "0.2"
    assert parent["env_manager"] == "local"
    train = finished.steps["train"].data.params
    assert train["n_estimators"] == "10"
    assert train["random_state"] == finished.steps["load"].data.params["random_state"]


def test_chain_records_metrics(finished: FinishedPipeline) -> None:
    evaluate = finished.steps["evaluate"].data.metrics
    train = finished.steps["train"].data.metrics
    parent = finished.parent.data.metrics
    assert 0.5 < evaluate["accuracy"] <= 1.0
    assert parent["accuracy"] == evaluate["accuracy"]
    assert parent["f1_score"] == evaluate["f1_score"]
    assert parent["cv_accuracy_mean"] == train["cv_accuracy_mean"]
    assert finished.result.metrics["accuracy"] == evaluate["accuracy"]


def test_chain_summary_text(finished: FinishedPipeline) -> None:
    text = render_text(finished.result)
    assert text.startswith("Pipeline FINISHED")
    for step, run in finished.steps.items():
        assert f"{step:<9} FINISHED" in text
        assert run.info.run_id in text
    assert finished.result.model_uri in text
    assert f"mlflow ui --backend-store-uri {finished.tracking_uri}" in text


def test_chain_summary_on_parent(finished: FinishedPipeline, tmp_path: Path) -> None:
    parent_id = finished.parent.info.run_id
    path = finished.client.download_artifacts(parent_id, SUMMARY_FILE, str(tmp_path))
    summary = Path(path).read_text(encoding="utf-8")
    assert "# Training pipeline FINISHED" in summary
    assert finished.steps["train"].info.run_id in summary


def test_chain_summary_in_prefect(finished: FinishedPipeline) -> None:
    flow_run_id = UUID(finished.parent.data.tags[FLOW_RUN_TAG])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        flow = client.read_flow(flow_run.flow_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )

    assert flow.name == "training-pipeline"
    assert flow_run.state.is_completed()
    assert sorted(run.task_key.rsplit("-", 1)[0] for run in task_runs) == [
        "evaluate_model",
        "load_data",
        "train_model",
    ]
    assert len(artifacts) == 1
    markdown = artifacts[0].data
    assert "# Training pipeline FINISHED" in markdown
    for run in finished.steps.values():
        assert run.info.run_id in markdown
    assert finished.result.model_uri in markdown


# --- Failing steps, in-process --------------------------------------------------


def test_invalid_train_parameter_fails_pipeline(tracking_uri: str, prefect_api_url: str) -> None:
    state = training_pipeline(
        parameters={**CHEAP, "max_depth": -2}, experiment_name="bad-depth", return_state=True
    )

    assert state.is_failed()
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, PipelineFailed)
    client = MlflowClient()
    parent = client.get_run(failure.result.parent_run_id)
    steps = by_step(steps_of(client, parent.info.run_id))
    train_id = steps["train"].info.run_id
    assert str(failure).startswith(
        f"train step failed in MLflow run {train_id}: invalid max_depth='-2'"
    )
    assert parent.info.status == "FAILED"
    assert parent.data.tags["pipeline.error"] == str(failure)
    assert steps["load"].info.status == "FINISHED"
    assert steps["train"].info.status == "FAILED"
    assert "evaluate" not in steps
    assert [step.status for step in failure.result.steps] == ["FINISHED", "FAILED", "not run"]


def test_invalid_load_input_not_retried(tracking_uri: str, prefect_api_url: str) -> None:
    state = training_pipeline(
        parameters={"test_size": 1.5}, experiment_name="bad-split", return_state=True
    )

    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, PipelineFailed)
    runs = steps_of(MlflowClient(), failure.result.parent_run_id)
    assert [run.data.tags["pipeline.step"] for run in runs] == ["load"]
    assert str(failure).startswith(f"load step failed in MLflow run {runs[0].info.run_id}: ")
    assert "test_size" in str(failure)


@pytest.fixture
def flaky_project(tmp_path: Path) -> Path:
    """A copy of the project whose load step fails once, without a message, then works."""
    copy = tmp_path / "flaky-project"
    copy.mkdir()
    (copy / "conda.yaml").write_bytes((PROJECT_DIR / "conda.yaml").read_bytes())
    shutil.copytree(
        PROJECT_DIR / "steps", copy / "steps", ignore=shutil.ignore_patterns("__pycache__")
    )
    project = yaml.safe_load((PROJECT_DIR / "MLproject").read_text(encoding="utf-8"))
    load = project["entry_points"]["load"]
    # The marker file lives in the project folder, the working directory of the step.
    load["command"] = (
        "test -e load-attempted || (touch load-attempted; exit 1) && " + (load["command"])
    )
    (copy / "MLproject").write_text(yaml.safe_dump(project), encoding="utf-8")
    return copy


def test_load_retries_transient_failure(
    tracking_uri: str, prefect_api_url: str, flaky_project: Path
) -> None:
    # An invalid max_depth stops the chain at train, once load's retry is visible.
    state = training_pipeline(
        parameters={**CHEAP, "max_depth": -2},
        experiment_name="flaky",
        project_uri=str(flaky_project),
        return_state=True,
    )

    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, PipelineFailed)
    client = MlflowClient()
    parent = client.get_run(failure.result.parent_run_id)
    runs = steps_of(client, parent.info.run_id)
    loads = [run for run in runs if run.data.tags["pipeline.step"] == "load"]
    assert [run.info.status for run in loads] == ["FAILED", "FINISHED"]
    assert "pipeline.error" not in loads[0].data.tags
    assert parent.data.tags["pipeline.load_run_id"] == loads[1].info.run_id
    train = by_step(runs)["train"]
    assert train.data.params["data_uri"] == f"runs:/{loads[1].info.run_id}/data"
    assert str(failure).startswith("train step failed")


def test_cli_exits_nonzero_on_failed_step(
    tracking_uri: str, prefect_api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # One tree of depth 1 predicts at most two of the three Iris classes, so its
    # accuracy stays below 2/3 and evaluate's min_accuracy check fails.
    argv = ["--n-estimators", "1", "--max-depth", "1", "--cv-folds", "2", "--min-accuracy", "0.9"]

    status = orchestrate.main([*argv, "--experiment-name", "weak-model"])

    assert status == 1
    output = capsys.readouterr()
    client = MlflowClient()
    parent = client.search_runs(
        [client.get_experiment_by_name("weak-model").experiment_id],
        filter_string="tags.`pipeline.step` = 'main'",
    )[0]
    evaluate = by_step(steps_of(client, parent.info.run_id))["evaluate"]
    expected = f"evaluate step failed in MLflow run {evaluate.info.run_id}: "
    assert f"error: {expected}" in output.err
    assert "below min_accuracy" in output.err
    assert output.out.startswith(f"Pipeline FAILED: {expected}")
    assert parent.info.status == "FAILED"
    assert evaluate.info.status == "FAILED"
    assert evaluate.data.metrics["accuracy"] < 0.9


# --- Subprocesses: orchestrate.py and mlflow run --------------------------------


def run_orchestrate(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(PROJECT_DIR / "orchestrate.py"), *args]
    return subprocess.run(
        command,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
    )


def assert_finished_pipeline(client: MlflowClient, experiment_name: str) -> Run:
    """Assert that the experiment contains one FINISHED parent with three FINISHED steps.

    Returns the parent run.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`pipeline.step` = 'main'"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    steps = steps_of(client, parent.info.run_id)
    assert [run.data.tags["pipeline.step"] for run in steps] == STEPS
    assert [run.info.status for run in steps] == ["FINISHED"] * 3
    return parent


@pytest.mark.slow
def test_cli_runs_without_venv_on_path(
    tracking_uri: str, prefect_api_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        # Without the venv on PATH, `python` here has no mlflow: the steps run
        # only if orchestrate.py puts its own interpreter first.
        "PATH": "/usr/bin:/bin",
    }

    completed = run_orchestrate([*CHEAP_ARGS, "--experiment-name", "cli"], env, tmp_path)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    parent = assert_finished_pipeline(MlflowClient(), "cli")
    # The steps print their outputs (data_uri=..., ...) before the summary.
    assert "\nPipeline FINISHED\n" in completed.stdout
    assert parent.info.run_id in completed.stdout
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in completed.stdout
    assert "Model trained with accuracy: " in completed.stderr
    assert "Model evaluated with accuracy: " in completed.stderr


@pytest.mark.slow
def test_cli_default_without_servers(tracking_uri: str, tmp_path: Path) -> None:
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env["PREFECT_HOME"] = str(tmp_path / "prefect")

    completed = run_orchestrate(CHEAP_ARGS, env, workdir)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Starting temporary server on http://127.0.0.1:" in completed.stderr
    database = workdir / "mlflow.db"
    assert database.is_file()
    assert f"mlflow ui --backend-store-uri sqlite:///{database}" in completed.stdout
    assert_finished_pipeline(MlflowClient(f"sqlite:///{database}"), "iris-forest-pipeline")
    assert "telemetry" not in output.lower()
    assert "sens-o-matic" not in output


@pytest.mark.slow
def test_mlflow_run_main(
    tracking_uri: str, prefect_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)

    result = run_entry_point("main", CHEAP, experiment_name="via-mlflow-run")

    assert result.returncode == 0, result.output
    assert "Using experiment" not in result.stderr
    parent = assert_finished_pipeline(MlflowClient(), "via-mlflow-run")
    assert result.run is not None
    assert result.run.info.run_id == parent.info.run_id
    assert parent.data.params["n_estimators"] == "10"
    assert parent.data.params["test_size"] == "0.2"
    assert parent.data.tags["pipeline.model_uri"].startswith("models:/")
