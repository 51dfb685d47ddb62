"""The Prefect flow that runs the project's entry points as one pipeline.

``orchestrate.py`` is the command line, and these modules are its parts:

- ``options``: pipeline parameters built from MLproject;
- ``tracking``: the parent and child MLflow runs;
- ``launch``: one ``mlflow.projects.run`` per step;
- ``flow``: the ``training-pipeline`` flow and its tasks;
- ``summary``: the report printed at the end and published to Prefect.
"""

# Importing steps sets the telemetry defaults (off) before any submodule
# imports mlflow or prefect.
import steps  # noqa: F401
