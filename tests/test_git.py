"""Running the project from a Git URL at a version, and from a local checkout.

A git daemon and two http servers (one open, one behind basic authentication)
on 127.0.0.1 serve a repository built from the project's files. Its versions
differ in the train default max_depth: tag ``v1`` has 0, branch ``feature``
3, and the default branch ``main`` 4. A copy of the project sits in
``nested/iris``. https and SSH need certificates or an sshd, so for them only
the URL parsing is tested.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

from orchestration.source import (
    CACHE_DIR_ENV,
    COMMIT_TAG,
    DIFF_ARTIFACT_PATH,
    DIRTY_TAG,
    SOURCE_URI_TAG,
    SOURCE_VERSION_TAG,
    ProjectSource,
    ProjectSourceError,
    default_cache_dir,
    is_remote_url,
    mask_url,
    resolve_project,
    split_project_uri,
    strip_credentials,
)
from tests.conftest import PROJECT_DIR, run_entry_point
from tests.gitserver import (
    SUBDIRECTORY,
    GitDaemon,
    GitHttpServer,
    ProjectRepo,
    build_project_repo,
    free_port,
    git,
)

CREDENTIALS = ("alice", "s3cret-token")
CHEAP = {"n_estimators": 10, "cv_folds": 2}
# A pipeline run took 50 to 60 s on two shared cores; this bounds a hung one.
PIPELINE_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def project_repo(tmp_path_factory: pytest.TempPathFactory) -> ProjectRepo:
    return build_project_repo(PROJECT_DIR, tmp_path_factory.mktemp("git-repo"))


@pytest.fixture(scope="module")
def daemon(project_repo: ProjectRepo) -> Iterator[GitDaemon]:
    with GitDaemon(project_repo.serve_root) as server:
        yield server


@pytest.fixture(scope="module")
def http_server(project_repo: ProjectRepo) -> Iterator[GitHttpServer]:
    with GitHttpServer(project_repo.serve_root) as server:
        yield server


@pytest.fixture(scope="module")
def private_server(project_repo: ProjectRepo) -> Iterator[GitHttpServer]:
    with GitHttpServer(project_repo.serve_root, credentials=CREDENTIALS) as server:
        yield server


@pytest.fixture
def git_url(daemon: GitDaemon, project_repo: ProjectRepo) -> str:
    return daemon.url(project_repo.name)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "sources"


@pytest.fixture
def subprocess_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Send the temporary folders that `mlflow run` leaves behind into tmp_path."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture
def local_clone(project_repo: ProjectRepo, tmp_path: Path) -> Path:
    """A clone of the test repository at main with an edit and an untracked file."""
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(project_repo.work), str(clone), cwd=tmp_path)
    with open(clone / "steps" / "train.py", "a", encoding="utf-8") as stream:
        stream.write("# local edit, not committed\n")
    (clone / "notes.txt").write_text("scratch\n", encoding="utf-8")
    return clone


def declared_max_depth(work_dir: Path) -> int:
    spec = yaml.safe_load((work_dir / "MLproject").read_text(encoding="utf-8"))
    return spec["entry_points"]["train"]["parameters"]["max_depth"]["default"]


def checkout_state(clone: Path) -> dict[str, object]:
    """What a user would compare to see that nothing touched their checkout."""
    index = clone / ".git" / "index"
    return {
        # Read before `git status`, which this helper keeps from rewriting it.
        "index": (index.read_bytes(), index.stat().st_mtime_ns),
        "status": git(
            "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", cwd=clone
        ),
        "head": git("rev-parse", "HEAD", cwd=clone),
        "branch": git("symbolic-ref", "HEAD", cwd=clone),
        "refs": git("for-each-ref", cwd=clone),
        "worktrees": git("worktree", "list", "--porcelain", cwd=clone),
        "train.py": (clone / "steps" / "train.py").read_text(encoding="utf-8"),
    }


# --- URIs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "location", "subdirectory", "remote"),
    [
        (
            "https://github.com/org/repo.git#sub/dir",
            "https://github.com/org/repo.git",
            "sub/dir",
            True,
        ),
        ("https://github.com/org/repo", "https://github.com/org/repo", "", True),
        ("git@github.com:org/repo.git#sub", "git@github.com:org/repo.git", "sub", True),
        ("ssh://git@host:2222/org/repo.git#a/b/", "ssh://git@host:2222/org/repo.git", "a/b", True),
        ("git://127.0.0.1:9418/repo.git", "git://127.0.0.1:9418/repo.git", "", True),
        ("host.example:repo.git", "host.example:repo.git", "", True),
        ("file:///srv/repo#sub", "file:///srv/repo", "sub", False),
        ("./project#sub", "./project", "sub", False),
        ("/srv/project", "/srv/project", "", False),
    ],
)
def test_split_uri(uri: str, location: str, subdirectory: str, remote: bool) -> None:
    assert split_project_uri(uri) == (location, subdirectory)
    assert is_remote_url(location) is remote


@pytest.mark.parametrize("uri", ["https://h/r.git#../up", "git@h:r.git#a/../../b", "#sub"])
def test_split_uri_invalid(uri: str) -> None:
    with pytest.raises(ProjectSourceError, match="invalid"):
        split_project_uri(uri)


@pytest.mark.parametrize(
    ("url", "masked", "stripped"),
    [
        (
            "https://alice:tok%40en@host/r.git",
            "https://alice:***@host/r.git",
            "https://alice@host/r.git",
        ),
        ("https://ghp_token@host/r.git", "https://***@host/r.git", "https://host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://git:***@host/r.git", "ssh://git@host/r.git"),
        ("git@host:org/r.git", "git@host:org/r.git", "git@host:org/r.git"),
        ("https://host/r.git", "https://host/r.git", "https://host/r.git"),
        ("/srv/project", "/srv/project", "/srv/project"),
    ],
)
def test_mask_url(url: str, masked: str, stripped: str) -> None:
    assert mask_url(url) == masked
    assert strip_credentials(url) == stripped


def test_tags_hide_password(tmp_path: Path) -> None:
    source = ProjectSource(
        uri="https://alice:s3cret@host/org/repo.git#sub",
        version="v1",
        work_dir=tmp_path,
        commit="a" * 40,
        dirty=False,
        diff=None,
    )
    tags = source.tags()
    assert tags[SOURCE_URI_TAG] == "https://alice:***@host/org/repo.git#sub"
    assert tags[SOURCE_VERSION_TAG] == "v1"
    assert tags[COMMIT_TAG] == "a" * 40
    assert tags[DIRTY_TAG] == "false"
    assert not [value for value in tags.values() if "s3cret" in value]
    assert "s3cret" not in repr(source)


@pytest.mark.parametrize("version", ["--upload-pack=touch /tmp/x", "main branch", "v1\n"])
def test_version_invalid(version: str, git_url: str, cache_dir: Path) -> None:
    if version == "v1\n":
        # Surrounding whitespace is trimmed, as from a copied command line.
        assert resolve_project(git_url, version, cache_dir).version == "v1"
        return
    with pytest.raises(ProjectSourceError, match="invalid version"):
        resolve_project(git_url, version, cache_dir)


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "iris-forest-pipeline" / "sources"


# --- Remote repositories -----------------------------------------------------


@pytest.mark.parametrize("version", [None, "main", "feature", "v1", "refs/heads/feature", "sha"])
def test_resolve_version(
    version: str | None, git_url: str, project_repo: ProjectRepo, cache_dir: Path
) -> None:
    ref = {None: "main", "refs/heads/feature": "feature", "sha": "v1"}.get(version, version)
    expected = project_repo.commits[ref]
    if version == "sha":
        version = expected

    source = resolve_project(git_url, version, cache_dir)

    assert source.commit == expected
    assert source.version == version
    assert source.dirty is False
    assert source.diff is None
    assert source.code_version() == expected
    assert source.work_dir.is_relative_to(cache_dir)
    assert declared_max_depth(source.work_dir) == project_repo.max_depth[expected]
    assert git("rev-parse", "HEAD", cwd=source.work_dir) == expected
    assert git("status", "--porcelain", cwd=source.work_dir) == ""
    assert source.tags()[COMMIT_TAG] == expected


def test_resolve_short_sha(git_url: str, project_repo: ProjectRepo, cache_dir: Path) -> None:
    full = project_repo.commits["feature"]
    source = resolve_project(git_url, full[:8], cache_dir)
    assert source.commit == full
    assert source.work_dir.name == full
    assert declared_max_depth(source.work_dir) == 3


def test_resolve_subdirectory(git_url: str, project_repo: ProjectRepo, cache_dir: Path) -> None:
    source = resolve_project(f"{git_url}#{SUBDIRECTORY}", "main", cache_dir)
    assert source.commit == project_repo.commits["main"]
    assert source.work_dir.is_relative_to(cache_dir)
    assert source.work_dir.parts[-3:] == (source.commit, *SUBDIRECTORY.split("/"))
    assert (source.work_dir / "steps" / "train.py").is_file()
    # Only the root MLproject changes on main; the copy keeps v1's default.
    assert declared_max_depth(source.work_dir) == 0
    assert source.tags()[SOURCE_URI_TAG] == f"{git_url}#{SUBDIRECTORY}"


def test_fetch_once_per_commit(
    git_url: str, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="orchestration.source")
    first = resolve_project(git_url, "feature", cache_dir)
    marker = first.work_dir / "left-by-a-run.txt"
    marker.write_text("kept\n", encoding="utf-8")

    second = resolve_project(git_url, "feature", cache_dir)
    by_sha = resolve_project(git_url, first.commit, cache_dir)

    assert second.work_dir == first.work_dir
    assert by_sha.work_dir == first.work_dir
    assert marker.read_text(encoding="utf-8") == "kept\n"
    fetches = [record for record in caplog.records if record.getMessage().startswith("Fetching")]
    assert len(fetches) == 1
    assert len(list(first.work_dir.parent.iterdir())) == 1


def test_concurrent_fetch(git_url: str, project_repo: ProjectRepo, cache_dir: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        sources = list(pool.map(lambda _: resolve_project(git_url, "v1", cache_dir), range(3)))

    assert {source.work_dir for source in sources} == {sources[0].work_dir}
    assert git("rev-parse", "HEAD", cwd=sources[0].work_dir) == project_repo.commits["v1"]
    assert [path.name for path in sources[0].work_dir.parent.iterdir()] == [sources[0].commit]


def test_pinned_commit_offline(project_repo: ProjectRepo, cache_dir: Path) -> None:
    sha = project_repo.commits["v1"]
    with GitDaemon(project_repo.serve_root) as server:
        url = server.url(project_repo.name)
        fetched = resolve_project(url, sha, cache_dir)

    assert resolve_project(url, sha, cache_dir).work_dir == fetched.work_dir
    with pytest.raises(ProjectSourceError, match="cannot reach"):
        resolve_project(url, "v1", cache_dir)


def test_edited_checkout_replaced(
    git_url: str, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = resolve_project(git_url, "v1", cache_dir)
    mlproject = source.work_dir / "MLproject"
    original = mlproject.read_text(encoding="utf-8")
    mlproject.write_text(original.replace("default: 100", "default: 7"), encoding="utf-8")

    again = resolve_project(git_url, "v1", cache_dir)

    assert again.work_dir == source.work_dir
    assert mlproject.read_text(encoding="utf-8") == original
    assert "no longer match" in caplog.text


def test_missing_branch(git_url: str, cache_dir: Path) -> None:
    with pytest.raises(ProjectSourceError) as excinfo:
        resolve_project(git_url, "no-such-branch", cache_dir)
    message = str(excinfo.value)
    assert "'no-such-branch' not found" in message
    assert git_url in message
    assert "branches: feature, main" in message
    assert "tags: v1" in message


def test_missing_commit(git_url: str, cache_dir: Path) -> None:
    with pytest.raises(ProjectSourceError, match=f"'{'0' * 40}' not found in {re.escape(git_url)}"):
        resolve_project(git_url, "0" * 40, cache_dir)
    assert not [path for path in cache_dir.rglob("*") if path.name.startswith(".fetch-")]


def test_missing_repository(daemon: GitDaemon, cache_dir: Path) -> None:
    url = daemon.url("missing.git")
    with pytest.raises(ProjectSourceError, match=f"{re.escape(url)} not found"):
        resolve_project(url, None, cache_dir)


def test_unreachable_host(cache_dir: Path) -> None:
    url = f"git://127.0.0.1:{free_port()}/project.git"
    with pytest.raises(
        ProjectSourceError, match=f"cannot reach the Git server of {re.escape(url)}"
    ):
        resolve_project(url, "main", cache_dir)


def test_no_mlproject_in_subdirectory(git_url: str, cache_dir: Path) -> None:
    with pytest.raises(ProjectSourceError, match="no MLproject in subdirectory 'steps'"):
        resolve_project(f"{git_url}#steps", "v1", cache_dir)
    with pytest.raises(ProjectSourceError, match=r"subdirectory 'nowhere' not found .* at v1"):
        resolve_project(f"{git_url}#nowhere", "v1", cache_dir)


def test_http_with_password(
    private_server: GitHttpServer, project_repo: ProjectRepo, cache_dir: Path
) -> None:
    url = private_server.url(project_repo.name, userinfo=":".join(CREDENTIALS))
    source = resolve_project(url, "feature", cache_dir)

    assert source.commit == project_repo.commits["feature"]
    assert not [value for value in source.tags().values() if CREDENTIALS[1] in value]
    stored = subprocess.run(
        ["grep", "-rl", CREDENTIALS[1], str(cache_dir)], capture_output=True, text=True
    )
    assert stored.stdout == ""


def test_http_wrong_password(
    private_server: GitHttpServer, project_repo: ProjectRepo, cache_dir: Path
) -> None:
    url = private_server.url(project_repo.name, userinfo="alice:wrong-secret")
    with pytest.raises(ProjectSourceError) as excinfo:
        resolve_project(url, "main", cache_dir)
    message = str(excinfo.value)
    assert "authentication to http://alice:***@127.0.0.1" in message
    assert "wrong-secret" not in message


def test_http_missing_repository(http_server: GitHttpServer, cache_dir: Path) -> None:
    url = http_server.url("missing.git")
    with pytest.raises(ProjectSourceError, match=f"{re.escape(url)} not found"):
        resolve_project(url, None, cache_dir)


# --- Local checkouts ---------------------------------------------------------


def test_local_dirty_in_place(local_clone: Path, project_repo: ProjectRepo) -> None:
    source = resolve_project(str(local_clone))

    assert source.work_dir == local_clone
    assert source.commit == project_repo.commits["main"]
    assert source.dirty is True
    assert "+# local edit, not committed" in source.diff
    assert "notes.txt" in source.diff
    assert source.tags()[DIRTY_TAG] == "true"
    assert source.code_version().startswith("sha256:")


def test_local_code_version(local_clone: Path, project_repo: ProjectRepo) -> None:
    dirty = resolve_project(str(local_clone)).code_version()
    (local_clone / "notes.txt").write_text("changed\n", encoding="utf-8")
    assert resolve_project(str(local_clone)).code_version() != dirty

    git("checkout", "--quiet", "--", ".", cwd=local_clone)
    (local_clone / "notes.txt").unlink()
    clean = resolve_project(str(local_clone))
    assert clean.dirty is False
    assert clean.diff is None
    assert clean.code_version() == project_repo.commits["main"]


def test_local_version_untouched(
    local_clone: Path, project_repo: ProjectRepo, cache_dir: Path
) -> None:
    before = checkout_state(local_clone)

    source = resolve_project(str(local_clone), "v1", cache_dir)

    assert checkout_state(local_clone) == before
    assert source.work_dir.is_relative_to(cache_dir)
    assert source.commit == project_repo.commits["v1"]
    assert source.dirty is False
    assert declared_max_depth(source.work_dir) == 0
    assert "local edit" not in (source.work_dir / "steps" / "train.py").read_text()
    assert not (source.work_dir / "notes.txt").exists()


def test_local_version_subfolder(local_clone: Path, cache_dir: Path) -> None:
    source = resolve_project(f"{local_clone / 'nested'}#iris", "feature", cache_dir)
    assert source.work_dir.parts[-2:] == ("nested", "iris")
    assert source.work_dir.is_relative_to(cache_dir)


def test_local_version_not_found(local_clone: Path, cache_dir: Path) -> None:
    with pytest.raises(ProjectSourceError, match=f"'nope' not found in '{local_clone}'"):
        resolve_project(str(local_clone), "nope", cache_dir)


def test_local_version_needs_git(tmp_path: Path, cache_dir: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(PROJECT_DIR / "steps", plain / "steps")
    shutil.copy(PROJECT_DIR / "MLproject", plain / "MLproject")
    with pytest.raises(ProjectSourceError, match="not in a Git repository"):
        resolve_project(str(plain), "main", cache_dir)
    source = resolve_project(str(plain))
    assert source.commit is None
    assert source.code_version().startswith("sha256:")


def test_local_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ProjectSourceError, match=r"project folder .*nowhere' not found"):
        resolve_project(str(tmp_path / "nowhere"))


def test_log_to_run(tracking_uri: str, local_clone: Path) -> None:
    source = resolve_project(str(local_clone))
    with mlflow.start_run() as run:
        source.log_to_run(run.info.run_id)

    recorded = mlflow.get_run(run.info.run_id)
    assert recorded.data.tags[DIRTY_TAG] == "true"
    assert recorded.data.tags[COMMIT_TAG] == source.commit
    assert recorded.data.tags[MLFLOW_GIT_COMMIT] == source.commit
    diff = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{DIFF_ARTIFACT_PATH}")
    assert diff == source.diff


# --- `mlflow run` from a Git URL ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["feature", "v1", "sha"])
def test_mlflow_run_version(
    ref: str, tracking_uri: str, subprocess_tmpdir: Path, git_url: str, project_repo: ProjectRepo
) -> None:
    expected = project_repo.commits["v1" if ref == "sha" else ref]
    version = expected if ref == "sha" else ref

    result = run_entry_point("train", CHEAP, project_uri=git_url, extra_args=["--version", version])

    assert result.returncode == 0, result.output
    assert result.run.info.status == "FINISHED"
    assert result.run.data.tags[MLFLOW_GIT_COMMIT] == expected
    assert result.run.data.params["max_depth"] == str(project_repo.max_depth[expected])


@pytest.mark.slow
def test_mlflow_run_subdirectory(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    http_server: GitHttpServer,
    project_repo: ProjectRepo,
) -> None:
    url = f"{http_server.url(project_repo.name)}#{SUBDIRECTORY}"
    result = run_entry_point("train", CHEAP, project_uri=url)

    assert result.returncode == 0, result.output
    assert result.run.info.status == "FINISHED"
    assert result.run.data.tags[MLFLOW_GIT_COMMIT] == project_repo.commits["main"]
    assert result.run.data.params["max_depth"] == "0"


@pytest.mark.slow
def test_mlflow_run_missing_ref(tracking_uri: str, subprocess_tmpdir: Path, git_url: str) -> None:
    result = run_entry_point("train", CHEAP, project_uri=git_url, extra_args=["--version", "nope"])
    assert result.returncode != 0
    assert "nope" in result.output


@pytest.mark.slow
def test_uv_env_reused(
    tracking_uri: str, subprocess_tmpdir: Path, git_url: str, env_root: Path, cache_dir: Path
) -> None:
    """Two commits with the same conda.yaml, in two checkout folders, share one environment."""
    outputs = []
    for version in ("main", "feature"):
        source = resolve_project(git_url, version, cache_dir)
        result = run_entry_point("train", CHEAP, env_manager="uv", project_uri=str(source.work_dir))
        assert result.returncode == 0, result.output
        outputs.append(result.output)

    assert len(list(env_root.glob("mlflow-*"))) == 1
    assert "already exists" in outputs[1]


# --- The whole pipeline from a Git URL ---------------------------------------


@pytest.fixture
def orchestrate_env(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    prefect_api_url: str,
    cache_dir: Path,
    tmp_path: Path,
) -> dict[str, str]:
    """Environment of an orchestrate.py subprocess: the session's Prefect API, a fresh cache."""
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        CACHE_DIR_ENV: str(cache_dir),
    }


def run_orchestrate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python orchestrate.py`` with cheap parameters."""
    command = [sys.executable, str(PROJECT_DIR / "orchestrate.py"), *args]
    command += ["--n-estimators", "10", "--cv-folds", "2"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=PIPELINE_TIMEOUT_S, check=False
    )


def pipeline_runs() -> tuple[Run, list[Run]]:
    """Return the parent run and its children, oldest child first."""
    runs = mlflow.search_runs(
        search_all_experiments=True, order_by=["attributes.start_time ASC"], output_format="list"
    )
    parents = [run for run in runs if MLFLOW_PARENT_RUN_ID not in run.data.tags]
    assert len(parents) == 1, [run.data.tags for run in parents]
    children = [run for run in runs if run.data.tags.get(MLFLOW_PARENT_RUN_ID)]
    return parents[0], children


@pytest.mark.slow
def test_orchestrate_from_url(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    orchestrate_env: dict[str, str],
    git_url: str,
    project_repo: ProjectRepo,
    cache_dir: Path,
) -> None:
    expected = project_repo.commits["feature"]

    completed = run_orchestrate(
        "--project-uri", git_url, "--version", "feature", env=orchestrate_env
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    parent, children = pipeline_runs()
    assert [run.data.tags["pipeline.step"] for run in children] == ["load", "train", "evaluate"]
    for run in [parent, *children]:
        assert run.info.status == "FINISHED"
        assert run.data.tags[COMMIT_TAG] == expected
        assert run.data.tags[MLFLOW_GIT_COMMIT] == expected
        assert run.data.tags[SOURCE_URI_TAG] == git_url
        assert run.data.tags[SOURCE_VERSION_TAG] == "feature"
        assert run.data.tags[DIRTY_TAG] == "false"
    assert {run.data.tags[MLFLOW_PARENT_RUN_ID] for run in children} == {parent.info.run_id}
    # The fetched MLproject, not the caller's, gave the default.
    assert children[1].data.params["max_depth"] == "3"
    checkouts = [path.name for path in cache_dir.glob("*/*")]
    assert checkouts == [expected]


@pytest.mark.slow
def test_orchestrate_local_version(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    orchestrate_env: dict[str, str],
    local_clone: Path,
    project_repo: ProjectRepo,
    cache_dir: Path,
) -> None:
    before = checkout_state(local_clone)

    completed = run_orchestrate(
        "--project-uri", str(local_clone), "--version", "v1", env=orchestrate_env
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert checkout_state(local_clone) == before
    parent, children = pipeline_runs()
    for run in [parent, *children]:
        assert run.data.tags[COMMIT_TAG] == project_repo.commits["v1"]
        assert run.data.tags[DIRTY_TAG] == "false"
    assert children[1].data.params["max_depth"] == "0"


@pytest.mark.slow
def test_orchestrate_dirty_checkout(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    orchestrate_env: dict[str, str],
    local_clone: Path,
    project_repo: ProjectRepo,
    cache_dir: Path,
) -> None:
    completed = run_orchestrate("--project-uri", str(local_clone), env=orchestrate_env)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    parent, children = pipeline_runs()
    for run in [parent, *children]:
        assert run.data.tags[DIRTY_TAG] == "true"
        assert run.data.tags[COMMIT_TAG] == project_repo.commits["main"]
    diff = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{DIFF_ARTIFACT_PATH}")
    assert "+# local edit, not committed" in diff
    assert "notes.txt" in diff
    assert not cache_dir.exists()


@pytest.mark.slow
def test_orchestrate_missing_ref(
    tracking_uri: str,
    subprocess_tmpdir: Path,
    orchestrate_env: dict[str, str],
    git_url: str,
    cache_dir: Path,
) -> None:
    completed = run_orchestrate("--project-uri", git_url, "--version", "nope", env=orchestrate_env)

    assert completed.returncode == 2
    assert f"error: version 'nope' not found in {git_url}" in completed.stderr
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
