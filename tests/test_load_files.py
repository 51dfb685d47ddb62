"""Users' own tables through the real `mlflow run`: files, URIs, the model, bad input.

The module chains load, train and evaluate once on a CSV file made from the
Wine data set with gaps, text and boolean columns added (see
tests/test_tabular.py), in a tracking store of its own. Other tests run load
on Parquet, on a file served over HTTP on 127.0.0.1, on a run artifact, and on
bad files, each in a store of its own.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.entities import Run

from steps.tables import read_table
from tests.conftest import VENV_BIN, MlflowRunResult, run_entry_point, use_tracking_store
from tests.test_tabular import CULTIVARS, wine_table

CHEAP = {"n_estimators": 10, "cv_folds": 2}
# Columns of the file that are not model inputs: the label, the one passed
# in drop_columns, and the constant and empty ones that load drops itself.
NOT_FEATURES = ["cultivar", "id", "constant", "empty"]
SERVER_START_TIMEOUT_S = 60


def printed(result: MlflowRunResult, key: str) -> str:
    for line in result.stdout.splitlines():
        if line.startswith(f"{key}="):
            return line.removeprefix(f"{key}=")
    raise AssertionError(f"no {key}= line in the output:\n{result.output}")


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


def dataset_inputs(run: Run) -> dict[str, mlflow.entities.Dataset]:
    """Return the run's dataset inputs by their context tag."""
    inputs = {}
    for item in run.inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]
        inputs[context] = item.dataset
    return inputs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("files")
    frame = wine_table()
    frame.to_csv(folder / "wine.csv", index=False)
    frame.to_parquet(folder / "wine.parquet", index=False)
    return folder


@dataclass(frozen=True)
class Chain:
    tracking_uri: str
    csv: Path
    load: MlflowRunResult
    train: MlflowRunResult
    evaluate: MlflowRunResult
    data_uri: str
    model_uri: str


@pytest.fixture(scope="module")
def chain_runs(
    tmp_path_factory: pytest.TempPathFactory, env_root: Path, files: Path
) -> Iterator[Chain]:
    csv = files / "wine.csv"
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = use_tracking_store(monkeypatch, tmp_path_factory.mktemp("chain"), env_root)
        load = run_entry_point(
            "load", {"data_path": csv, "target": "cultivar", "drop_columns": "id"}
        )
        data_uri = printed(load, "data_uri")
        train = run_entry_point("train", {"data_uri": data_uri, **CHEAP})
        model_uri = printed(train, "model_uri")
        evaluate = run_entry_point("evaluate", {"model_uri": model_uri})
        yield Chain(uri, csv, load, train, evaluate, data_uri, model_uri)


@pytest.fixture
def chain(chain_runs: Chain, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chain]:
    """The module's chained runs, with MLflow pointed at their store for this test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chain_runs.tracking_uri)
    mlflow.set_tracking_uri(chain_runs.tracking_uri)
    yield chain_runs
    assert mlflow.active_run() is None, "a test left an MLflow run active"


# The CSV chain


@pytest.mark.slow
def test_load_csv_params(chain: Chain) -> None:
    params = succeeded(chain.load).data.params

    assert params["data_path"] == str(chain.csv)
    assert params["target"] == "cultivar"
    assert params["drop_columns"] == "id"
    assert params["data_format"] == "auto"


@pytest.mark.slow
def test_load_csv_rows(chain: Chain) -> None:
    metrics = succeeded(chain.load).data.metrics

    assert metrics["rows_train"] + metrics["rows_test"] == 176
    assert metrics["rows_missing_target"] == 2


@pytest.mark.slow
def test_load_csv_dropped_columns(chain: Chain) -> None:
    run = succeeded(chain.load)
    dropped = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/dropped_columns.json")

    assert dropped == {"requested": ["id"], "constant": ["constant"], "all missing": ["empty"]}
    assert "Dropped constant columns, which cannot help the model: ['constant']" in (
        chain.load.stderr
    )


@pytest.mark.slow
def test_load_csv_source_dataset(chain: Chain) -> None:
    source = dataset_inputs(succeeded(chain.load))["source"]
    sha256 = hashlib.sha256(chain.csv.read_bytes()).hexdigest()
    schema = json.loads(source.schema)["mlflow_colspec"]

    assert source.name == "wine.csv"
    assert source.digest == sha256[:16]
    assert source.source_type == "local"
    assert json.loads(source.source) == {"uri": chain.csv.resolve().as_uri()}
    assert json.loads(source.profile)["num_rows"] == 178
    assert len(schema) == 20
    assert {"type": "boolean", "name": "organic", "required": True} in schema


@pytest.mark.slow
def test_train_csv_datasets(chain: Chain) -> None:
    inputs = dataset_inputs(succeeded(chain.train))
    load_source = dataset_inputs(succeeded(chain.load))["source"]

    assert inputs["source"].digest == load_source.digest
    assert inputs["source"].source == load_source.source
    assert inputs["training"].name == "wine.csv-train"
    assert json.loads(inputs["training"].source) == {"uri": chain.data_uri}
    assert json.loads(inputs["training"].profile)["num_rows"] == 140


@pytest.mark.slow
def test_train_csv_signature(chain: Chain) -> None:
    signature = mlflow.models.get_model_info(chain.model_uri).signature
    raw_columns = pd.read_csv(chain.csv, nrows=1).columns
    features = [name for name in raw_columns if name not in NOT_FEATURES]

    assert signature.inputs.input_names() == features
    assert signature.outputs.inputs[0].type.name == "string"


@pytest.mark.slow
def test_evaluate_csv_accuracy(chain: Chain) -> None:
    run = succeeded(chain.evaluate)

    assert run.data.metrics["accuracy"] > 0.8
    assert run.data.tags["pipeline.data_uri"] == chain.data_uri


@pytest.mark.slow
def test_model_takes_raw_rows(chain: Chain) -> None:
    model = mlflow.pyfunc.load_model(chain.model_uri)
    raw = pd.read_csv(chain.csv)
    labelled = raw["cultivar"].notna().to_numpy()

    predictions = model.predict(raw)

    assert len(predictions) == len(raw)
    assert set(predictions) <= set(CULTIVARS)
    assert (predictions[labelled] == raw["cultivar"][labelled].to_numpy()).mean() > 0.9


@pytest.mark.slow
def test_model_takes_parquet_rows(chain: Chain, files: Path) -> None:
    # Read without the pandas metadata: pd.read_parquet would restore the
    # nullable boolean column, whose gaps MLflow's schema check rejects.
    model = mlflow.pyfunc.load_model(chain.model_uri)
    raw = pq.read_table(files / "wine.parquet").to_pandas(ignore_metadata=True)
    labelled = raw["cultivar"].notna().to_numpy()

    predictions = model.predict(raw)

    assert set(predictions) <= set(CULTIVARS)
    assert (predictions[labelled] == raw["cultivar"][labelled].to_numpy()).mean() > 0.9


@pytest.mark.slow
def test_model_served(chain: Chain, tmp_path: Path) -> None:
    port = free_port()
    raw = pd.read_csv(chain.csv, nrows=4).drop(columns=["cultivar"])
    rows = json.loads(raw.to_json(orient="split", index=False))
    rows["data"][0][rows["columns"].index("region")] = None
    rows["data"][1][rows["columns"].index("organic")] = None
    command = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "--model-uri",
        chain.model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving(command, port, tmp_path / "serve.log"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_split": rows}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]

    assert len(predictions) == 4
    assert set(predictions) <= set(CULTIVARS)


@contextlib.contextmanager
def serving(command: list[str], port: int, log_path: Path) -> Iterator[None]:
    """Run a server command until the block ends, once it listens on 127.0.0.1:``port``.

    The server runs in a process group of its own, so stopping the group also
    stops the worker processes it starts.
    """
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            start_new_session=True,
        )
        try:
            wait_for_port(port, server, log_path)
            yield
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited before it listened:\n{log_path.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} in {SERVER_START_TIMEOUT_S} s")


# Other files and URIs


@pytest.mark.slow
def test_load_parquet_file(tracking_uri: str, files: Path) -> None:
    result = run_entry_point(
        "load", {"data_path": files / "wine.parquet", "target": "cultivar", "drop_columns": "id"}
    )
    run = succeeded(result)
    source = dataset_inputs(run)["source"]

    assert run.data.metrics["rows_train"] + run.data.metrics["rows_test"] == 176
    assert source.name == "wine.parquet"
    assert json.loads(source.profile)["num_rows"] == 178


@pytest.fixture
def http_files(files: Path) -> Iterator[str]:
    """Serve the test files over HTTP on 127.0.0.1 and yield the base URL."""
    handler = functools.partial(QuietHandler, directory=str(files))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.slow
def test_load_http_file(tracking_uri: str, http_files: str) -> None:
    url = f"{http_files}/wine.csv"
    run = succeeded(run_entry_point("load", {"data_path": url, "target": "cultivar"}))
    source = dataset_inputs(run)["source"]

    assert source.source_type == "http"
    assert json.loads(source.source) == {"url": url}
    assert run.data.metrics["rows_missing_target"] == 2


@pytest.mark.slow
def test_load_http_missing_fails(tracking_uri: str, http_files: str) -> None:
    url = f"{http_files}/absent.csv"
    result = run_entry_point("load", {"data_path": url, "target": "cultivar"})
    message = failed(result).data.tags["pipeline.error"]

    assert message.startswith(f"invalid data_path={url!r}: cannot download it (404")
    assert f"error: load run {result.run.info.run_id}: {message}" in result.stderr


@pytest.mark.slow
def test_load_run_artifact(tracking_uri: str, files: Path) -> None:
    with mlflow.start_run() as upload:
        mlflow.log_artifact(str(files / "wine.csv"), artifact_path="tables")
    uri = f"runs:/{upload.info.run_id}/tables/wine.csv"

    run = succeeded(run_entry_point("load", {"data_path": uri, "target": "cultivar"}))
    source = dataset_inputs(run)["source"]

    assert source.source_type == "mlflow_artifact"
    assert json.loads(source.source) == {"uri": uri}
    assert source.digest == hashlib.sha256((files / "wine.csv").read_bytes()).hexdigest()[:16]


@pytest.mark.slow
def test_train_alone_logs_source(tracking_uri: str) -> None:
    run = succeeded(run_entry_point("train", CHEAP))
    inputs = dataset_inputs(run)

    assert inputs["source"].name == "iris"
    assert inputs["source"].source_type == "scikit-learn"
    assert inputs["training"].name == "iris-train"


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[str]:
    """Start an MLflow tracking server that proxies artifacts, on 127.0.0.1."""
    port = free_port()
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    with serving(command, port, tmp_path / "server.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_read_mlflow_artifacts_uri(
    tracking_uri: str, artifact_server: str, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An mlflow-artifacts:/ URI names no host: MLflow downloads it from the tracking server.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", artifact_server)
    mlflow.set_tracking_uri(artifact_server)
    try:
        with mlflow.start_run() as upload:
            mlflow.log_artifact(str(files / "wine.csv"), artifact_path="tables")
        uri = f"{upload.info.artifact_uri}/tables/wine.csv"
        table = read_table(uri, target="cultivar")
    finally:
        mlflow.set_tracking_uri(tracking_uri)

    assert uri.startswith("mlflow-artifacts:/")
    assert len(table.frame) == 176
    assert table.source.source_type == "mlflow_artifact"


# Bad input fails the run with one line naming the file and the problem

BAD_FILES = {
    "missing": (None, "file not found"),
    "header-only": ("a,b,cultivar\n", "the table has a header but no rows"),
    "no-target": ("a,b\n1,2\n3,4\n", "invalid target='cultivar': "),
    "one-class": ("a,cultivar\n1,x\n2,x\n", "has one class ('x')"),
    "lonely-class": ("a,cultivar\n1,x\n2,x\n3,y\n4,y\n5,z\n", "class 'z' of column"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_fails_run(tracking_uri: str, tmp_path: Path, case: str) -> None:
    content, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")

    result = run_entry_point("load", {"data_path": path, "target": "cultivar"})
    run = failed(result)
    message = run.data.tags["pipeline.error"]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]

    assert expected in message
    assert path.name in message
    assert error_lines == [f"error: load run {run.info.run_id}: {message}"]
