"""Entry points of the MLflow project: load, train and evaluate.

Each module runs as ``python -m steps.<entry point>`` and reads its options
from the parameters that MLproject declares for it.
"""

import os

# MLflow and Prefect send usage telemetry unless it is disabled. This project
# turns it off by default, before any module imports mlflow or prefect.
# MLFLOW_DISABLE_TELEMETRY covers MLflow, PREFECT_SERVER_ANALYTICS_ENABLED
# Prefect's server and DO_NOT_TRACK Prefect's client. A value set beforehand
# wins, so DO_NOT_TRACK=false MLFLOW_DISABLE_TELEMETRY=false
# PREFECT_SERVER_ANALYTICS_ENABLED=true turns all of it back on.
TELEMETRY_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
}
for _name, _value in TELEMETRY_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
