"""Resolve the project a pipeline run executes: a local folder or a Git URL at a version.

A project URI is a local path, a ``file://`` URI or a Git URL (``https://``,
``http://``, ``ssh://``, ``git://`` or scp-like ``user@host:path``), optionally
followed by ``#<subdirectory>`` when the MLproject is not at the repository's
root. A version is a branch, a tag or a commit. Without a version, a Git URL
means the repository's default branch, and a local path means its files as
they are.

Reads: the Git remote (``git ls-remote``, then one shallow ``git fetch`` of the
resolved commit) or the local repository (read-only git commands).

Writes: one clean checkout per (repository URL, commit) under the source cache
(``$PIPELINE_SOURCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/iris-forest-pipeline/
sources``, else ``~/.cache/iris-forest-pipeline/sources``), reused by later
runs of the same commit. A local checkout given with a version is copied into
that cache by fetching the commit from it, so its working tree, index and HEAD
stay as they are. On MLflow runs, ``ProjectSource.log_to_run`` writes the tags
``pipeline.source_uri``, ``pipeline.source_version``, ``pipeline.commit``,
``pipeline.dirty``, ``mlflow.source.git.commit`` and, for a Git URL,
``mlflow.source.git.repoURL``. For a checkout with uncommitted changes it also
logs the artifact ``source/uncommitted.diff``. Passwords and tokens in URLs
are masked in every tag, log line and error message that this module writes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

logger = logging.getLogger(__name__)

# Tag names that other tools search for. Renaming one is a breaking change.
SOURCE_URI_TAG = "pipeline.source_uri"
SOURCE_VERSION_TAG = "pipeline.source_version"
COMMIT_TAG = "pipeline.commit"
DIRTY_TAG = "pipeline.dirty"
DIFF_ARTIFACT_PATH = "source/uncommitted.diff"

CACHE_DIR_ENV = "PIPELINE_SOURCE_CACHE_DIR"
CACHE_APP_NAME = "iris-forest-pipeline"

# Listing refs transfers little data, so a server that has not responded
# within two minutes is unlikely to respond. A fetch transfers the files of one
# commit, which can take many minutes for a large repository over a slow link.
LS_REMOTE_TIMEOUT_S = 120
FETCH_TIMEOUT_S = 1800
LOCAL_GIT_TIMEOUT_S = 120

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Git reads `host:path` and `user@host:path` as SSH when a colon comes before
# any slash; `./host:path` is a local path.
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^@/:]+:")
_HEX = re.compile(r"^[0-9a-f]+$")
_FULL_SHA_LENGTHS = (40, 64)
_MIN_SHORT_SHA = 4

# Variables that point git at another repository. Inherited from a caller such
# as a git hook, they would make the commands below act on that repository.
_GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)

# Lower-case fragments of git's error output, checked in this order.
_UNREACHABLE_MARKERS = (
    "could not resolve host",
    "could not resolve hostname",
    "unable to connect",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "connection reset",
    "no route to host",
    "network is unreachable",
)
_NOT_FOUND_MARKERS = (
    "repository not found",
    "not exported",
    "does not appear to be a git repository",
    "no such repository",
    "not found",
)
_AUTH_MARKERS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied",
    "returned error: 403",
)

_CACHE_SKIP_DIRS = frozenset(
    {".git", "__pycache__", ".venv", "mlruns", "mlartifacts", ".pytest_cache", ".ruff_cache"}
)


class ProjectSourceError(RuntimeError):
    """A project URI or version that cannot be resolved. The message names it."""


@dataclass(frozen=True)
class ProjectSource:
    """The project folder that every step of one pipeline run executes.

    ``uri`` is the project URI as given, except that a local path is made
    absolute. ``commit`` is the full sha the steps run, or None outside Git.
    ``dirty`` is true for a local checkout with uncommitted changes, which
    ``diff`` then lists (``git diff HEAD`` plus the untracked files).
    """

    uri: str
    version: str | None
    work_dir: Path
    commit: str | None
    dirty: bool
    diff: str | None

    def __repr__(self) -> str:
        return (
            f"ProjectSource(uri={mask_url(self.uri)!r}, version={self.version!r}, "
            f"work_dir={str(self.work_dir)!r}, commit={self.commit!r}, dirty={self.dirty!r})"
        )

    def tags(self) -> dict[str, str]:
        """Build the tags that record this source on a run, with credentials masked.

        Besides the ``pipeline.*`` tags, these set MLflow's commit and
        repository tags, which ``mlflow.projects.run`` leaves unset on a run
        created beforehand, so that the MLflow UI shows them.
        """
        tags = {SOURCE_URI_TAG: mask_url(self.uri), DIRTY_TAG: str(self.dirty).lower()}
        if self.version:
            tags[SOURCE_VERSION_TAG] = self.version
        if self.commit:
            tags[COMMIT_TAG] = self.commit
            tags[MLFLOW_GIT_COMMIT] = self.commit
        repository = split_project_uri(self.uri)[0]
        if is_remote_url(repository):
            tags[MLFLOW_GIT_REPO_URL] = strip_credentials(repository)
        return tags

    def code_version(self) -> str:
        """Return the commit when the files match it, else a content hash of the files.

        The hash covers the path and content of every file in the project
        folder, except files that Git ignores (or, outside Git, caches such as
        ``__pycache__`` and ``mlruns``). It starts with ``sha256:``.
        """
        if self.commit and not self.dirty:
            return self.commit
        return "sha256:" + hash_project_files(self.work_dir)

    def log_to_run(self, run_id: str) -> None:
        """Set this source's tags on a run, and log the diff when the checkout is dirty."""
        client = MlflowClient()
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in self.tags().items()])
        if self.dirty and self.diff:
            client.log_text(run_id, self.diff, DIFF_ARTIFACT_PATH)


def resolve_project(
    uri: str, version: str | None = None, cache_dir: Path | None = None
) -> ProjectSource:
    """Resolve a project URI and version to one folder and commit.

    A Git URL is resolved to a commit with ``git ls-remote`` and that commit is
    fetched once into the cache (``cache_dir``, else the default source cache).
    A local path without a version runs in place; with a version, from a
    clean copy of that commit in the cache. Raises ProjectSourceError naming
    the URI or version when the host is unreachable, the repository or the
    version does not exist, or the folder has no MLproject.
    """
    version = _check_version(version)
    location, subdirectory = split_project_uri(uri)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if is_remote_url(location):
        return _resolve_remote(uri, location, subdirectory, version, cache_root)
    return _resolve_local(uri, _local_path(location), subdirectory, version, cache_root)


def default_cache_dir() -> Path:
    """Return the folder of cached checkouts, from the environment or the user's cache."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / CACHE_APP_NAME / "sources"


def split_project_uri(uri: str) -> tuple[str, str]:
    """Split ``<location>#<subdirectory>`` into its parts; the subdirectory may be empty."""
    location, _, subdirectory = uri.strip().partition("#")
    if not location:
        raise ProjectSourceError(f"invalid project URI {mask_url(uri)!r}: it names no location")
    if location.startswith("-"):
        raise ProjectSourceError(
            f"invalid project URI {mask_url(uri)!r}: expected a path or a Git URL"
        )
    subdirectory = subdirectory.strip("/")
    if ".." in Path(subdirectory).parts:
        raise ProjectSourceError(
            f"invalid subdirectory {subdirectory!r} in {mask_url(uri)!r}: "
            "expected a path relative to the repository root, without '..'"
        )
    return location, subdirectory


def is_remote_url(location: str) -> bool:
    """Return whether the location is a Git URL: any scheme but ``file://``, or ``host:path``."""
    if location.startswith("file://"):
        return False
    if _URL_SCHEME.match(location):
        return True
    return bool(_SCP_LIKE.match(location)) and not location.startswith(("/", "."))


def mask_url(url: str) -> str:
    """Replace a password or token in a URL with ``***``.

    ``https://user:secret@host`` becomes ``https://user:***@host``. A lone
    user name in an http(s) URL is usually a token, so it is masked too. The
    user of an SSH URL (``git@host``) is kept.
    """
    return _replace_userinfo(url, "***")


def strip_credentials(url: str) -> str:
    """Remove a password or token from a URL, by the rules of ``mask_url``."""
    return _replace_userinfo(url, None)


def hash_project_files(work_dir: Path) -> str:
    """Return a sha256 over the relative paths and contents of the project files."""
    digest = hashlib.sha256()
    for relative in _project_files(work_dir):
        path = work_dir / relative
        if not path.is_file():
            continue
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# --- Remote repositories -----------------------------------------------------


def _resolve_remote(
    uri: str, url: str, subdirectory: str, version: str | None, cache_root: Path
) -> ProjectSource:
    repo_cache = _repo_cache_dir(cache_root, url)
    if version and _is_full_sha(version) and _is_valid_checkout(repo_cache / version, version):
        # A pinned commit that is already cached needs no network at all.
        checkout = repo_cache / version
        logger.info("Reusing checkout of %s at %s in %s", mask_url(url), version, checkout)
        return _source(uri, version, checkout, subdirectory, version)

    refs, default_ref = _list_remote_refs(url)
    if version is None:
        commit = refs.get(default_ref or "HEAD") or refs.get("HEAD")
        if commit is None:
            raise ProjectSourceError(f"Git repository {mask_url(url)} is empty: no commit to run")
        logger.info("Default branch of %s is %s at %s", mask_url(url), default_ref, commit)
    else:
        commit = _match_ref(refs, version)
        if commit is None and _is_sha_prefix(version):
            commit = version.lower()
        if commit is None:
            raise ProjectSourceError(_version_not_found(version, mask_url(url), refs))
    checkout, commit = _cached_checkout(repo_cache, url, commit, version)
    return _source(uri, version, checkout, subdirectory, commit)


def _list_remote_refs(url: str) -> tuple[dict[str, str], str | None]:
    """Return the remote's refs (name to commit, tags peeled) and its default branch."""
    completed = _run_git(["ls-remote", "--symref", url], url=url, timeout=LS_REMOTE_TIMEOUT_S)
    if completed.returncode != 0:
        raise _remote_error(url, completed.stderr)
    refs: dict[str, str] = {}
    default_ref = None
    for line in completed.stdout.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: ") and name == "HEAD":
            default_ref = left.removeprefix("ref: ")
        elif name.endswith("^{}"):
            refs[name.removesuffix("^{}")] = left
        elif name not in refs:
            refs[name] = left
    return refs, default_ref


def _match_ref(refs: dict[str, str], name: str) -> str | None:
    # The order in which git itself expands a short ref name (gitrevisions(7)).
    for candidate in (name, f"refs/{name}", f"refs/tags/{name}", f"refs/heads/{name}"):
        if candidate.startswith("refs/") and candidate in refs:
            return refs[candidate]
    return None


def _version_not_found(version: str, location: str, refs: dict[str, str]) -> str:
    branches = sorted(name.removeprefix("refs/heads/") for name in refs if "/heads/" in name)
    tags = sorted(name.removeprefix("refs/tags/") for name in refs if "/tags/" in name)
    return (
        f"version {version!r} not found in {location}: no branch, tag or commit of that "
        f"name (branches: {_first_names(branches)}; tags: {_first_names(tags)})"
    )


def _first_names(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _remote_error(url: str, stderr: str) -> ProjectSourceError:
    location = mask_url(url)
    detail = _error_detail(stderr, url)
    text = stderr.lower()
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return ProjectSourceError(f"cannot reach the Git server of {location}: {detail}")
    if any(marker in text for marker in _NOT_FOUND_MARKERS):
        return ProjectSourceError(
            f"Git repository {location} not found, or access to it denied: {detail}"
        )
    if any(marker in text for marker in _AUTH_MARKERS):
        return ProjectSourceError(
            f"authentication to {location} failed: {detail}. Configure a Git credential "
            "helper or an SSH key for this host"
        )
    return ProjectSourceError(f"git failed on {location}: {detail}")


# --- The checkout cache ------------------------------------------------------


def _repo_cache_dir(cache_root: Path, url: str) -> Path:
    """Return the cache folder of one repository, named to be recognisable and unique."""
    clean = strip_credentials(url).rstrip("/")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", re.split(r"[/:]", clean)[-1].removesuffix(".git"))
    key = hashlib.sha256(clean.encode("utf-8")).hexdigest()[:12]
    return cache_root / f"{name.strip('.-') or 'repo'}-{key}"


def _cached_checkout(
    repo_cache: Path, url: str, commit: str, version: str | None
) -> tuple[Path, str]:
    """Return a clean checkout of ``commit`` from the cache, fetching it on a miss.

    ``commit`` may be an abbreviated sha, which costs a fetch of every branch
    and tag to expand. Each checkout is built in a temporary folder and renamed
    into place, so a checkout folder that exists is complete, and two runs
    fetching the same commit at once both end with the same folder.
    """
    if _is_full_sha(commit) and _reuse_checkout(repo_cache / commit, commit, url):
        return repo_cache / commit, commit

    repo_cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=repo_cache))
    try:
        commit = _fetch_commit(url, commit, version, staging)
        checkout = repo_cache / commit
        if not _reuse_checkout(checkout, commit, url):
            try:
                staging.rename(checkout)
            except OSError:
                # Another run renamed its copy of this commit into place first.
                if not _is_valid_checkout(checkout, commit):
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return checkout, commit


def _reuse_checkout(checkout: Path, commit: str, url: str) -> bool:
    """Return whether ``checkout`` can be reused, deleting it if it was modified."""
    if _is_valid_checkout(checkout, commit):
        logger.info("Reusing checkout of %s at %s in %s", mask_url(url), commit, checkout)
        return True
    if checkout.exists():
        logger.warning(
            "Replacing checkout %s: its tracked files no longer match %s", checkout, commit
        )
        shutil.rmtree(checkout)
    return False


def _fetch_commit(url: str, commit: str, version: str | None, dest: Path) -> str:
    """Fetch one commit of ``url`` into a new repository at ``dest`` and check it out.

    Returns the full sha. Asks for the commit alone first, which servers that
    speak Git protocol v2 allow. If the server rejects that, fetches every
    branch and tag.
    """
    location = mask_url(url)
    logger.info("Fetching %s at %s into %s", location, version or commit, dest)
    _check_git(["init", "--quiet", str(dest)], url=url)

    fetched = None
    if _is_full_sha(commit):
        fetched = _run_git(
            ["fetch", "--quiet", "--depth", "1", "--no-tags", url, commit],
            cwd=dest,
            url=url,
            timeout=FETCH_TIMEOUT_S,
        )
    if fetched is None or fetched.returncode != 0:
        refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        everything = _run_git(
            ["fetch", "--quiet", "--no-tags", url, *refspecs],
            cwd=dest,
            url=url,
            timeout=FETCH_TIMEOUT_S,
        )
        if everything.returncode != 0:
            raise _remote_error(url, everything.stderr)

    resolved = _run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"],
        cwd=dest,
        url=url,
    )
    if resolved.returncode != 0:
        raise ProjectSourceError(
            f"version {version or commit!r} not found in {location}: no commit with that sha"
        )
    full_sha = resolved.stdout.strip()

    _check_git(
        ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", full_sha],
        cwd=dest,
        url=url,
    )
    # MLflow records the first remote as mlflow.source.git.repoURL, and git
    # resolves relative submodule URLs against it.
    _check_git(["remote", "add", "origin", strip_credentials(url)], cwd=dest, url=url)
    if (dest / ".gitmodules").is_file():
        _check_git(
            ["submodule", "update", "--init", "--recursive", "--quiet"],
            cwd=dest,
            url=url,
            timeout=FETCH_TIMEOUT_S,
        )
    return full_sha


def _is_valid_checkout(checkout: Path, commit: str) -> bool:
    """Return whether a cached checkout is at ``commit`` with no tracked file changed."""
    if not (checkout / ".git").exists():
        return False
    head = _run_git(["rev-parse", "HEAD"], cwd=checkout)
    if head.returncode != 0 or head.stdout.strip() != commit:
        return False
    # Runs may leave untracked files (__pycache__, outputs); edits to tracked
    # files would make the steps run code that is not the commit.
    status = _run_git(["status", "--porcelain", "--untracked-files=no"], cwd=checkout)
    return status.returncode == 0 and not status.stdout.strip()


# --- Local folders -----------------------------------------------------------


def _local_path(location: str) -> Path:
    if location.startswith("file://"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise ProjectSourceError(
                f"invalid project URI {location!r}: a file URI must name a local path"
            )
        location = unquote(parts.path)
    return Path(location).expanduser().resolve()


def _resolve_local(
    uri: str, path: Path, subdirectory: str, version: str | None, cache_root: Path
) -> ProjectSource:
    if not path.is_dir():
        raise ProjectSourceError(f"project folder {str(path)!r} not found (from {uri!r})")
    absolute_uri = str(path) + (f"#{subdirectory}" if subdirectory else "")
    toplevel = _git_toplevel(path)

    if version is None:
        work_dir = _project_dir(path, subdirectory, absolute_uri, None)
        if toplevel is None:
            return ProjectSource(absolute_uri, None, work_dir, None, False, None)
        commit = _head_commit(path)
        diff = _uncommitted_changes(work_dir, commit)
        if diff:
            logger.warning(
                "Project folder %s has uncommitted changes: runs are tagged %s=true",
                work_dir,
                DIRTY_TAG,
            )
        return ProjectSource(absolute_uri, None, work_dir, commit, bool(diff), diff or None)

    if toplevel is None:
        raise ProjectSourceError(
            f"cannot run version {version!r} of {str(path)!r}: it is not in a Git repository"
        )
    commit = _local_commit(path, version)
    if commit is None:
        raise ProjectSourceError(
            f"version {version!r} not found in {str(toplevel)!r}: no branch, tag or commit "
            "of that name"
        )
    if _uncommitted_changes(path, _head_commit(path)):
        logger.info(
            "Running commit %s of %s; uncommitted changes in that folder are not included",
            commit,
            path,
        )

    checkout, commit = _cached_checkout(
        _repo_cache_dir(cache_root, str(toplevel)), str(toplevel), commit, version
    )
    relative = path.relative_to(toplevel)
    return _source(absolute_uri, version, checkout / relative, subdirectory, commit)


def _local_commit(path: Path, version: str) -> str | None:
    """Return the full sha that ``version`` names in the repository at ``path``, if any."""
    resolved = _run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{version}^{{commit}}"],
        cwd=path,
    )
    if resolved.returncode == 0:
        return resolved.stdout.strip()
    # Like `git checkout <branch>`, accept a branch that only one remote has.
    listed = _run_git(
        ["for-each-ref", "--format=%(refname)", f"refs/remotes/*/{version}"], cwd=path
    )
    candidates = listed.stdout.split()
    if len(candidates) != 1:
        return None
    logger.info("Version %r of %s is the remote branch %s", version, path, candidates[0])
    return _local_commit(path, candidates[0])


def _git_toplevel(path: Path) -> Path | None:
    completed = _run_git(["rev-parse", "--show-toplevel"], cwd=path)
    if completed.returncode != 0:
        return None
    return Path(completed.stdout.strip()).resolve()


def _head_commit(path: Path) -> str | None:
    """Return the sha of HEAD, or None in a repository without commits."""
    completed = _run_git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=path)
    return completed.stdout.strip() if completed.returncode == 0 else None


def _uncommitted_changes(work_dir: Path, head: str | None) -> str:
    """Return ``git diff HEAD`` of the folder plus its untracked files; empty when clean."""
    diff = ""
    listed = ["--others"]
    if head is None:
        # Without a commit, every file, staged or not, is uncommitted.
        listed = ["--cached", "--others"]
    else:
        diff = _check_git(
            ["diff", "--no-color", "--no-ext-diff", "--binary", "HEAD", "--", "."], cwd=work_dir
        ).stdout
    untracked = _check_git(
        ["ls-files", *listed, "--exclude-standard", "--", "."], cwd=work_dir
    ).stdout.splitlines()
    if untracked:
        listing = "".join(f"#   {name}\n" for name in untracked)
        diff += f"# Untracked files (content not included):\n{listing}"
    return diff


def _project_files(work_dir: Path) -> list[str]:
    """List the project's files as sorted relative POSIX paths."""
    listed = _run_git(
        ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=work_dir
    )
    if listed.returncode == 0:
        return sorted(set(filter(None, listed.stdout.split("\0"))))
    files = []
    for root, dirs, names in os.walk(work_dir):
        dirs[:] = [name for name in dirs if name not in _CACHE_SKIP_DIRS]
        for name in names:
            if not name.endswith(".pyc") and name != "mlflow.db":
                files.append((Path(root) / name).relative_to(work_dir).as_posix())
    return sorted(files)


# --- Shared helpers ----------------------------------------------------------


def _source(
    uri: str, version: str | None, checkout: Path, subdirectory: str, commit: str
) -> ProjectSource:
    work_dir = _project_dir(checkout, subdirectory, mask_url(uri), version or commit)
    return ProjectSource(uri, version, work_dir, commit, False, None)


def _project_dir(root: Path, subdirectory: str, location: str, version: str | None) -> Path:
    """Return ``root/subdirectory`` after checking that it contains an MLproject."""
    work_dir = (root / subdirectory).resolve() if subdirectory else root
    at_version = f" at {version}" if version else ""
    if not work_dir.is_dir():
        raise ProjectSourceError(
            f"subdirectory {subdirectory!r} not found in {location}{at_version}"
        )
    # MLflow finds the file by a case-insensitive name.
    if not any(entry.name.lower() == "mlproject" for entry in work_dir.iterdir()):
        where = f"subdirectory {subdirectory!r}" if subdirectory else "the root folder"
        raise ProjectSourceError(f"no MLproject in {where} of {location}{at_version}")
    return work_dir


def _check_version(version: str | None) -> str | None:
    if version is None or not version.strip():
        return None
    version = version.strip()
    if version.startswith("-") or any(char.isspace() or ord(char) < 32 for char in version):
        raise ProjectSourceError(
            f"invalid version {version!r}: expected a branch, a tag or a commit sha"
        )
    return version


def _is_full_sha(text: str) -> bool:
    return len(text) in _FULL_SHA_LENGTHS and bool(_HEX.match(text))


def _is_sha_prefix(text: str) -> bool:
    return _MIN_SHORT_SHA <= len(text) <= max(_FULL_SHA_LENGTHS) and bool(_HEX.match(text.lower()))


def _replace_userinfo(url: str, replacement: str | None) -> str:
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    if has_password:
        kept = f"{user}:{replacement}" if replacement else user
    elif parts.scheme.lower() in ("http", "https"):
        kept = replacement
    else:
        return url
    netloc = f"{kept}@{host}" if kept else host
    return urlunsplit(parts._replace(netloc=netloc))


def _secrets_in(url: str) -> list[str]:
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    user, has_password, password = userinfo.partition(":")
    secret = password if has_password else user
    if not secret or strip_credentials(url) == url:
        return []
    return [secret, unquote(secret)]


def _error_detail(stderr: str, url: str | None) -> str:
    """Return git's error output as one line with any secret of ``url`` masked."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = "; ".join(lines)[:500] or "no error output"
    if url:
        detail = detail.replace(url, mask_url(url))
        for secret in _secrets_in(url):
            detail = detail.replace(secret, "***")
    return detail


def _git_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _GIT_LOCATION_VARS}
    # No terminal is attached, so git must fail where it would prompt for a
    # password. Its messages stay in English so that _remote_error can classify them.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    # Status and diff on someone's checkout must not rewrite its index.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def _run_git(
    args: list[str],
    *,
    cwd: Path | None = None,
    url: str | None = None,
    timeout: float = LOCAL_GIT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    command = ["git", *args]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ProjectSourceError(
            "git is not installed or not on PATH: it is needed to run a project from a "
            "Git URL or at a version"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        target = mask_url(url) if url else str(cwd)
        raise ProjectSourceError(
            f"git {args[0]} on {target} timed out after {timeout:.0f} s"
        ) from exc


def _check_git(
    args: list[str],
    *,
    cwd: Path | None = None,
    url: str | None = None,
    timeout: float = LOCAL_GIT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    completed = _run_git(args, cwd=cwd, url=url, timeout=timeout)
    if completed.returncode != 0:
        if url and args[0] in ("fetch", "submodule"):
            raise _remote_error(url, completed.stderr)
        target = mask_url(url) if url else str(cwd)
        raise ProjectSourceError(
            f"git {args[0]} failed on {target}: {_error_detail(completed.stderr, url)}"
        )
    return completed
