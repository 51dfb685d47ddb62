"""Run a step inside its MLflow run and turn failures into FAILED runs.

Under ``mlflow run`` the step attaches to the run that MLflow created (it
passes the id in MLFLOW_RUN_ID); run directly as ``python -m steps.<name>``,
it starts a run of its own. Either way a bad parameter or a failed check ends
with one line on stderr, the run marked FAILED with the message in the
``pipeline.error`` tag, and exit status 2.
"""

from __future__ import annotations

import logging
import resource
import sys
from collections.abc import Callable, Sequence
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from steps.params import ParameterError, parse_parameters

logger = logging.getLogger(__name__)

# Tag names that other tools search for. Renaming one is a breaking change.
STEP_TAG = "pipeline.step"
ERROR_TAG = "pipeline.error"
DATA_URI_TAG = "pipeline.data_uri"
MODEL_URI_TAG = "pipeline.model_uri"
# Peak resident memory of the step's process, logged when the step succeeds.
PEAK_RSS_METRIC = "peak_rss_mb"

EXIT_INVALID = 2

# Characters of an unexpected exception's first line kept in the error tag.
# MLflow rejects tag values longer than 8000 characters.
MAX_SUMMARY_CHARS = 1000


class StepError(RuntimeError):
    """A failure the user can fix, reported as one line without a traceback."""


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # MLflow's own INFO lines repeat what the steps log.
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def run_step(
    entry_point: str,
    body: Callable[[dict[str, Any]], None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the entry point's parameters, then call ``body`` in the active run.

    Returns the process exit status: 0 on success, 2 for an invalid parameter
    or a failed check. Any other exception propagates with its type and first
    line in the ``pipeline.error`` tag, and MLflow marks the run FAILED as the
    ``with`` block exits.
    """
    configure_logging()
    try:
        params = parse_parameters(entry_point, argv)
        parse_error = None
    except ParameterError as exc:
        params, parse_error = {}, exc

    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, entry_point)
        try:
            if parse_error is not None:
                raise parse_error
            _log_new_params(run.info.run_id, params)
            body(params)
            mlflow.log_metric(PEAK_RSS_METRIC, peak_rss_mb())
        except (ParameterError, StepError) as exc:
            return _fail(run.info.run_id, entry_point, str(exc))
        except Exception as exc:
            # Unexpected: keep the traceback, but record the cause where users search runs.
            mlflow.set_tag(ERROR_TAG, _summary(exc))
            raise
    return 0


def peak_rss_mb() -> float:
    """Return the peak resident memory of this process so far, in MiB."""
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log_new_params(run_id: str, params: dict[str, Any]) -> None:
    # `mlflow run` has already logged the values as the user typed them, and
    # MLflow rejects a second, different value for a logged key.
    logged = mlflow.get_run(run_id).data.params
    fresh = {key: value for key, value in params.items() if key not in logged}
    if fresh:
        mlflow.log_params(fresh)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _summary(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    summary = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return summary[:MAX_SUMMARY_CHARS]


def _fail(run_id: str, entry_point: str, message: str) -> int:
    message = _one_line(message)
    mlflow.set_tag(ERROR_TAG, message)
    mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
    print(f"error: {entry_point} run {run_id}: {message}", file=sys.stderr)
    return EXIT_INVALID
