"""Measure the orchestration against the one-process floor and print ratios.

    python -m bench [--repeats 3] [--rows 1000000] [--skip-scale] [--json FILE]

Every measurement runs in a new temporary folder with its own SQLite
tracking store, as a subprocess whose wall time and peak resident memory
(from ``wait4``) are recorded. A Prefect server on 127.0.0.1 is started once
for the "running API" figures and stopped at the end. Each Iris figure is
the median of ``--repeats`` runs; the scale figures are single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN_DIR = Path(sys.executable).parent
STEPS = ("load", "train", "evaluate")

# Iris runs with MLproject's defaults. At scale, parameters that keep the
# whole benchmark under ten minutes on 2 cores.
SCALE_PARAMETERS = {"n_estimators": "16", "max_depth": "12", "cv_folds": "2"}
SCALE_FEATURES = 20
SERVER_START_TIMEOUT_S = 120


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None


def base_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        PATH=f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(workdir / "prefect-home"),
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="true",
    )
    env.pop("PREFECT_API_URL", None)
    return env


def measure(command: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Sample:
    """Run a command to completion; return its wall time and peak RSS.

    The peak is the largest of the process and every descendant it waited
    for, as Linux reports it in ``wait4``. Raises RuntimeError, with the end
    of the output, when the command fails.
    """
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=out)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n" + "\n".join(tail))
    return Sample(seconds, usage.ru_maxrss / 1024)


def median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.seconds for s in samples),
        statistics.median(s.peak_rss_mb for s in samples),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_server(workdir: Path, log: Path) -> Iterator[str]:
    """Start ``prefect server start`` on 127.0.0.1 and yield its API URL."""
    port = free_port()
    env = base_env(workdir)
    url = f"http://127.0.0.1:{port}/api"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                str(BIN_DIR / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Prefect server did not start; see {log}") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def orchestrate_command(options: dict[str, str]) -> list[str]:
    command = [PYTHON, str(PROJECT_DIR / "orchestrate.py")]
    for name, value in options.items():
        command += ["--" + name.replace("_", "-"), value]
    return command


def floor_command(options: dict[str, str]) -> list[str]:
    return [PYTHON, "-m", "bench.floor", *(f"{k}={v}" for k, v in options.items())]


def step_outputs(workdir: Path) -> tuple[str, str]:
    """Return the data and model URIs of the newest pipeline in a tracking store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string="tags.`pipeline.step` = 'evaluate' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    tags = runs[0].data.tags
    return tags["pipeline.data_uri"], tags["pipeline.model_uri"]


def step_peaks(workdir: Path) -> dict[str, float]:
    """Return the largest ``peak_rss_mb`` each step logged in a tracking store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    peaks: dict[str, float] = {}
    for step in STEPS:
        runs = client.search_runs(experiments, filter_string=f"tags.`pipeline.step` = '{step}'")
        values = [r.data.metrics["peak_rss_mb"] for r in runs if "peak_rss_mb" in r.data.metrics]
        peaks[step] = max(values, default=float("nan"))
    return peaks


def fresh_dir(root: Path, name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    return path


def bench_iris(root: Path, api_url: str, repeats: int, log: Path) -> list[Row]:
    floor, cold, cold_temp, cached = [], [], [], []
    for _ in range(repeats):
        workdir = fresh_dir(root, "floor")
        floor.append(measure(floor_command({}), base_env(workdir), PROJECT_DIR, log))

        workdir = fresh_dir(root, "chain")
        env = {**base_env(workdir), "PREFECT_API_URL": api_url}
        cold.append(measure(orchestrate_command({}), env, workdir, log))
        cached.append(measure(orchestrate_command({}), env, workdir, log))

        temp_dir = fresh_dir(root, "chain-temp-api")
        cold_temp.append(measure(orchestrate_command({}), base_env(temp_dir), temp_dir, log))

    floor_s = median(floor).seconds
    cold_s = median(cold).seconds
    rows = [
        Row("floor on Iris, one process", floor_s, "s"),
        Row("cold chain on Iris, running Prefect API", cold_s, "s"),
        Row(
            "cold chain / floor (running API)",
            cold_s / floor_s,
            "x",
            "<= 2.0",
            cold_s / floor_s <= 2.0,
        ),
        Row("cold chain / floor (temporary API)", median(cold_temp).seconds / floor_s, "x"),
        Row(
            "cached re-run / cold chain",
            median(cached).seconds / cold_s,
            "x",
            "<= 0.25",
            median(cached).seconds / cold_s <= 0.25,
        ),
    ]
    return rows + bench_steps(workdir, api_url, repeats, log)


def bench_steps(workdir: Path, api_url: str, repeats: int, log: Path) -> list[Row]:
    """Time each step run directly, through `mlflow run`, and its bare import."""
    data_uri, model_uri = step_outputs(workdir)
    arguments = {
        "load": {},
        "train": {"data_uri": data_uri},
        "evaluate": {"data_uri": data_uri, "model_uri": model_uri},
    }
    env = base_env(workdir)
    rows = []
    for step in STEPS:
        flags = [x for k, v in arguments[step].items() for x in ("--" + k.replace("_", "-"), v)]
        params = [x for k, v in arguments[step].items() for x in ("-P", f"{k}={v}")]
        imports, direct, via_mlflow = [], [], []
        for _ in range(repeats):
            imports.append(measure([PYTHON, "-c", f"import steps.{step}"], env, PROJECT_DIR, log))
            direct.append(measure([PYTHON, "-m", f"steps.{step}", *flags], env, PROJECT_DIR, log))
            via_mlflow.append(
                measure(
                    [
                        str(BIN_DIR / "mlflow"),
                        "run",
                        str(PROJECT_DIR),
                        "-e",
                        step,
                        "--env-manager",
                        "local",
                        *params,
                    ],
                    env,
                    workdir,
                    log,
                )
            )
        overhead = median(direct).seconds - median(imports).seconds
        rows.append(
            Row(f"{step}: process time above its imports", overhead, "s", "<= 1.0", overhead <= 1.0)
        )
        rows.append(
            Row(
                f"{step}: `mlflow run` / direct process",
                median(via_mlflow).seconds / median(direct).seconds,
                "x",
            )
        )
    return rows


def write_table(path: Path, rows: int) -> None:
    """Write a synthetic classification table as Parquet, label column ``label``."""
    import pandas as pd
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=rows,
        n_features=SCALE_FEATURES,
        n_informative=10,
        n_classes=3,
        random_state=0,
    )
    frame = pd.DataFrame(features, columns=[f"f{i:02d}" for i in range(SCALE_FEATURES)])
    frame["label"] = labels
    frame.to_parquet(path, index=False)


def bench_scale(root: Path, api_url: str, rows: int, log: Path) -> list[Row]:
    table = root / f"synthetic-{rows}.parquet"
    write_table(table, rows)
    options = {"data_path": str(table), "target": "label", **SCALE_PARAMETERS}

    workdir = fresh_dir(root, "scale-floor")
    floor = measure(floor_command(options), base_env(workdir), PROJECT_DIR, log)
    workdir = fresh_dir(root, "scale-chain")
    env = {**base_env(workdir), "PREFECT_API_URL": api_url}
    chain = measure(orchestrate_command(options), env, workdir, log)
    peaks = step_peaks(workdir)

    worst = max(peaks.values())
    result = [
        Row(f"floor on {rows:,} rows", floor.seconds, "s"),
        Row(f"chain on {rows:,} rows", chain.seconds, "s"),
        Row(
            "chain / floor at scale",
            chain.seconds / floor.seconds,
            "x",
            "<= 1.2",
            chain.seconds / floor.seconds <= 1.2,
        ),
        Row("floor peak memory", floor.peak_rss_mb, "MiB"),
    ]
    result += [Row(f"{step} peak memory", peak, "MiB") for step, peak in peaks.items()]
    result.append(
        Row(
            "largest step peak / floor peak",
            worst / floor.peak_rss_mb,
            "x",
            "<= 2.0",
            worst / floor.peak_rss_mb <= 2.0,
        )
    )
    return result


def print_rows(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'target':<8}  met")
    for row in rows:
        met = ""
        if row.met is not None:
            met = "yes" if row.met else "NO"
        print(f"{row.name:<{width}}  {row.value:>8.2f} {row.unit:<3} {row.target:<8}  {met}")


def machine() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per Iris figure; the median counts (default: 3)",
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the synthetic table (default: 1000000)"
    )
    parser.add_argument("--skip-scale", action="store_true", help="measure Iris only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rows < 1000:
        parser.error("--repeats must be at least 1 and --rows at least 1000")

    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    log = root / "bench.log"
    print(f"Working in {root}; subprocess output goes to {log}", file=sys.stderr)
    try:
        with prefect_server(root, log) as api_url:
            rows = bench_iris(root, api_url, args.repeats, log)
            if not args.skip_scale:
                rows += bench_scale(root, api_url, args.rows, log)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_rows(rows)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2)
        )
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
