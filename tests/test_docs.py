"""The README's parameter table against the parameters that MLproject declares.

Each row of the table has the form
``| `train` | `n_estimators` | int | `100` | meaning |``. An empty string
default is written as ``""``.
"""

from __future__ import annotations

import re

import pytest
import yaml

from steps.params import MLPROJECT_PATH, PROJECT_DIR

README_PATH = PROJECT_DIR / "README.md"
ENTRY_POINTS = ("load", "train", "evaluate")

ROW = re.compile(
    r"^\|\s*`(?P<entry_point>[a-z0-9_]+)`\s*\|\s*`(?P<name>[a-z0-9_]+)`\s*\|\s*(?P<type>\w+)\s*"
    r"\|\s*`(?P<default>[^`]*)`\s*\|\s*(?P<meaning>.*?)\s*\|\s*$"
)


def declared_parameters() -> dict[tuple[str, str], dict]:
    """Return every parameter of every MLproject entry point, by (entry point, name)."""
    with open(MLPROJECT_PATH, encoding="utf-8") as stream:
        entry_points = yaml.safe_load(stream)["entry_points"]
    return {
        (entry_point, name): body
        for entry_point, section in entry_points.items()
        for name, body in section.get("parameters", {}).items()
    }


def readme_rows() -> list[re.Match[str]]:
    if not README_PATH.is_file():
        pytest.fail(f"{README_PATH.name} not found: the parameter table cannot be checked")
    lines = README_PATH.read_text(encoding="utf-8").splitlines()
    return [match for line in lines if (match := ROW.match(line))]


def readme_default(value: object) -> str:
    return '""' if value == "" else str(value)


def test_readme_lists_every_parameter() -> None:
    rows = {(row["entry_point"], row["name"]): row for row in readme_rows()}

    for (entry_point, name), body in declared_parameters().items():
        if entry_point not in ENTRY_POINTS:
            continue
        row = rows.get((entry_point, name))
        assert row is not None, f"README has no row for {entry_point} parameter {name}"
        assert row["type"] == body["type"], f"{entry_point}.{name}: type"
        assert row["default"] == readme_default(body["default"]), f"{entry_point}.{name}: default"
        assert row["meaning"], f"{entry_point}.{name}: meaning is empty"


def test_readme_names_no_other_parameter() -> None:
    declared = set(declared_parameters())
    listed = [(row["entry_point"], row["name"]) for row in readme_rows()]

    assert [key for key in listed if key not in declared] == []


def test_readme_lists_each_parameter_once() -> None:
    listed = [(row["entry_point"], row["name"]) for row in readme_rows()]

    assert sorted(key for key in set(listed) if listed.count(key) > 1) == []
