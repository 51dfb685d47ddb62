"""Git servers on loopback and a test repository built from the project's files.

``build_project_repo`` commits the project's files into a fresh repository
with a tag, two branches and a copy of the project in a subdirectory, so that
each version has its own default ``max_depth`` to tell them apart. ``GitDaemon``
serves it as ``git://`` with ``git daemon``; ``GitHttpServer`` serves it over
http through ``git http-backend``, optionally behind basic authentication.
Both listen on 127.0.0.1 only and stop when their ``with`` block ends.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

# What a checkout of the project needs to run its entry points and the flow.
PROJECT_ENTRIES = (
    "MLproject",
    "conda.yaml",
    ".gitignore",
    "steps",
    "orchestrate.py",
    "orchestration",
)
SUBDIRECTORY = "nested/iris"
SERVER_START_TIMEOUT_S = 10.0
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path) -> str:
    """Run git in ``cwd`` with a fixed identity and no user config, and return stdout."""
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {completed.stderr.strip()}")
    return completed.stdout.strip()


@dataclass(frozen=True)
class ProjectRepo:
    """A bare repository to serve, the clone it was built in, and its versions.

    ``commits`` maps ``main``, ``feature`` and ``v1`` to full shas.
    ``max_depth`` maps each sha to the train default that MLproject declares
    there, so a run shows which version it executed.
    """

    serve_root: Path
    bare: Path
    work: Path
    commits: dict[str, str]
    max_depth: dict[str, int]

    @property
    def name(self) -> str:
        return self.bare.name


def build_project_repo(project_dir: Path, root: Path) -> ProjectRepo:
    """Commit the project's files into a new repository under ``root``.

    The annotated tag ``v1`` contains the project as it is, at the root and
    in ``nested/iris``. Branch ``feature`` sets the train default max_depth to
    3 in the root MLproject, and ``main``, the default branch, sets it to 4.
    """
    work = root / "work"
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    for target in (work, work / SUBDIRECTORY):
        _copy_project(project_dir, target)
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "Add the project", cwd=work)
    git("tag", "-a", "v1", "-m", "First release", cwd=work)

    git("switch", "--quiet", "-c", "feature", cwd=work)
    _set_max_depth_default(work / "MLproject", 3)
    git("commit", "--quiet", "-am", "Limit tree depth to 3", cwd=work)
    git("switch", "--quiet", "main", cwd=work)
    _set_max_depth_default(work / "MLproject", 4)
    git("commit", "--quiet", "-am", "Limit tree depth to 4", cwd=work)

    commits = {
        ref: git("rev-parse", f"{ref}^{{commit}}", cwd=work) for ref in ("main", "feature", "v1")
    }
    serve_root = root / "served"
    bare = serve_root / "project.git"
    serve_root.mkdir()
    git("clone", "--quiet", "--bare", str(work), str(bare), cwd=root)
    max_depth = {commits["v1"]: 0, commits["feature"]: 3, commits["main"]: 4}
    return ProjectRepo(serve_root, bare, work, commits, max_depth)


def _copy_project(project_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in PROJECT_ENTRIES:
        source = project_dir / entry
        if source.is_dir():
            shutil.copytree(source, target / entry, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, target / entry)


def _set_max_depth_default(mlproject: Path, value: int) -> None:
    spec = yaml.safe_load(mlproject.read_text(encoding="utf-8"))
    spec["entry_points"]["train"]["parameters"]["max_depth"]["default"] = value
    mlproject.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"git daemon exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"git daemon did not listen on 127.0.0.1:{port} within 10 s")


class GitDaemon:
    """``git daemon`` serving every repository under ``base_path`` on 127.0.0.1."""

    def __init__(self, base_path: Path):
        self.base_path = base_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> GitDaemon:
        self._process = subprocess.Popen(
            [
                "git",
                "daemon",
                f"--base-path={self.base_path}",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self._process)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=10)


class _GitHttpHandler(BaseHTTPRequestHandler):
    """Pass each request to ``git http-backend`` as a CGI call."""

    server: _GitHttpServerBase

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        if not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.server.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        if self.server.credentials:
            env["REMOTE_USER"] = self.server.credentials[0]
        if "Git-Protocol" in self.headers:
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if "Content-Encoding" in self.headers:
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        body = self._read_body()
        env["CONTENT_LENGTH"] = str(len(body))
        completed = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        self._send_cgi_output(completed.stdout)

    def _authorized(self) -> bool:
        if self.server.credentials is None:
            return True
        user, password = self.server.credentials
        expected = base64.b64encode(f"{user}:{password}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send_cgi_output(self, output: bytes) -> None:
        separator = b"\r\n\r\n" if b"\r\n\r\n" in output else b"\n\n"
        head, _, body = output.partition(separator)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _GitHttpServerBase(ThreadingHTTPServer):
    daemon_threads = True
    project_root: Path
    credentials: tuple[str, str] | None


class GitHttpServer:
    """An http server on 127.0.0.1 that serves the repositories under ``root``."""

    def __init__(self, root: Path, credentials: tuple[str, str] | None = None):
        self._server = _GitHttpServerBase(("127.0.0.1", 0), _GitHttpHandler)
        self._server.project_root = root
        self._server.credentials = credentials
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str, userinfo: str = "") -> str:
        prefix = f"{userinfo}@" if userinfo else ""
        return f"http://{prefix}127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
