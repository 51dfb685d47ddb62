"""Parameters: MLproject declarations, the steps' command lines and validation."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from steps.params import (
    MLPROJECT_PATH,
    PROJECT_DIR,
    RULES,
    ParameterError,
    build_parser,
    load_entry_point_specs,
    parse_parameters,
)

ENTRY_POINTS = ("load", "train", "evaluate")
TYPES = {"int": int, "float": float, "string": str}


def entry_point_section(entry_point: str) -> dict:
    with open(MLPROJECT_PATH, encoding="utf-8") as stream:
        return yaml.safe_load(stream)["entry_points"][entry_point]


def declared(entry_point: str) -> dict[str, dict]:
    return entry_point_section(entry_point)["parameters"]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_mlproject_declares_each_parameter(entry_point: str) -> None:
    for name, body in declared(entry_point).items():
        assert body.get("type") in TYPES, f"{entry_point}.{name} has no int/float/string type"
        assert "default" in body, f"{entry_point}.{name} has no default"
        assert isinstance(body["default"], TYPES[body["type"]]), (
            f"{entry_point}.{name} default {body['default']!r} is not a {body['type']}"
        )
        assert body.get("description"), f"{entry_point}.{name} has no description"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_command_passes_every_parameter(entry_point: str) -> None:
    text = " ".join(entry_point_section(entry_point)["command"].split())
    flags = dict(re.findall(r"(--[a-z-]+) \{(\w+)\}", text))
    expected = {"--" + name.replace("_", "-"): name for name in declared(entry_point)}

    assert text.startswith(f"python -m steps.{entry_point} ")
    assert flags == expected


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_parser_options_match_mlproject(entry_point: str) -> None:
    specs = load_entry_point_specs(entry_point)
    parser = build_parser(entry_point, specs)
    options = {
        action.dest: action.option_strings for action in parser._actions if action.dest != "help"
    }

    assert options == {spec.name: [spec.flag] for spec in specs}
    assert [spec.name for spec in specs] == list(declared(entry_point))


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_defaults_parse_to_mlproject_values(entry_point: str) -> None:
    params = parse_parameters(entry_point, [])

    for name, body in declared(entry_point).items():
        assert params[name] == body["default"]
        assert type(params[name]) is TYPES[body["type"]]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_help_shows_flags_and_defaults(entry_point: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", f"steps.{entry_point}", "--help"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = " ".join(completed.stdout.split())

    assert completed.returncode == 0, completed.stderr
    for name, body in declared(entry_point).items():
        flag = "--" + name.replace("_", "-")
        # From the flag to the end of its help text, with no other option in between.
        pattern = (
            rf"{flag} {body['type'].upper()} (?:(?! --).)*?\({body['type']}, default: (\S+?)\)"
        )
        match = re.search(pattern, text)
        assert match, f"{flag} with its type and default not found in: {text}"
        assert match.group(1) == repr(body["default"])


def test_overrides_are_typed() -> None:
    params = parse_parameters(
        "train",
        ["--n-estimators", "10", "--max-depth", "3", "--data-uri", "runs:/abc/data"],
    )

    assert params["n_estimators"] == 10
    assert params["max_depth"] == 3
    assert params["data_uri"] == "runs:/abc/data"


def test_int_accepts_whole_float_text() -> None:
    assert parse_parameters("train", ["--n-estimators", "100.0"])["n_estimators"] == 100


def test_float_accepts_integer_text() -> None:
    assert parse_parameters("evaluate", ["--min-accuracy", "1"])["min_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("entry_point", "flag", "value", "allowed"),
    [
        ("train", "--n-estimators", "0", "an integer of at least 1"),
        ("train", "--n-estimators", "abc", "an integer of at least 1"),
        ("train", "--n-estimators", "2.5", "an integer of at least 1"),
        ("train", "--n-estimators", "", "an integer of at least 1"),
        ("train", "--max-depth", "-2", "an integer of at least 1, or 0 for unlimited depth"),
        ("train", "--cv-folds", "1", "an integer of at least 2"),
        ("train", "--random-state", "-1", "an integer from 0 to 4294967295"),
        ("train", "--random-state", "4294967296", "an integer from 0 to 4294967295"),
        ("load", "--test-size", "1.5", "a number strictly between 0 and 1"),
        ("load", "--test-size", "0", "a number strictly between 0 and 1"),
        ("load", "--test-size", "nan", "a number strictly between 0 and 1"),
        ("load", "--test-size", "inf", "a number strictly between 0 and 1"),
        ("evaluate", "--min-accuracy", "1.01", "a number from 0 to 1"),
        ("evaluate", "--min-accuracy", "-0.1", "a number from 0 to 1"),
    ],
)
def test_invalid_value_rejected(entry_point: str, flag: str, value: str, allowed: str) -> None:
    name = flag[2:].replace("-", "_")

    with pytest.raises(ParameterError) as caught:
        parse_parameters(entry_point, [flag, value])

    assert str(caught.value) == f"invalid {name}={value!r}: expected {allowed}"


def test_unknown_parameter_rejected() -> None:
    with pytest.raises(ParameterError) as caught:
        parse_parameters("train", ["--foo", "1"])

    message = str(caught.value)
    assert message.startswith("unknown parameter foo='1': ")
    assert message.endswith(
        "train accepts data_uri, n_estimators, max_depth, cv_folds, random_state"
    )


def test_unknown_parameters_all_named() -> None:
    with pytest.raises(ParameterError, match=r"unknown parameters foo='-2', bar='x': "):
        parse_parameters("train", ["--foo", "-2", "--bar=x"])


def test_abbreviated_flag_rejected() -> None:
    # `mlflow run -P n=5` reaches the step as `--n 5`.
    with pytest.raises(ParameterError, match=r"^unknown parameter n='5': "):
        parse_parameters("train", ["--n", "5"])


def test_error_message_is_one_line() -> None:
    with pytest.raises(ParameterError) as caught:
        parse_parameters("load", ["--test-size", "1.5"])

    assert "\n" not in str(caught.value)


def test_every_rule_names_a_parameter() -> None:
    names = {name for entry_point in ENTRY_POINTS for name in declared(entry_point)}

    assert set(RULES) <= names


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_number_has_a_rule(entry_point: str) -> None:
    for name, body in declared(entry_point).items():
        if body["type"] in ("int", "float"):
            assert name in RULES, f"{entry_point}.{name} is a number without a range check"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_defaults_pass_their_rules(entry_point: str) -> None:
    for name, body in declared(entry_point).items():
        rule = RULES.get(name)
        if rule is not None:
            assert rule.check(body["default"]), f"{entry_point}.{name} default breaks its rule"
