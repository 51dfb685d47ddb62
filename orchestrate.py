"""Run the whole pipeline, load then train then evaluate, as one Prefect flow.

    python orchestrate.py [--n-estimators 100 ...]
    mlflow run . -P n_estimators=100        (entry point ``main``)

Every step runs through ``mlflow.projects.run`` in a child run of one parent
MLflow run. Options come from the parameters that MLproject declares for the
steps (``--help`` lists them with their defaults). At the end this prints a
summary: each step's run id, status and duration, the metrics, the model URI
and the command that opens the MLflow UI.

A step is not run again when the tracking store has a finished run of it with
the same parameters, inputs, code and environment: that run is reused and
shown as ``cached``. ``--no-cache`` runs every step and ``--force STEP`` one.

Exit status: 0 when every step finished, 1 when a step failed, 2 for an
invalid option or project.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

# The orchestration package sets the telemetry defaults before its modules load mlflow/prefect.
from orchestration.options import parse_command_line

EXIT_STEP_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_command_line(argv)
    # Loaded after the options are valid: mlflow and prefect take seconds to import.
    from orchestration.flow import PipelineFailed, training_pipeline
    from orchestration.source import ProjectSourceError
    from orchestration.summary import render_text

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        result = training_pipeline(
            parameters=options.parameters,
            experiment_name=options.experiment_name,
            env_manager=options.env_manager,
            project_uri=options.project_uri,
            version=options.version,
            # Set by `mlflow run` for entry point main: that run is the parent.
            parent_run_id=os.environ.get("MLFLOW_RUN_ID") or None,
            no_cache=options.no_cache,
            force=options.force,
        )
    except ProjectSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except PipelineFailed as exc:
        print(render_text(exc.result))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STEP_FAILED
    except KeyboardInterrupt:
        # The running step and the parent run are already marked FAILED and KILLED.
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    print(render_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
