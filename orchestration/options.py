"""Pipeline parameters and the ``orchestrate.py`` command line, built from MLproject.

Reads the parameter declarations of the ``load``, ``train`` and ``evaluate``
entry points (through ``steps.params``) and merges them into one set of
pipeline parameters: a name declared by several steps, such as
``random_state``, is one option passed to each of them. ``data_uri`` and
``model_uri`` are left out because the flow wires them from step to step.
Every value is validated with the steps' own rules before anything runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from steps.params import (
    MLPROJECT_PATH,
    PROJECT_DIR,
    ParameterError,
    ParameterSpec,
    load_entry_point_specs,
)

PIPELINE_ENTRY_POINTS = ("load", "train", "evaluate")
WIRED_PARAMETERS = frozenset({"data_uri", "model_uri"})
ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")
DEFAULT_ENV_MANAGER = "local"

# The programs MLflow calls to build a step environment with each manager.
_ENV_MANAGER_PROGRAMS = {"uv": ("uv",), "virtualenv": ("pyenv",), "conda": ("conda",)}


@dataclass(frozen=True)
class PipelineParameter:
    """A parameter of one or more steps, exposed once to the pipeline."""

    spec: ParameterSpec
    entry_points: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class PipelineOptions:
    """The validated command line: the parameters given and the run settings."""

    parameters: dict[str, Any] = field(default_factory=dict)
    experiment_name: str | None = None
    env_manager: str = DEFAULT_ENV_MANAGER
    project_uri: str = str(PROJECT_DIR)
    version: str | None = None
    no_cache: bool = False
    force: tuple[str, ...] = ()


def pipeline_parameters(mlproject: Path = MLPROJECT_PATH) -> dict[str, PipelineParameter]:
    """Merge the parameters of load, train and evaluate, except the URIs the flow wires.

    Raises ValueError when two entry points declare one name with different
    types or defaults, because one option cannot carry both.
    """
    merged: dict[str, PipelineParameter] = {}
    for entry_point in PIPELINE_ENTRY_POINTS:
        for spec in load_entry_point_specs(entry_point, mlproject):
            if spec.name in WIRED_PARAMETERS:
                continue
            known = merged.get(spec.name)
            if known is None:
                merged[spec.name] = PipelineParameter(spec, (entry_point,))
                continue
            if (known.spec.type, known.spec.default) != (spec.type, spec.default):
                raise ValueError(
                    f"{mlproject} declares {spec.name} as {known.spec.type} "
                    f"{known.spec.default!r} in {known.entry_points[0]} but as {spec.type} "
                    f"{spec.default!r} in {entry_point}: a shared parameter needs one "
                    "type and one default"
                )
            description = f"{known.spec.description} {entry_point}: {spec.description}"
            if len(known.entry_points) == 1:
                description = f"{known.entry_points[0]}: {description}"
            merged[spec.name] = PipelineParameter(
                ParameterSpec(spec.name, spec.type, spec.default, description),
                (*known.entry_points, entry_point),
            )
    return merged


def resolve_parameter_values(
    declared: Mapping[str, PipelineParameter], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return every pipeline parameter: the override if given, else the declared default.

    Values are not range-checked here, because each step validates its own.
    Raises ValueError for a name that no step declares.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ValueError(
            f"unknown pipeline parameter {', '.join(unknown)}: the project declares "
            f"{', '.join(declared)}"
        )
    return {
        name: overrides.get(name, parameter.spec.default) for name, parameter in declared.items()
    }


def project_name(mlproject: Path = MLPROJECT_PATH) -> str:
    with open(mlproject, encoding="utf-8") as stream:
        return str(yaml.safe_load(stream)["name"])


def default_experiment_name() -> str:
    """Return MLFLOW_EXPERIMENT_NAME when set, else the project name from MLproject."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or project_name()


def check_env_manager(env_manager: str) -> None:
    """Raise ValueError unless the environment manager is known and its program is installed."""
    if env_manager not in ENV_MANAGERS:
        raise ValueError(
            f"invalid env_manager={env_manager!r}: expected one of {', '.join(ENV_MANAGERS)}"
        )
    for program in _ENV_MANAGER_PROGRAMS.get(env_manager, ()):
        if not _find_program(program):
            raise ValueError(
                f"env_manager={env_manager!r} needs the {program!r} program, which is not on "
                "PATH: install it or choose another environment manager"
            )


def _find_program(program: str) -> str | None:
    if program == "conda":
        # MLflow looks for conda in MLFLOW_CONDA_HOME, then next to CONDA_EXE.
        if conda_home := os.environ.get("MLFLOW_CONDA_HOME"):
            return shutil.which(str(Path(conda_home) / "bin" / "conda"))
        if conda_exe := os.environ.get("CONDA_EXE"):
            return shutil.which(conda_exe)
    # The interpreter's own folder counts, because the steps start with it first on PATH.
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(program, path=search_path)


def build_parser(
    declared: Mapping[str, PipelineParameter] | None = None,
) -> argparse.ArgumentParser:
    """Build the command line: one option per pipeline parameter plus the run settings."""
    declared = pipeline_parameters() if declared is None else declared
    parser = argparse.ArgumentParser(
        prog="orchestrate.py",
        # `mlflow run -P n=5` passes `--n 5`, which must be rejected, not read as --n-estimators.
        allow_abbrev=False,
        description=(
            "Run the load, train and evaluate entry points as one Prefect flow "
            "(training-pipeline), each step a child of one parent MLflow run. "
            "Parameter defaults come from MLproject."
        ),
        epilog=(
            "Options also accept underscores (--n_estimators), the form `mlflow run . "
            "-P n_estimators=10` passes them in. MLFLOW_TRACKING_URI selects the tracking "
            "store (default: sqlite:///mlflow.db in the working directory) and "
            "PREFECT_API_URL the Prefect API (default: a temporary local server). "
            "Exit status: 0 on success, 1 when a step fails, 2 for invalid options."
        ),
    )
    group = parser.add_argument_group("pipeline parameters")
    for parameter in declared.values():
        spec = parameter.spec
        group.add_argument(
            spec.flag,
            dest=spec.name,
            type=_validator(spec),
            default=argparse.SUPPRESS,
            metavar=spec.type.upper(),
            help=_escape(
                f"{spec.description} [{', '.join(parameter.entry_points)}] "
                f"({spec.type}, default: {_show_default(spec.default)})"
            ),
        )

    settings = parser.add_argument_group("run settings")
    settings.add_argument(
        "--experiment-name",
        type=_non_empty("--experiment-name"),
        # None lets a run under `mlflow run` keep its experiment without a warning.
        default=None,
        metavar="NAME",
        help=_escape(
            "MLflow experiment of the pipeline runs, created when missing. Under "
            "`mlflow run` the experiment of the run that mlflow created is used "
            f"(default: MLFLOW_EXPERIMENT_NAME when set, else {project_name()!r})"
        ),
    )
    settings.add_argument(
        "--env-manager",
        choices=ENV_MANAGERS,
        default=DEFAULT_ENV_MANAGER,
        help=(
            "How each step gets its Python environment: local uses this interpreter's, "
            "uv, virtualenv and conda build one from conda.yaml "
            f"(default: {DEFAULT_ENV_MANAGER})"
        ),
    )
    settings.add_argument(
        "--project-uri",
        type=_non_empty("--project-uri"),
        default=str(PROJECT_DIR),
        metavar="URI",
        help=_escape(f"Folder or Git URI of the project whose steps run (default: {PROJECT_DIR})"),
    )
    settings.add_argument(
        "--version",
        type=_non_empty("--version"),
        default=None,
        metavar="REF",
        help=(
            "Git commit, branch or tag of --project-uri to run "
            "(default: the files as they are in a folder, the default branch of a Git URI)"
        ),
    )
    settings.add_argument(
        "--no-cache",
        # An optional value, because `mlflow run -P no_cache=true` passes `--no_cache true`.
        nargs="?",
        const=True,
        default=False,
        type=_boolean,
        metavar="BOOL",
        help=(
            "Run every step, even one whose finished run with the same parameters, "
            "inputs, code and environment is in the tracking store (default: reuse it)"
        ),
    )
    settings.add_argument(
        "--force",
        action="extend",
        type=_step_names,
        default=[],
        metavar="STEP[,STEP]",
        help=(
            "Run these steps even when a cached run exists. The steps after a forced "
            "step run again too, because its output is new. Repeat the option or separate steps "
            f"with commas; steps: {', '.join(PIPELINE_ENTRY_POINTS)}"
        ),
    )
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> PipelineOptions:
    """Parse and validate the command line, or exit with status 2 and one error line."""
    parser = build_parser()
    namespace = vars(parser.parse_args(_dashes_in_option_names(argv)))

    parameters = {name: value for name, value in namespace.items() if name not in _SETTINGS}
    if parameters.get("data_path"):
        parameters["data_path"] = absolute_data_path(parameters["data_path"])
    options = PipelineOptions(
        parameters=parameters,
        experiment_name=namespace["experiment_name"],
        env_manager=namespace["env_manager"],
        project_uri=namespace["project_uri"],
        version=namespace["version"],
        no_cache=namespace["no_cache"],
        force=tuple(dict.fromkeys(namespace["force"])),
    )
    try:
        check_env_manager(options.env_manager)
    except ValueError as exc:
        parser.error(f"argument --env-manager: {exc}")
    problem = _check_project_uri(options.project_uri, options.version)
    if problem:
        parser.error(f"argument --project-uri: invalid value {options.project_uri!r}: {problem}")
    return options


def absolute_data_path(value: str) -> str:
    """Make a relative path to an existing local file absolute, against the working directory.

    The steps run in the project folder, so without this a relative path typed
    in another folder would name a different file. URIs, absolute paths and
    names that are no local file (such as ``iris``) pass through unchanged.
    """
    if ":/" in value or os.path.isabs(value) or not Path(value).is_file():
        return value
    return str(Path(value).resolve())


def _check_project_uri(uri: str, version: str | None) -> str | None:
    """Return what is wrong with a local project folder, or None.

    Only the checks that cost nothing run here. The flow resolves the project
    and reports a missing Git version or an unreachable repository.
    """
    # Imported here because it loads mlflow, which a rejected parameter need not wait for.
    from orchestration.source import ProjectSourceError, is_remote_url, split_project_uri

    try:
        location, subdirectory = split_project_uri(uri)
    except ProjectSourceError as exc:
        return str(exc)
    if is_remote_url(location):
        return None
    folder = Path(unquote(urlsplit(location).path) if location.startswith("file://") else location)
    folder = folder.expanduser()
    if not folder.is_dir():
        return f"folder {str(folder)!r} not found"
    project_dir = folder / subdirectory
    # At a version, the MLproject has to exist in that commit, not in the folder now.
    if version is None and not (project_dir / "MLproject").is_file():
        return f"no MLproject file in {str(project_dir)!r}"
    return None


_SETTINGS = frozenset(
    {"experiment_name", "env_manager", "project_uri", "version", "no_cache", "force"}
)


def _validator(spec: ParameterSpec):
    def parse(raw: str) -> Any:
        try:
            return spec.parse(raw)
        except ParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid value {raw!r}: expected true or false")


def _step_names(raw: str) -> list[str]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in PIPELINE_ENTRY_POINTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid step {raw!r}: expected one or more of {', '.join(PIPELINE_ENTRY_POINTS)}, "
            "separated by commas"
        )
    return names


def _non_empty(flag: str):
    def parse(raw: str) -> str:
        if not raw.strip():
            raise argparse.ArgumentTypeError(f"invalid value {raw!r}: expected a non-empty string")
        return raw

    return parse


def _dashes_in_option_names(argv: Sequence[str] | None) -> list[str] | None:
    """Turn ``--n_estimators[=v]`` into ``--n-estimators[=v]``, leaving values as they are."""
    if argv is None:
        argv = sys.argv[1:]
    converted = []
    for token in argv:
        if token.startswith("--"):
            name, separator, value = token.partition("=")
            token = name.replace("_", "-") + separator + value
        converted.append(token)
    return converted


def _show_default(value: Any) -> str:
    return "empty" if value in ("", None) else str(value)


def _escape(text: str) -> str:
    # argparse expands %-formats in help strings.
    return text.replace("%", "%%")
