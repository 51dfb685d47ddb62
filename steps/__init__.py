"""Entry points of the MLflow project: load, train and evaluate.

Each module runs as ``python -m steps.<entry point>`` and reads its options
from the parameters that MLproject declares for it.
"""

import os

# MLflow and Prefect send usage telemetry unless told not to. This project
# turns both off by default; setting either variable beforehand turns them
# back on (MLFLOW_DISABLE_TELEMETRY=false, PREFECT_SERVER_ANALYTICS_ENABLED=true).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
