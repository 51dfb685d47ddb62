"""Launch one step of the pipeline with ``mlflow.projects.run`` and read its result.

Each step runs as the project's entry point of the same name, in a child run
created beforehand under the pipeline's parent run. The step's output is read
from the tags it writes to its run (``pipeline.data_uri`` for load,
``pipeline.model_uri`` for train), not from its stdout, so the result is the
same when the step ran on another machine. A failed step is reported with the
one-line message it recorded in ``pipeline.error``.

There is one ``launch_<step>`` function per step kind. Before a step starts,
the step cache (``orchestration.cache``) looks for a FINISHED run of the same
step with the same cache key, and that run is reused instead of running the
step again.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow.projects
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestration.cache import CacheError, lookup_step
from orchestration.tracking import create_child_run, end_run, project_tags
from steps.params import ParameterError, load_entry_point_specs
from steps.runner import DATA_URI_TAG, ERROR_TAG, MODEL_URI_TAG, STEP_TAG

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepContext:
    """Settings shared by the step launches of one pipeline run: project, experiment, parent."""

    work_dir: str
    project_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    env_manager: str
    source_tags: dict[str, str] = field(default_factory=dict)
    # Steps that run even when a finished run with their cache key exists.
    forced_steps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StepResult:
    """A step's MLflow run as the tracking store recorded it.

    ``output_uri`` is what the step produced: the split folder for load, the
    model for train, the run's artifact folder (``runs:/<run_id>/``) for evaluate.
    ``cached`` is True when the run is an earlier pipeline's, reused from the cache.
    """

    step: str
    run_id: str | None
    status: str
    duration_s: float | None = None
    output_uri: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cached: bool = False


class StepFailed(RuntimeError):
    """A step whose run ended FAILED, with the message the step recorded.

    ``retryable`` is False when the step rejected its input or failed a check
    (it recorded ``pipeline.error``), because running it again gives the same
    result.
    """

    def __init__(self, step: str, run_id: str | None, error: str, retryable: bool):
        where = f"in MLflow run {run_id}" if run_id else "before its MLflow run started"
        super().__init__(f"{step} step failed {where}: {error}")
        self.step = step
        self.run_id = run_id
        self.error = error
        self.retryable = retryable


def launch_load(
    values: Mapping[str, Any], context: StepContext, log: logging.Logger | None = None
) -> StepResult:
    """Run ``load``, whose ``output_uri`` is the split folder it logged."""
    return _launch("load", values, {}, context, DATA_URI_TAG, log or logger)


def launch_train(
    values: Mapping[str, Any],
    data_uri: str,
    context: StepContext,
    log: logging.Logger | None = None,
) -> StepResult:
    """Run ``train`` on the splits at ``data_uri``, with the model URI as ``output_uri``."""
    return _launch("train", values, {"data_uri": data_uri}, context, MODEL_URI_TAG, log or logger)


def launch_evaluate(
    values: Mapping[str, Any],
    model_uri: str,
    data_uri: str,
    context: StepContext,
    log: logging.Logger | None = None,
) -> StepResult:
    """Run ``evaluate`` on a model and splits, with ``runs:/<run_id>/`` as ``output_uri``."""
    wired = {"model_uri": model_uri, "data_uri": data_uri}
    return _launch("evaluate", values, wired, context, None, log or logger)


def step_parameters(
    entry_point: str, values: Mapping[str, Any], wired: Mapping[str, str], work_dir: str
) -> dict[str, str]:
    """Select the values the entry point declares, as the strings ``mlflow run`` passes."""
    declared = load_entry_point_specs(entry_point, Path(work_dir) / "MLproject")
    parameters = {spec.name: str(values[spec.name]) for spec in declared if spec.name in values}
    parameters.update(wired)
    return parameters


def _launch(
    entry_point: str,
    values: Mapping[str, Any],
    wired: Mapping[str, str],
    context: StepContext,
    output_tag: str | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> StepResult:
    client = MlflowClient()
    parameters = step_parameters(entry_point, values, wired, context.work_dir)
    cache_tags = {}
    try:
        lookup = lookup_step(
            client,
            context.experiment_id,
            entry_point,
            parameters,
            work_dir=Path(context.work_dir),
            env_manager=context.env_manager,
            use_cache=entry_point not in context.forced_steps,
        )
    except (ParameterError, CacheError) as exc:
        # The step itself rejects an invalid value, with a FAILED run that names it.
        log.warning("Running %s without the cache: %s", entry_point, exc)
    else:
        if lookup.run is not None:
            return _reused(entry_point, lookup.run, output_tag, log)
        cache_tags = lookup.tags
    tags = {
        **project_tags(context.project_uri, entry_point, context.source_tags),
        **cache_tags,
        STEP_TAG: entry_point,
    }
    run_id = create_child_run(
        client, context.experiment_id, context.parent_run_id, entry_point, parameters, tags
    )
    log.info("Starting %s in MLflow run %s", entry_point, run_id)

    _put_interpreter_first_on_path()
    try:
        mlflow.projects.run(
            uri=context.work_dir,
            entry_point=entry_point,
            parameters=parameters,
            env_manager=context.env_manager,
            experiment_name=context.experiment_name,
            synchronous=True,
            run_id=run_id,
        )
    except (MlflowException, OSError) as exc:
        # The step's own message replaces MLflow's "Run (ID ...) failed" and its traceback.
        raise _failure(client, entry_point, run_id, exc) from None
    except BaseException:
        # An interrupt stops the step, and its run must not stay RUNNING.
        end_run(client, run_id, RunStatus.KILLED)
        raise

    run = client.get_run(run_id)
    output_uri = run.data.tags.get(output_tag) if output_tag else f"runs:/{run_id}/"
    if not output_uri:
        raise StepFailed(
            entry_point, run_id, f"the run finished without the {output_tag} tag", False
        )
    return describe_run(entry_point, run, output_uri)


def _reused(
    entry_point: str,
    run: Run,
    output_tag: str | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> StepResult:
    run_id = run.info.run_id
    log.info("Reusing %s run %s (cached): it finished with the same cache key", entry_point, run_id)
    output_uri = run.data.tags.get(output_tag) if output_tag else f"runs:/{run_id}/"
    return replace(describe_run(entry_point, run, output_uri), cached=True)


def describe_run(step: str, run: Run, output_uri: str | None = None) -> StepResult:
    info = run.info
    duration = None
    if info.start_time is not None and info.end_time is not None:
        duration = (info.end_time - info.start_time) / 1000
    return StepResult(step, info.run_id, info.status, duration, output_uri, dict(run.data.metrics))


def _failure(client: MlflowClient, step: str, run_id: str, exc: Exception) -> StepFailed:
    error = client.get_run(run_id).data.tags.get(ERROR_TAG)
    if error:
        return StepFailed(step, run_id, error, retryable=False)
    status = RunStatus.from_string(client.get_run(run_id).info.status)
    if RunStatus.is_terminated(status):
        return StepFailed(
            step,
            run_id,
            f"the step exited with an error without recording the {ERROR_TAG} tag; "
            "its output above shows the cause",
            retryable=True,
        )
    # The step never started (its environment or command could not be set up), so
    # mlflow.projects.run left the run RUNNING.
    end_run(client, run_id, RunStatus.FAILED)
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StepFailed(step, run_id, f"the step could not start: {first_line}", retryable=True)


def _put_interpreter_first_on_path() -> None:
    """Put this interpreter's folder first on this process's PATH.

    ``mlflow.projects.run`` starts the step with a copy of this process's
    environment, and with ``--env-manager local`` the step command runs the
    ``python`` found on PATH. This makes ``.venv/bin/python orchestrate.py``
    run the steps in the same venv without activating it; the other managers
    activate their own environment in front of it. The change is left in
    place, and every caller writes the same value, so flows running in
    parallel threads of one process cannot undo each other's.
    """
    folder = str(Path(sys.executable).parent)
    current = os.environ.get("PATH", "")
    if current.split(os.pathsep)[0] != folder:
        os.environ["PATH"] = os.pathsep.join([folder, current]) if current else folder
