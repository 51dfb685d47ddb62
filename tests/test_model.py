"""The model and its scoring: fitting, serialization, requirements, per-class metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import skops.io
import yaml
from sklearn.datasets import load_iris

from steps.environment import CONDA_YAML_PATH, model_requirements
from steps.evaluate import metric_key, per_class_metrics
from steps.model import FitResult, fit_and_score
from steps.train import SKOPS_TRUSTED_TYPES


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    bunch = load_iris(as_frame=True)
    labels = pd.Series(bunch.target_names[bunch.target.to_numpy()], name="target")
    return bunch.data, labels


def fit(iris: tuple[pd.DataFrame, pd.Series], **overrides: int) -> FitResult:
    features, labels = iris
    params = {"n_estimators": 5, "max_depth": 0, "cv_folds": 2, "random_state": 0}
    params.update(overrides)
    return fit_and_score(features, labels, **params)


def test_fit_scores_are_fractions(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    result = fit(iris)

    assert 0.0 <= result.train_accuracy <= 1.0
    assert 0.0 <= result.cv_accuracy_mean <= 1.0
    assert result.cv_accuracy_std >= 0.0


def test_train_accuracy_matches_model(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = iris
    result = fit(iris)

    assert result.train_accuracy == pytest.approx(result.model.score(features, labels))


def test_fit_uses_parameters(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    forest = fit(iris, n_estimators=7, max_depth=2, random_state=3).classifier

    assert len(forest.estimators_) == 7
    assert max(tree.get_depth() for tree in forest.estimators_) <= 2
    assert forest.random_state == 3


def test_max_depth_zero_is_unlimited(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    assert fit(iris, max_depth=0).classifier.max_depth is None


def test_fit_is_reproducible(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    first, second = fit(iris, random_state=11), fit(iris, random_state=11)

    assert first.cv_accuracy_mean == second.cv_accuracy_mean
    assert first.cv_accuracy_std == second.cv_accuracy_std
    assert (first.model.predict(iris[0]) == second.model.predict(iris[0])).all()


def test_too_many_folds_rejected(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    features, labels = iris
    few = labels.isin(["setosa", "versicolor"]) | (labels.index < 103)

    with pytest.raises(ValueError, match=r"cv_folds=5 needs .* smallest class has 3"):
        fit_and_score(
            features[few], labels[few], n_estimators=2, max_depth=0, cv_folds=5, random_state=0
        )


def test_skops_trusted_types_cover_model(iris: tuple[pd.DataFrame, pd.Series]) -> None:
    # Without every type listed, mlflow.pyfunc.load_model rejects the logged model.
    for max_depth in (0, 1):
        model = fit(iris, max_depth=max_depth).model
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))

        assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES)


def conda_pip_pins(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    pip_sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    return [pin for section in pip_sections for pin in section]


def test_requirements_are_conda_pins() -> None:
    pins = conda_pip_pins(CONDA_YAML_PATH)
    requirements = model_requirements()

    assert set(requirements) <= set(pins)
    for package in ("mlflow", "scikit-learn", "skops", "pandas"):
        assert any(line.startswith(f"{package}==") for line in requirements), package


def test_requirements_missing_pin_named(tmp_path: Path) -> None:
    conda_yaml = tmp_path / "conda.yaml"
    conda_yaml.write_text(
        "dependencies:\n  - python=3.11\n  - pip:\n      - mlflow==3.17.2\n", encoding="utf-8"
    )

    with pytest.raises(ValueError, match=r"has no pip pin for scikit-learn, skops"):
        model_requirements(conda_yaml)


def test_per_class_metrics_values() -> None:
    labels = pd.Series(["a", "a", "b", "b"])
    predictions = pd.Series(["a", "b", "b", "b"])

    table = per_class_metrics(labels, predictions).set_index("class")

    assert table.loc["a", "precision"] == 1.0
    assert table.loc["a", "recall"] == 0.5
    assert table.loc["b", "precision"] == pytest.approx(2 / 3)
    assert table.loc["b", "recall"] == 1.0
    assert table.loc["b", "f1"] == pytest.approx(0.8)
    assert table["support"].tolist() == [2, 2]


def test_per_class_metrics_unseen_prediction() -> None:
    # A class that only the model predicts gets a row with zero support, not an error.
    table = per_class_metrics(pd.Series(["a", "a"]), pd.Series(["a", "c"]))

    assert table["class"].tolist() == ["a", "c"]
    assert table.set_index("class").loc["c", "support"] == 0
    assert table.set_index("class").loc["c", "precision"] == 0.0


def test_metric_key_sanitizes_label() -> None:
    assert metric_key("f1", "setosa") == "f1_setosa"
    assert metric_key("recall", "Iris virginica (wild)") == "recall_Iris_virginica_wild_"
