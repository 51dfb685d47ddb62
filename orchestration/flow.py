"""The Prefect flow ``training-pipeline``: load, train and evaluate under one parent run.

Each task launches one entry point through ``mlflow.projects.run`` in a child
run of the pipeline's parent MLflow run and passes the URI the step recorded
to the next one: load's ``pipeline.data_uri`` to train and evaluate, train's
``pipeline.model_uri`` to evaluate.

The parent run records:

- the pipeline parameters, ``env_manager`` and ``project_uri``;
- tags ``pipeline.<step>_run_id`` (each child's id), ``pipeline.data_uri``,
  ``pipeline.model_uri``, ``pipeline.prefect_flow_run_id``,
  ``pipeline.cached.<step>`` (the earlier run that a cached step reused) and,
  when a step fails, ``pipeline.error``;
- the metrics of every step that ran;
- the summary as the artifact ``pipeline_summary.md``.

It ends FAILED when a step fails. The summary is also published as the
Prefect markdown artifact ``pipeline-summary``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import Task, exponential_backoff

from orchestration.cache import reuse_tags
from orchestration.launch import (
    StepContext,
    StepFailed,
    StepResult,
    describe_run,
    launch_evaluate,
    launch_load,
    launch_train,
)
from orchestration.options import (
    DEFAULT_ENV_MANAGER,
    PIPELINE_ENTRY_POINTS,
    check_env_manager,
    default_experiment_name,
    pipeline_parameters,
    resolve_parameter_values,
)
from orchestration.source import ProjectSource, mask_url, resolve_project
from orchestration.summary import (
    SUMMARY_ARTIFACT_KEY,
    SUMMARY_FILE,
    PipelineResult,
    render_markdown,
)
from orchestration.tracking import (
    PIPELINE_ENTRY_POINT,
    end_run,
    get_or_create_experiment,
    log_new_params,
    project_tags,
    use_absolute_tracking_uri,
)
from steps.params import PROJECT_DIR
from steps.runner import DATA_URI_TAG, ERROR_TAG, MODEL_URI_TAG, STEP_TAG

logger = logging.getLogger(__name__)

FLOW_RUN_TAG = "pipeline.prefect_flow_run_id"

# load_data retries a failure the step did not explain (a crash, a lost
# connection to the tracking store) after about 2 s, then 4 s.
LOAD_RETRIES = 2
LOAD_RETRY_BACKOFF_S = 2.0


class PipelineFailed(RuntimeError):
    """A pipeline run that ended FAILED, with what it recorded in ``result``."""

    def __init__(self, result: PipelineResult):
        super().__init__(result.error or "the pipeline failed")
        self.result = result


def _should_retry(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry unless the step rejected its input or failed a check of its own."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, StepFailed) and not error.retryable)


@task(
    name="load_data",
    retries=LOAD_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=LOAD_RETRY_BACKOFF_S),
    retry_jitter_factor=0.2,
    retry_condition_fn=_should_retry,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def load_data(values: dict[str, Any], context: StepContext) -> StepResult:
    log = get_run_logger()
    result = launch_load(values, context, log)
    log.info("Data loaded to %s (MLflow run %s)", result.output_uri, result.run_id)
    return result


@task(name="train_model", cache_policy=NO_CACHE, persist_result=False)
def train_model(values: dict[str, Any], data_uri: str, context: StepContext) -> StepResult:
    log = get_run_logger()
    result = launch_train(values, data_uri, context, log)
    log.info(
        "Model trained with accuracy: %s (cross-validated mean; %s on the training rows)",
        _metric(result, "cv_accuracy_mean"),
        _metric(result, "train_accuracy"),
    )
    log.info("Model logged as %s (MLflow run %s)", result.output_uri, result.run_id)
    return result


@task(name="evaluate_model", cache_policy=NO_CACHE, persist_result=False)
def evaluate_model(
    values: dict[str, Any], model_uri: str, data_uri: str, context: StepContext
) -> StepResult:
    log = get_run_logger()
    result = launch_evaluate(values, model_uri, data_uri, context, log)
    log.info("Model evaluated with accuracy: %s on the test split", _metric(result, "accuracy"))
    log.info("Evaluation results in %s (MLflow run %s)", result.output_uri, result.run_id)
    return result


@flow(name="training-pipeline", persist_result=False)
def training_pipeline(
    parameters: dict[str, Any] | None = None,
    experiment_name: str | None = None,
    env_manager: str = DEFAULT_ENV_MANAGER,
    project_uri: str = str(PROJECT_DIR),
    version: str | None = None,
    parent_run_id: str | None = None,
    no_cache: bool = False,
    force: Sequence[str] = (),
) -> PipelineResult:
    """Run load, train and evaluate as children of one parent MLflow run.

    ``parameters`` overrides the MLproject defaults of the pipeline parameters
    (the steps validate the values). ``parent_run_id`` names an existing run to
    use as the parent, as under ``mlflow run -e main``; otherwise a new parent
    run starts in ``experiment_name``, created when missing. When a step fails,
    the flow run ends Failed and calling the flow raises PipelineFailed.

    A step whose finished run with the same cache key exists is reused, not run
    again, unless ``no_cache`` is set or ``force`` names the step.
    """
    check_env_manager(env_manager)
    if isinstance(force, str):
        force = force.split(",")
    forced_steps = frozenset(PIPELINE_ENTRY_POINTS if no_cache else force)
    unknown_steps = sorted(forced_steps - set(PIPELINE_ENTRY_POINTS))
    if unknown_steps:
        raise ValueError(
            f"invalid force={', '.join(unknown_steps)}: expected steps among "
            f"{', '.join(PIPELINE_ENTRY_POINTS)}"
        )
    tracking_uri = use_absolute_tracking_uri()
    source = resolve_project(project_uri, version)
    declared = pipeline_parameters(Path(source.work_dir) / "MLproject")
    values = resolve_parameter_values(declared, parameters)

    client = MlflowClient()
    context = _open_parent_run(
        client, parent_run_id, experiment_name, source, project_uri, env_manager
    )
    context = replace(context, forced_steps=forced_steps)
    run_settings = {"env_manager": env_manager, "project_uri": mask_url(project_uri)}
    if version is not None:
        run_settings["version"] = version
    try:
        log_new_params(client, context.parent_run_id, {**values, **run_settings})
        source.log_to_run(context.parent_run_id)
    except BaseException as exc:
        _abort_parent_run(client, context.parent_run_id, exc)
        raise
    get_run_logger().info(
        "Pipeline parent run %s in experiment %r", context.parent_run_id, context.experiment_name
    )

    result = _run_steps(client, context, values, tracking_uri)
    if result.status != "FINISHED":
        return Failed(message=result.error, data=PipelineFailed(result))
    return result


def _open_parent_run(
    client: MlflowClient,
    parent_run_id: str | None,
    experiment_name: str | None,
    source: ProjectSource,
    project_uri: str,
    env_manager: str,
) -> StepContext:
    project_uri = mask_url(project_uri)
    tags = {
        **project_tags(project_uri, PIPELINE_ENTRY_POINT, source.tags()),
        STEP_TAG: PIPELINE_ENTRY_POINT,
        FLOW_RUN_TAG: str(flow_run.id),
    }
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        experiment = client.get_experiment(parent.info.experiment_id)
        if experiment_name and experiment_name != experiment.name:
            get_run_logger().warning(
                "Using experiment %r of parent run %s, not %r",
                experiment.name,
                parent_run_id,
                experiment_name,
            )
        # `mlflow run` has tagged the run already, so only the pipeline's own tags are added.
        for key in (STEP_TAG, FLOW_RUN_TAG):
            client.set_tag(parent_run_id, key, tags[key])
    else:
        experiment_id = get_or_create_experiment(
            client, experiment_name or default_experiment_name()
        )
        experiment = client.get_experiment(experiment_id)
        parent = client.create_run(experiment_id, tags=tags, run_name=str(flow_run.name))

    return StepContext(
        work_dir=str(source.work_dir),
        project_uri=project_uri,
        experiment_id=experiment.experiment_id,
        experiment_name=experiment.name,
        parent_run_id=parent.info.run_id,
        env_manager=env_manager,
        source_tags=dict(source.tags()),
    )


def _run_steps(
    client: MlflowClient, context: StepContext, values: dict[str, Any], tracking_uri: str
) -> PipelineResult:
    steps = {name: StepResult(name, None, "not run") for name in PIPELINE_ENTRY_POINTS}
    error = None
    try:
        steps["load"] = load_data(values, context)
        data_uri = steps["load"].output_uri
        steps["train"] = train_model(values, data_uri, context)
        model_uri = steps["train"].output_uri
        steps["evaluate"] = evaluate_model(values, model_uri, data_uri, context)
    except StepFailed as exc:
        error = str(exc)
        if exc.run_id:
            steps[exc.step] = describe_run(exc.step, client.get_run(exc.run_id))
    except BaseException as exc:
        _abort_parent_run(client, context.parent_run_id, exc)
        raise

    result = PipelineResult(
        status="FAILED" if error else "FINISHED",
        parent_run_id=context.parent_run_id,
        experiment_name=context.experiment_name,
        tracking_uri=tracking_uri,
        steps=list(steps.values()),
        data_uri=steps["load"].output_uri,
        model_uri=steps["train"].output_uri,
        error=error,
        flow_run_name=str(flow_run.name),
    )
    return _record_outcome(client, result)


def _abort_parent_run(client: MlflowClient, run_id: str, exc: BaseException) -> None:
    """End the parent run after an error outside the steps, as KILLED on an interrupt."""
    status = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    client.set_tag(run_id, ERROR_TAG, message)
    end_run(client, run_id, status)


def _record_outcome(client: MlflowClient, result: PipelineResult) -> PipelineResult:
    """Record the outcome on the parent run and in Prefect, then end the parent run."""
    # A failed step's metrics count too: evaluate logs accuracy before it fails
    # a min_accuracy check. A later step's value wins when two steps log one key.
    metrics: dict[str, float] = {}
    for step in result.steps:
        metrics.update(step.metrics)
    result = replace(result, metrics=metrics)

    run_id = result.parent_run_id
    tags = {f"pipeline.{step.step}_run_id": step.run_id for step in result.steps if step.run_id}
    for step in result.steps:
        if step.cached and step.run_id:
            tags.update(reuse_tags(step.step, step.run_id))
    if result.data_uri:
        tags[DATA_URI_TAG] = result.data_uri
    if result.model_uri:
        tags[MODEL_URI_TAG] = result.model_uri
    if result.error:
        tags[ERROR_TAG] = result.error
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    now_ms = int(time.time() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, v, now_ms, 0) for k, v in metrics.items()])

    markdown = render_markdown(result)
    client.log_text(run_id, markdown, SUMMARY_FILE)
    _publish_summary(markdown, result)
    end_run(client, run_id, RunStatus.FAILED if result.error else RunStatus.FINISHED)
    return result


def _publish_summary(markdown: str, result: PipelineResult) -> None:
    try:
        create_markdown_artifact(
            markdown=markdown,
            key=SUMMARY_ARTIFACT_KEY,
            description=f"Training pipeline {result.status}, MLflow run {result.parent_run_id}",
        )
    except httpx.HTTPError as exc:
        # The summary is also in the parent run; a Prefect API hiccup must not fail the run.
        get_run_logger().warning(
            "Could not publish the %s artifact for MLflow run %s: %s",
            SUMMARY_ARTIFACT_KEY,
            result.parent_run_id,
            exc,
        )


def _metric(result: StepResult, key: str) -> str:
    value = result.metrics.get(key)
    return "n/a" if value is None else f"{value:.4f}"
