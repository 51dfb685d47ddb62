"""Tests of the step cache: keys, the code and environment they cover, input
digests, look-ups in a real SQLite tracking store, and the pipeline flow
reusing finished steps and running changed ones again (real `mlflow run`
steps, marked slow)."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from orchestration import cache
from orchestration.cache import (
    CACHE_KEY_TAG,
    CacheError,
    cache_tags,
    content_digest,
    data_source_digest,
    environment_spec,
    find_cached_run,
    lookup_step,
    model_digest,
    split_folder_digest,
    step_cache_key,
    step_code_version,
    step_inputs,
    step_source_files,
)
from orchestration.flow import PipelineFailed, training_pipeline
from orchestration.options import parse_command_line
from orchestration.summary import render_text
from steps.params import ParameterError
from steps.runner import DATA_URI_TAG, MODEL_URI_TAG, STEP_TAG
from tests.conftest import PROJECT_DIR

KEY = "0123456789abcdef" * 4
OTHER_KEY = "fedcba9876543210" * 4
EXPERIMENT_ID = "0"

PARTS = {"code_version": "sha256:code", "env_spec": "env_manager=local", "inputs": {}}


def train_key(params: dict[str, object], **overrides: object) -> str:
    return step_cache_key("train", params, **{**PARTS, **overrides})


# --- Keys ----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [100, "100", 100.0, "100.0", " 100 "])
def test_key_int_spellings(spelling: object) -> None:
    assert train_key({"n_estimators": spelling}) == train_key({"n_estimators": 100})


@pytest.mark.parametrize("spelling", [0.2, "0.2", "2e-1", "0.20"])
def test_key_float_spellings(spelling: object) -> None:
    reference = step_cache_key("load", {"test_size": 0.2}, **PARTS)
    assert step_cache_key("load", {"test_size": spelling}, **PARTS) == reference


def test_key_fills_defaults() -> None:
    explicit = {"data_uri": "", "n_estimators": 100, "max_depth": 0, "cv_folds": 5}
    assert train_key({}) == train_key({**explicit, "random_state": 42})


@pytest.mark.parametrize(
    ("params", "overrides"),
    [
        ({"n_estimators": 101}, {}),
        ({"data_uri": "runs:/abc/data"}, {}),
        ({}, {"code_version": "sha256:other"}),
        ({}, {"env_spec": "env_manager=uv"}),
        ({}, {"inputs": {"data_uri_digest": "sha256:x"}}),
    ],
)
def test_key_changes_with_each_part(params: dict, overrides: dict) -> None:
    assert train_key(params, **overrides) != train_key({})


def test_key_differs_between_steps() -> None:
    shared = {"random_state": 7}
    assert step_cache_key("load", shared, **PARTS) != step_cache_key("train", shared, **PARTS)


def test_key_is_hex_sha256() -> None:
    key = train_key({})
    assert len(key) == 64
    assert int(key, 16) >= 0


def test_key_rejects_unknown_parameter() -> None:
    with pytest.raises(ParameterError, match="unknown parameter 'n_trees'"):
        train_key({"n_trees": 5})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": 0}, "invalid n_estimators='0'"),
        ({"n_estimators": "abc"}, "invalid n_estimators='abc'"),
        ({"n_estimators": True}, "invalid n_estimators=True"),
        ({"cv_folds": 2.5}, "invalid cv_folds='2.5'"),
    ],
)
def test_key_rejects_invalid_value(params: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        train_key(params)


def test_tags_hold_key_and_parts() -> None:
    inputs = {"data_uri": "runs:/abc/data", "data_uri_digest": "sha256:d"}
    tags = cache_tags("train", {"n_estimators": "10"}, **{**PARTS, "inputs": inputs})

    assert tags[CACHE_KEY_TAG] == train_key({"n_estimators": 10}, inputs=inputs)
    assert json.loads(tags[cache.CACHE_PARAMS_TAG])["n_estimators"] == 10
    assert json.loads(tags[cache.CACHE_INPUTS_TAG]) == inputs
    assert tags[cache.CACHE_CODE_TAG] == "sha256:code"
    assert tags[cache.CACHE_ENV_TAG] == "env_manager=local"


def test_tags_cut_long_parts() -> None:
    inputs = {"data_path": "x" * 10_000}
    tags = cache_tags("load", {}, **{**PARTS, "inputs": inputs})
    assert len(tags[cache.CACHE_INPUTS_TAG]) == cache.MAX_TAG_VALUE_LENGTH
    assert len(tags[CACHE_KEY_TAG]) == 64


# --- Code version --------------------------------------------------------------


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of the project's MLproject, conda.yaml and steps package."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(PROJECT_DIR / name, copy / name)
    shutil.copytree(
        PROJECT_DIR / "steps", copy / "steps", ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


def code_versions(project: Path) -> dict[str, str]:
    return {step: step_code_version(project, step) for step in ("load", "train", "evaluate")}


def append_line(path: Path, line: str = "# edited\n") -> None:
    path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")


def test_code_version_follows_imports(project_copy: Path) -> None:
    command = "python -m steps.load --test-size {test_size}"
    names = {path.name for path in step_source_files(project_copy, command)}
    assert {"__init__.py", "load.py", "data.py", "runner.py", "params.py"} <= names
    assert "train.py" not in names
    assert "evaluate.py" not in names


def test_code_version_train_edit(project_copy: Path) -> None:
    before = code_versions(project_copy)
    append_line(project_copy / "steps" / "train.py")
    after = code_versions(project_copy)

    assert after["train"] != before["train"]
    assert after["load"] == before["load"]
    assert after["evaluate"] == before["evaluate"]


def test_code_version_shared_module_edit(project_copy: Path) -> None:
    before = code_versions(project_copy)
    append_line(project_copy / "steps" / "runner.py")
    after = code_versions(project_copy)
    assert all(after[step] != before[step] for step in before)


def test_code_version_ignores_other_files(project_copy: Path) -> None:
    before = code_versions(project_copy)
    (project_copy / "notes.py").write_text("print('unrelated')\n", encoding="utf-8")
    (project_copy / "README.md").write_text("# notes\n", encoding="utf-8")
    assert code_versions(project_copy) == before


def test_code_version_ignores_line_endings(project_copy: Path) -> None:
    before = code_versions(project_copy)
    path = project_copy / "steps" / "train.py"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert code_versions(project_copy) == before


def test_code_version_ignores_declarations(project_copy: Path) -> None:
    before = code_versions(project_copy)
    mlproject = project_copy / "MLproject"
    text = mlproject.read_text(encoding="utf-8")
    mlproject.write_text(text.replace("Number of trees", "Count of trees"), encoding="utf-8")
    assert code_versions(project_copy) == before


def test_code_version_command_edit(project_copy: Path) -> None:
    before = code_versions(project_copy)
    mlproject = project_copy / "MLproject"
    text = mlproject.read_text(encoding="utf-8")
    mlproject.write_text(text.replace("python -m steps.train", "python -O -m steps.train"))
    after = code_versions(project_copy)
    assert after["train"] != before["train"]
    assert after["load"] == before["load"]


def test_code_version_script_command(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(
        "name: scripts\nentry_points:\n  main:\n    command: python fit.py --alpha {alpha}\n",
        encoding="utf-8",
    )
    (tmp_path / "fit.py").write_text("import helpers\nfrom lib import tools\n", encoding="utf-8")
    (tmp_path / "helpers.py").write_text("X = 1\n", encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "lib" / "tools.py").write_text("from . import extra\n", encoding="utf-8")
    (tmp_path / "lib" / "extra.py").write_text("Y = 2\n", encoding="utf-8")
    (tmp_path / "unused.py").write_text("Z = 3\n", encoding="utf-8")

    files = step_source_files(tmp_path, "python fit.py --alpha {alpha}")
    names = [path.relative_to(tmp_path.resolve()).as_posix() for path in files]
    assert names == ["fit.py", "helpers.py", "lib/__init__.py", "lib/extra.py", "lib/tools.py"]

    before = step_code_version(tmp_path, "main")
    append_line(tmp_path / "lib" / "extra.py")
    assert step_code_version(tmp_path, "main") != before


def test_code_version_unknown_entry_point(project_copy: Path) -> None:
    with pytest.raises(CacheError, match="unknown entry point 'predict'"):
        step_code_version(project_copy, "predict")


# --- Environment ---------------------------------------------------------------


def test_env_spec_ignores_yaml_layout(project_copy: Path) -> None:
    before = environment_spec(project_copy, "uv")
    append_line(project_copy / "conda.yaml", "# a comment\n\n")
    assert environment_spec(project_copy, "uv") == before


def test_env_spec_changes_with_pins(project_copy: Path) -> None:
    before = environment_spec(project_copy, "uv")
    conda = project_copy / "conda.yaml"
    text = conda.read_text(encoding="utf-8")
    conda.write_text(text.replace("scikit-learn==", "scikit-learn>="), encoding="utf-8")
    assert environment_spec(project_copy, "uv") != before


def test_env_spec_names_manager(project_copy: Path) -> None:
    specs = {manager: environment_spec(project_copy, manager) for manager in cache.ENV_MANAGERS}
    assert len(set(specs.values())) == len(cache.ENV_MANAGERS)
    assert specs["local"].startswith("env_manager=local conda.yaml=sha256:")
    assert " python=3." in specs["local"]
    assert " packages=sha256:" in specs["local"]
    assert "python=" not in specs["uv"]


def test_env_spec_rejects_manager(project_copy: Path) -> None:
    with pytest.raises(CacheError, match="invalid env_manager='docker'"):
        environment_spec(project_copy, "docker")


# --- Input digests -------------------------------------------------------------


def test_file_digest_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    before = content_digest(path)
    path.write_text("a,b\n1,3\n", encoding="utf-8")
    assert content_digest(path) != before
    assert content_digest(path).startswith("sha256:")


def test_folder_digest_covers_names(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("same", encoding="utf-8")
    before = content_digest(folder)
    (folder / "a.txt").rename(folder / "b.txt")
    assert content_digest(folder) != before


def test_data_path_digest_forms(tracking_uri: str, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    client = MlflowClient()

    assert data_source_digest(client, str(path)) == content_digest(path)
    assert data_source_digest(client, path.as_uri()) == content_digest(path)
    assert data_source_digest(client, "rows.csv", tmp_path) == content_digest(path)
    assert data_source_digest(client, "iris") is None
    assert data_source_digest(client, str(tmp_path / "missing.csv")) is None


@pytest.fixture
def loopback_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving tmp_path, stopped after the test."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_data_path_digest_http(tracking_uri: str, tmp_path: Path, loopback_server: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    client = MlflowClient()
    assert data_source_digest(client, f"{loopback_server}/rows.csv") == content_digest(path)


def test_inputs_skip_floating_model(tracking_uri: str) -> None:
    assert step_inputs(MlflowClient(), "evaluate", {"model_uri": "", "data_uri": ""}) is None


def test_inputs_unreadable_uri(tracking_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    client = MlflowClient()
    missing = "runs:/0123456789abcdef0123456789abcdef/data"
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert step_inputs(client, "train", {"data_uri": missing}) is None
    assert "running it without the cache" in caplog.text
    assert missing in caplog.text


def test_inputs_data_path(tracking_uri: str, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    inputs = step_inputs(MlflowClient(), "load", {"data_path": "rows.csv"}, work_dir=tmp_path)
    assert inputs == {"data_path": "rows.csv", "data_path_digest": content_digest(path)}
    named = step_inputs(MlflowClient(), "load", {"data_path": "wine"}, work_dir=tmp_path)
    assert named == {"data_path": "wine"}


# --- Runs in a real tracking store ----------------------------------------------


def write_split_folder(folder: Path, rows: str = "1,2\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in cache.SPLIT_FILES:
        (folder / name).write_text(rows, encoding="utf-8")
    return folder


def test_split_files_match_load() -> None:
    from steps.data import METADATA_FILE, TEST_FILE, TRAIN_FILE

    assert set(cache.SPLIT_FILES) == {TRAIN_FILE, TEST_FILE, METADATA_FILE}


def create_step_run(
    client: MlflowClient,
    tmp_path: Path,
    entry_point: str,
    key: str = KEY,
    *,
    status: str = "FINISHED",
    start_time: int | None = None,
    with_outputs: bool = True,
) -> str:
    """Create a step run as the orchestrator and the step would leave it."""
    run = client.create_run(
        EXPERIMENT_ID,
        start_time=start_time,
        tags={STEP_TAG: entry_point, CACHE_KEY_TAG: key},
    )
    run_id = run.info.run_id
    if with_outputs and entry_point == "load":
        client.log_artifacts(run_id, str(write_split_folder(tmp_path / run_id)), "data")
        client.set_tag(run_id, DATA_URI_TAG, f"runs:/{run_id}/data")
    if with_outputs and entry_point == "train":
        model = tmp_path / run_id / "model"
        model.mkdir(parents=True)
        (model / "MLmodel").write_text("flavors: {}\n", encoding="utf-8")
        client.log_artifacts(run_id, str(model), "model")
        client.set_tag(run_id, MODEL_URI_TAG, f"runs:/{run_id}/model")
    if with_outputs and entry_point == "evaluate":
        client.log_metric(run_id, "accuracy", 0.9)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def found_id(client: MlflowClient, entry_point: str, key: str = KEY) -> str | None:
    run = find_cached_run(client, EXPERIMENT_ID, entry_point, key)
    return run.info.run_id if run else None


@pytest.mark.parametrize("entry_point", ["load", "train", "evaluate"])
def test_lookup_finds_finished(tracking_uri: str, tmp_path: Path, entry_point: str) -> None:
    client = MlflowClient()
    run_id = create_step_run(client, tmp_path, entry_point)
    assert found_id(client, entry_point) == run_id


def test_lookup_tags_round_trip(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    tags = cache_tags("load", {"test_size": "0.25"}, **PARTS)
    run_id = create_step_run(client, tmp_path, "load", tags[CACHE_KEY_TAG])
    client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])

    run = find_cached_run(
        client, EXPERIMENT_ID, "load", step_cache_key("load", {"test_size": 0.25}, **PARTS)
    )
    assert run is not None
    assert run.info.run_id == run_id
    assert json.loads(run.data.tags[cache.CACHE_PARAMS_TAG])["test_size"] == 0.25


@pytest.mark.parametrize("status", ["FAILED", "KILLED", "RUNNING", "SCHEDULED"])
def test_lookup_ignores_unfinished(tracking_uri: str, tmp_path: Path, status: str) -> None:
    client = MlflowClient()
    create_step_run(client, tmp_path, "load", status=status)
    assert found_id(client, "load") is None


def test_lookup_ignores_others(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    create_step_run(client, tmp_path, "train")
    create_step_run(client, tmp_path, "load", OTHER_KEY)
    deleted = create_step_run(client, tmp_path, "load")
    client.delete_run(deleted)
    other_experiment = client.create_experiment("other")
    run = client.create_run(other_experiment, tags={STEP_TAG: "load", CACHE_KEY_TAG: KEY})
    client.set_terminated(run.info.run_id, "FINISHED")

    assert found_id(client, "load") is None


def test_lookup_picks_newest(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    create_step_run(client, tmp_path, "evaluate", start_time=1_000)
    newest = create_step_run(client, tmp_path, "evaluate", start_time=2_000)
    create_step_run(client, tmp_path, "evaluate", start_time=3_000, status="FAILED")
    assert found_id(client, "evaluate") == newest


def test_lookup_breaks_ties_by_id(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    run_ids = [create_step_run(client, tmp_path, "evaluate", start_time=5_000) for _ in range(3)]
    assert found_id(client, "evaluate") == min(run_ids)
    assert found_id(client, "evaluate") == min(run_ids)


def test_lookup_skips_missing_outputs(
    tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = MlflowClient()
    older = create_step_run(client, tmp_path, "load", start_time=1_000)
    newer = create_step_run(client, tmp_path, "load", start_time=2_000)
    artifacts = Path(client.get_run(newer).info.artifact_uri)
    shutil.rmtree(artifacts / "data")

    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert found_id(client, "load") == older
    assert f"Not reusing load run {newer} because" in caplog.text
    assert "lacks train.parquet, test.parquet, metadata.json" in caplog.text


@pytest.mark.parametrize("entry_point", ["load", "train", "evaluate"])
def test_lookup_needs_outputs(
    tracking_uri: str, tmp_path: Path, entry_point: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = MlflowClient()
    run_id = create_step_run(client, tmp_path, entry_point, with_outputs=False)
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert found_id(client, entry_point) is None
    assert f"Not reusing {entry_point} run {run_id}" in caplog.text


def test_lookup_partial_split_folder(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    run_id = create_step_run(client, tmp_path, "load")
    (Path(client.get_run(run_id).info.artifact_uri) / "data" / "test.parquet").unlink()
    assert found_id(client, "load") is None


def test_lookup_rejects_bad_key(tracking_uri: str) -> None:
    with pytest.raises(CacheError, match="invalid cache key"):
        find_cached_run(MlflowClient(), EXPERIMENT_ID, "load", "x' or '1'='1")


# --- Digests of recorded outputs ------------------------------------------------


def test_split_digest_tag_or_download(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    run_id = create_step_run(client, tmp_path, "load")
    data_uri = f"runs:/{run_id}/data"
    expected = content_digest(tmp_path / run_id)

    assert split_folder_digest(client, data_uri) == expected
    client.set_tag(run_id, cache.DATA_DIGEST_TAG, "sha256:recorded")
    assert split_folder_digest(client, data_uri) == "sha256:recorded"


def test_split_digest_follows_content(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    first = create_step_run(client, tmp_path, "load")
    second = client.create_run(EXPERIMENT_ID).info.run_id
    client.log_artifacts(second, str(write_split_folder(tmp_path / "other", "9,9\n")), "data")
    assert split_folder_digest(client, f"runs:/{first}/data") != split_folder_digest(
        client, f"runs:/{second}/data"
    )


def test_model_digest_tag_or_download(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    run_id = create_step_run(client, tmp_path, "train")
    model_uri = f"runs:/{run_id}/model"
    expected = content_digest(tmp_path / run_id / "model")

    assert model_digest(client, model_uri) == expected
    client.set_tag(run_id, cache.MODEL_DIGEST_TAG, "sha256:recorded")
    assert model_digest(client, model_uri) == "sha256:recorded"


# --- lookup_step: key, inputs and look-up in one call ----------------------------


def test_lookup_step_miss_then_hit(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    miss = lookup_step(
        client, EXPERIMENT_ID, "load", {"test_size": "0.3"}, work_dir=PROJECT_DIR, env_manager="uv"
    )
    assert miss.key is not None
    assert miss.run is None
    assert miss.tags[CACHE_KEY_TAG] == miss.key

    run_id = create_step_run(client, tmp_path, "load", miss.key)
    hit = lookup_step(
        client, EXPERIMENT_ID, "load", {"test_size": 0.3}, work_dir=PROJECT_DIR, env_manager="uv"
    )
    assert hit.hit
    assert hit.run.info.run_id == run_id

    forced = lookup_step(
        client,
        EXPERIMENT_ID,
        "load",
        {"test_size": 0.3},
        work_dir=PROJECT_DIR,
        env_manager="uv",
        use_cache=False,
    )
    assert forced.key == miss.key
    assert forced.run is None


def test_lookup_step_train_input(tracking_uri: str, tmp_path: Path) -> None:
    client = MlflowClient()
    load_run = create_step_run(client, tmp_path, "load")
    data_uri = f"runs:/{load_run}/data"
    first = lookup_step(
        client,
        EXPERIMENT_ID,
        "train",
        {"data_uri": data_uri},
        work_dir=PROJECT_DIR,
        env_manager="uv",
    )
    assert json.loads(first.tags[cache.CACHE_INPUTS_TAG]) == {
        "data_uri": data_uri,
        "data_uri_digest": content_digest(tmp_path / load_run),
    }

    # The same URI with other content behind it gives another key.
    client.set_tag(load_run, cache.DATA_DIGEST_TAG, "sha256:changed")
    second = lookup_step(
        client,
        EXPERIMENT_ID,
        "train",
        {"data_uri": data_uri},
        work_dir=PROJECT_DIR,
        env_manager="uv",
    )
    assert second.key != first.key


def test_lookup_step_unreadable_input(tracking_uri: str) -> None:
    client = MlflowClient()
    result = lookup_step(
        client,
        EXPERIMENT_ID,
        "train",
        {"data_uri": "runs:/0123456789abcdef0123456789abcdef/data"},
        work_dir=PROJECT_DIR,
        env_manager="uv",
    )
    assert result.key is None
    assert result.tags == {}
    assert not result.hit


def test_reuse_tags() -> None:
    assert cache.reuse_tags("train", "abc") == {"pipeline.cached.train": "abc"}


# --- Options -----------------------------------------------------------------


def test_options_no_cache_and_force() -> None:
    assert parse_command_line([]).no_cache is False
    assert parse_command_line(["--no-cache"]).no_cache is True
    # `mlflow run -P no_cache=true` passes the value as a separate word.
    assert parse_command_line(["--no_cache", "true"]).no_cache is True
    assert parse_command_line(["--force", "train", "--force", "evaluate,train"]).force == (
        "train",
        "evaluate",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--force", "predict"], "invalid step 'predict'"),
        (["--no-cache", "maybe"], "invalid value 'maybe'"),
    ],
)
def test_options_reject_cache_values(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_command_line(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- The pipeline: what runs again and what is reused ----------------------------

PIPELINE = ("load", "train", "evaluate")
CHEAP = {"n_estimators": 10, "cv_folds": 2}
EXPERIMENT = "cache"


@dataclass
class PipelineOutcome:
    """What the parent run of one pipeline run records about its steps."""

    failed: bool
    run_ids: dict[str, str]
    cached: set[str]
    summary: str


def run_pipeline(
    project: Path, parameters: dict[str, object], **options: object
) -> PipelineOutcome:
    """Run the flow in-process and read the step run ids from the parent run's tags."""
    state = training_pipeline(
        parameters=parameters,
        experiment_name=EXPERIMENT,
        project_uri=str(project),
        return_state=True,
        **options,
    )
    value = state.result(raise_on_failure=False)
    result = value.result if isinstance(value, PipelineFailed) else value
    tags = MlflowClient().get_run(result.parent_run_id).data.tags

    run_ids = {
        step: tags[f"pipeline.{step}_run_id"]
        for step in PIPELINE
        if f"pipeline.{step}_run_id" in tags
    }
    cached = {step for step in PIPELINE if cache.CACHED_RUN_TAG_PREFIX + step in tags}
    for step in cached:
        assert tags[cache.CACHED_RUN_TAG_PREFIX + step] == run_ids[step]
    return PipelineOutcome(state.is_failed(), run_ids, cached, render_text(result))


@pytest.mark.slow
def test_pipeline_reruns_what_changed(
    tracking_uri: str, prefect_api_url: str, project_copy: Path
) -> None:
    first = run_pipeline(project_copy, CHEAP)
    assert not first.failed
    assert first.cached == set()

    again = run_pipeline(project_copy, CHEAP)
    assert again.cached == set(PIPELINE)
    assert again.run_ids == first.run_ids
    assert "cached" in again.summary

    spelled = run_pipeline(project_copy, {"n_estimators": "10.0", "cv_folds": " 2"})
    assert spelled.cached == set(PIPELINE)

    new_param = run_pipeline(project_copy, {**CHEAP, "n_estimators": 11})
    assert new_param.cached == {"load"}
    assert new_param.run_ids["load"] == first.run_ids["load"]
    assert new_param.run_ids["train"] != first.run_ids["train"]
    assert new_param.run_ids["evaluate"] != first.run_ids["evaluate"]

    append_line(project_copy / "steps" / "train.py")
    new_code = run_pipeline(project_copy, CHEAP)
    assert new_code.cached == {"load"}
    assert new_code.run_ids["train"] not in {first.run_ids["train"], new_param.run_ids["train"]}

    forced = run_pipeline(project_copy, CHEAP, force=["train"])
    assert forced.cached == {"load"}
    assert forced.run_ids["train"] != new_code.run_ids["train"]

    after_force = run_pipeline(project_copy, CHEAP)
    assert after_force.cached == set(PIPELINE)
    assert after_force.run_ids["train"] == forced.run_ids["train"]

    no_cache = run_pipeline(project_copy, CHEAP, no_cache=True)
    assert no_cache.cached == set()
    assert no_cache.run_ids["load"] != first.run_ids["load"]


@pytest.mark.slow
def test_pipeline_data_change_reruns_all(
    tracking_uri: str, prefect_api_url: str, project_copy: Path
) -> None:
    frame = load_iris(as_frame=True).frame
    path = project_copy / "rows.csv"
    frame.to_csv(path, index=False)
    parameters = {**CHEAP, "data_path": "rows.csv"}

    first = run_pipeline(project_copy, parameters)
    assert not first.failed
    again = run_pipeline(project_copy, parameters)
    assert again.cached == set(PIPELINE)

    frame.loc[0, "sepal length (cm)"] += 1.0
    frame.to_csv(path, index=False)
    changed = run_pipeline(project_copy, parameters)
    assert not changed.failed
    assert changed.cached == set()


@pytest.mark.slow
def test_pipeline_resumes_after_failure(
    tracking_uri: str, prefect_api_url: str, project_copy: Path
) -> None:
    # Unless the model scores a perfect 1.0, evaluate fails its accuracy check.
    parameters = {**CHEAP, "min_accuracy": 1.0}
    first = run_pipeline(project_copy, parameters)
    if not first.failed:
        pytest.skip("the model scored 1.0, so evaluate did not fail")
    assert MlflowClient().get_run(first.run_ids["evaluate"]).info.status == "FAILED"

    again = run_pipeline(project_copy, parameters)
    assert again.cached == {"load", "train"}
    assert again.run_ids["train"] == first.run_ids["train"]
    assert again.run_ids["evaluate"] != first.run_ids["evaluate"]


@pytest.mark.slow
def test_pipeline_lost_model_reruns(
    tracking_uri: str,
    prefect_api_url: str,
    project_copy: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = MlflowClient()
    first = run_pipeline(project_copy, CHEAP)
    model_uri = client.get_run(first.run_ids["train"]).data.tags[MODEL_URI_TAG]
    client.delete_logged_model(model_uri.removeprefix("models:/"))

    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        again = run_pipeline(project_copy, CHEAP)
    assert again.cached == {"load"}
    assert again.run_ids["train"] != first.run_ids["train"]
    assert f"Not reusing train run {first.run_ids['train']} because" in caplog.text


@pytest.mark.slow
def test_pipeline_concurrent_runs(
    tracking_uri: str, prefect_api_url: str, tmp_path: Path, project_copy: Path
) -> None:
    # Two processes that create a SQLite store at once race in MLflow's schema
    # migration, so the store exists before they start, as a shared one would.
    client = MlflowClient()
    client.search_experiments()
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    command = [
        sys.executable,
        str(PROJECT_DIR / "orchestrate.py"),
        "--project-uri",
        str(project_copy),
        "--experiment-name",
        EXPERIMENT,
        "--n-estimators",
        "10",
        "--cv-folds",
        "2",
    ]
    logs = [tmp_path / f"pipeline-{index}.log" for index in range(2)]
    processes = []
    try:
        for log in logs:
            with open(log, "w") as output:
                processes.append(
                    subprocess.Popen(
                        command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
                    )
                )
        for process in processes:
            process.wait(timeout=600)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log.read_text()

    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    unfinished = client.search_runs([experiment_id], "attributes.status != 'FINISHED'")
    assert [(run.info.run_id, run.info.status) for run in unfinished] == []
    later = run_pipeline(project_copy, CHEAP)
    assert later.cached == set(PIPELINE)
    for step, run_id in later.run_ids.items():
        key = client.get_run(run_id).data.tags[CACHE_KEY_TAG]
        candidates = client.search_runs(
            [experiment_id],
            f"tags.`{CACHE_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        )
        # Newest start time first, then the smallest run id, as MLflow orders runs.
        newest = min(candidates, key=lambda run: (-run.info.start_time, run.info.run_id))
        assert run_id == newest.info.run_id, step
