"""The parent MLflow run of a pipeline and the child run of each step.

Writes to the tracking store only through ``MlflowClient`` with explicit run
ids, never through MLflow's process-wide active run, so several pipelines
can share one process or one tracking server. Reads step results back from
the run tags the steps write (``pipeline.data_uri``, ``pipeline.model_uri``,
``pipeline.error``), which works wherever the step ran.
"""

from __future__ import annotations

import getpass
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
from mlflow.entities import Param, RunStatus, SourceType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_PROJECT_ENTRY_POINT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from orchestration.source import mask_url

logger = logging.getLogger(__name__)

PIPELINE_ENTRY_POINT = "main"


def use_absolute_tracking_uri() -> str:
    """Make a relative local tracking URI absolute, set it, and return it.

    The steps run with the project folder as working directory, so a relative
    ``sqlite:///mlflow.db`` would point them at another database than this
    process. Remote URIs are returned unchanged.
    """
    uri = mlflow.get_tracking_uri()
    absolute = absolute_tracking_uri(uri)
    if absolute != uri:
        mlflow.set_tracking_uri(absolute)
    return absolute


def absolute_tracking_uri(uri: str) -> str:
    """Return ``uri`` with a relative SQLite or file-store path made absolute."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return "sqlite:///" + str(Path(path).resolve())
        return uri
    parts = urlsplit(uri)
    if parts.scheme in ("", "file") and not parts.netloc:
        path = Path(parts.path)
        if not path.is_absolute():
            return path.resolve().as_uri()
    return uri


def ui_hint(tracking_uri: str) -> str:
    """Return how to look at the runs: the server's address or the ``mlflow ui`` command."""
    masked = mask_url(tracking_uri)
    scheme = urlsplit(tracking_uri).scheme
    if scheme in ("http", "https"):
        return f"open {masked} (the tracking server serves the UI)"
    if scheme.startswith("databricks"):
        return "open the experiment in the Databricks workspace"
    return f"mlflow ui --backend-store-uri {shlex.quote(masked)}"


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """Return the id of the named experiment, creating it when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:
        # Another pipeline may have created it between the two calls.
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


def project_tags(project_uri: str, entry_point: str, source_tags: Mapping[str, str]) -> dict:
    """Tags that ``mlflow run`` gives a run it creates, plus those of the project source."""
    return {
        MLFLOW_USER: getpass.getuser(),
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.PROJECT),
        MLFLOW_SOURCE_NAME: project_uri,
        MLFLOW_PROJECT_ENTRY_POINT: entry_point,
        **source_tags,
    }


def create_child_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    entry_point: str,
    parameters: Mapping[str, str],
    tags: Mapping[str, str],
) -> str:
    """Create the run of one step under the parent run and log the parameters it gets.

    ``mlflow.projects.run`` given this run's id neither tags it nor logs its
    parameters, so this does both, as ``mlflow run`` would for a run it creates.
    """
    run = client.create_run(
        experiment_id,
        tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id},
        run_name=entry_point,
    )
    run_id = run.info.run_id
    if parameters:
        client.log_batch(run_id, params=[Param(key, value) for key, value in parameters.items()])
    return run_id


def log_new_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log the parameters the run does not have yet.

    ``mlflow run`` logs the ``-P`` values as typed, and MLflow rejects a
    second, different value for a logged key.
    """
    logged = client.get_run(run_id).data.params
    fresh = [Param(key, str(value)) for key, value in params.items() if key not in logged]
    if fresh:
        client.log_batch(run_id, params=fresh)


def end_run(client: MlflowClient, run_id: str, status: RunStatus | int) -> None:
    """Mark a run terminated with ``status`` unless it has ended already."""
    current = client.get_run(run_id).info.status
    if RunStatus.is_terminated(RunStatus.from_string(current)):
        return
    client.set_terminated(run_id, RunStatus.to_string(status))
