"""Typed, validated step parameters built from the declarations in MLproject.

MLproject is the one place that names each parameter and gives its type,
default and description. This module turns an entry point's declarations into
command-line options (``data_uri`` becomes ``--data-uri``) and checks every
value against the type and the range that the step accepts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
MLPROJECT_PATH = PROJECT_DIR / "MLproject"


class ParameterError(ValueError):
    """A parameter value that is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class Rule:
    """A range check on a parsed value, with the wording of what is allowed."""

    check: Callable[[Any], bool]
    allowed: str


RULES: dict[str, Rule] = {
    "n_estimators": Rule(lambda v: v >= 1, "an integer of at least 1"),
    "max_depth": Rule(lambda v: v >= 0, "an integer of at least 1, or 0 for unlimited depth"),
    "cv_folds": Rule(lambda v: v >= 2, "an integer of at least 2"),
    "random_state": Rule(lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295"),
    "test_size": Rule(lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
    "min_accuracy": Rule(lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "data_path": Rule(
        lambda v: v.strip() != "",
        "a CSV or Parquet file path or URI, or one of iris, wine, breast_cancer, digits",
    ),
    "data_format": Rule(lambda v: v in ("auto", "csv", "parquet"), "one of auto, csv, parquet"),
    "target": Rule(lambda v: v.strip() != "", "the name of the label column"),
}


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str
    default: Any
    description: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: str) -> Any:
        """Convert a command-line string to the declared type and check its range."""
        rule = RULES.get(self.name)
        try:
            value = _convert(self.name, self.type, raw)
        except ParameterError:
            if rule is None:
                raise
            # The range wording also names the type, so the message lists all that is allowed.
            raise ParameterError(f"invalid {self.name}={raw!r}: expected {rule.allowed}") from None
        if rule is not None and not rule.check(value):
            raise ParameterError(f"invalid {self.name}={raw!r}: expected {rule.allowed}")
        return value


def _convert(name: str, type_name: str, raw: str) -> Any:
    text = raw.strip()
    if type_name == "int":
        try:
            return int(text)
        except ValueError:
            pass
        # Accept "100.0" for an int, as MLflow's own parameter logging may render it.
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise ParameterError(f"invalid {name}={raw!r}: expected an integer")
    if type_name == "float":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ParameterError(f"invalid {name}={raw!r}: expected a finite number")
        return number
    return raw


def load_entry_point_specs(
    entry_point: str, mlproject: Path = MLPROJECT_PATH
) -> list[ParameterSpec]:
    """Read the parameter declarations of one entry point from MLproject."""
    with open(mlproject, encoding="utf-8") as stream:
        project = yaml.safe_load(stream)
    declared = project["entry_points"][entry_point].get("parameters", {})
    return [
        ParameterSpec(
            name=name,
            type=body.get("type", "string"),
            default=body.get("default"),
            description=" ".join(str(body.get("description", "")).split()),
        )
        for name, body in declared.items()
    ]


class _RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParameterError instead of exiting, so the
    step can mark its MLflow run FAILED before it exits."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ParameterError(message)


def build_parser(entry_point: str, specs: Sequence[ParameterSpec]) -> argparse.ArgumentParser:
    parser = _RaisingParser(
        prog=f"python -m steps.{entry_point}",
        description=f"The {entry_point} entry point. Defaults come from MLproject.",
        # `mlflow run -P n=5` passes `--n 5`: with abbreviations allowed, argparse would
        # read that as --n-estimators instead of rejecting an unknown parameter.
        allow_abbrev=False,
    )
    for spec in specs:
        parser.add_argument(
            spec.flag,
            dest=spec.name,
            default=str(spec.default),
            metavar=spec.type.upper(),
            help=f"{spec.description} ({spec.type}, default: {spec.default!r})",
        )
    return parser


def parse_parameters(entry_point: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse and validate the options of an entry point.

    Raises ParameterError naming the parameter, the value and what is allowed.
    ``--help`` prints the options and exits with status 0.
    """
    specs = load_entry_point_specs(entry_point)
    namespace, unknown = build_parser(entry_point, specs).parse_known_args(argv)
    if unknown:
        names = ", ".join(spec.name for spec in specs)
        parts = _describe_unknown(unknown)
        noun = "parameter" if len(parts) == 1 else "parameters"
        raise ParameterError(f"unknown {noun} {', '.join(parts)}: {entry_point} accepts {names}")
    return {spec.name: spec.parse(getattr(namespace, spec.name)) for spec in specs}


def _describe_unknown(unknown: Sequence[str]) -> list[str]:
    """Render leftover arguments as ``name='value'``, the form `mlflow run -P` takes."""
    parts = []
    index = 0
    while index < len(unknown):
        token = unknown[index]
        index += 1
        if not token.startswith("-"):
            parts.append(repr(token))
            continue
        name, sign, value = token.lstrip("-").partition("=")
        if not sign and index < len(unknown) and not unknown[index].startswith("--"):
            value = unknown[index]
            index += 1
        parts.append(f"{name}={value!r}")
    return parts
