"""Pure model code: build, fit and score the preprocessing and RandomForest pipeline.

No MLflow here. The pipeline takes the feature columns as the load step
writes them. Numeric columns are imputed with the median, plus an indicator
column for each one that had gaps. Boolean and text columns are imputed with
a ``<missing>`` category and one-hot encoded. A category that the model has
not seen encodes to all zeros instead of failing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

PREPROCESS_STEP = "preprocess"
CLASSIFIER_STEP = "classifier"
# The category that a missing categorical value becomes.
MISSING_CATEGORY = "<missing>"


@dataclass(frozen=True)
class FitResult:
    model: Pipeline
    train_accuracy: float
    cv_accuracy_mean: float
    cv_accuracy_std: float

    @property
    def classifier(self) -> RandomForestClassifier:
        return self.model.named_steps[CLASSIFIER_STEP]


def feature_kinds(features: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Split feature columns into numeric and categorical ones, by dtype.

    Booleans count as categorical, so they are one-hot encoded with the text columns.
    """
    numeric = [
        name
        for name in features.columns
        if pd.api.types.is_numeric_dtype(features[name].dtype)
        and not pd.api.types.is_bool_dtype(features[name].dtype)
    ]
    categorical = [name for name in features.columns if name not in numeric]
    return numeric, categorical


def build_classifier(
    n_estimators: int, max_depth: int, random_state: int
) -> RandomForestClassifier:
    """Build the forest; ``max_depth=0`` means unlimited depth."""
    return RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth or None,
        random_state=random_state,
        n_jobs=-1,
    )


def build_pipeline(
    numeric: list[str],
    categorical: list[str],
    *,
    n_estimators: int,
    max_depth: int,
    random_state: int,
) -> Pipeline:
    """Build the preprocessing and the forest as one scikit-learn Pipeline.

    Columns that are in neither list are ignored, so a request may carry extra ones.
    """
    transformers = []
    if numeric:
        transformers.append(("numeric", _numeric_encoder(), numeric))
    if categorical:
        transformers.append(("categorical", _categorical_encoder(), categorical))
    return Pipeline(
        [
            (PREPROCESS_STEP, ColumnTransformer(transformers)),
            (CLASSIFIER_STEP, build_classifier(n_estimators, max_depth, random_state)),
        ]
    )


def _numeric_encoder() -> Pipeline:
    return Pipeline(
        [
            # The indicator columns let the trees tell a filled-in gap from a real median.
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            # The forest computes in float32 (sklearn.tree DTYPE) and copies any
            # other input, so casting here saves a copy of the whole matrix.
            ("to_float32", _cast(np.float32)),
        ]
    )


def _categorical_encoder() -> Pipeline:
    return Pipeline(
        [
            # SimpleImputer rejects bool arrays, and a request may mix True with
            # None in one column, so the values go in as Python objects.
            ("to_object", _cast(object)),
            # Missing is a category of its own. Filling in the most frequent
            # value instead merges the gaps into a real category: on a synthetic
            # table whose label depends on one category, that cut the accuracy
            # of one cross-validation fold from 0.88 to 0.81.
            ("impute_nan", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            # A JSON null sent to a served model arrives as None, not NaN.
            # NOTE: pd.NA, the gap of pandas' nullable "string" dtype, fails the
            # NaN check above with "boolean value of NA is ambiguous". Such a
            # column needs astype("str") first, whose gaps are NaN.
            (
                "impute_none",
                SimpleImputer(
                    missing_values=None, strategy="constant", fill_value=MISSING_CATEGORY
                ),
            ),
            # The encoder takes a column of one type only: True and the
            # missing marker become the strings "True" and "<missing>".
            ("to_text", _cast(str)),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", dtype=np.float32)),
        ]
    )


def _cast(dtype: type) -> FunctionTransformer:
    # np.asarray keeps the model loadable without this project's code:
    # skops stores a reference to a function, and a numpy one is always there.
    return FunctionTransformer(np.asarray, kw_args={"dtype": dtype}, feature_names_out="one-to-one")


def smallest_class_size(labels: pd.Series) -> int:
    return int(labels.value_counts().min())


def fit_and_score(
    features: pd.DataFrame,
    labels: pd.Series,
    *,
    n_estimators: int,
    max_depth: int,
    cv_folds: int,
    random_state: int,
) -> FitResult:
    """Cross-validate the pipeline on the training rows, then fit it on all of them.

    The gap between training accuracy and the cross-validated mean is the
    overfitting check. Raises ValueError when a class has fewer rows than
    ``cv_folds``, because stratified folds need one row of each class per fold.
    """
    _check_folds(labels, cv_folds)
    numeric, categorical = feature_kinds(features)
    params = {"n_estimators": n_estimators, "max_depth": max_depth, "random_state": random_state}

    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # A category that only the held-out fold has is expected here, and
        # the encoder already maps it to all zeros.
        warnings.filterwarnings("ignore", message="Found unknown categories", category=UserWarning)
        scores = cross_val_score(
            build_pipeline(numeric, categorical, **params),
            features,
            labels,
            cv=folds,
            scoring="accuracy",
        )

    model = build_pipeline(numeric, categorical, **params)
    model.fit(features, labels)
    train_accuracy = float(np.mean(model.predict(features) == labels.to_numpy()))
    return FitResult(model, train_accuracy, float(scores.mean()), float(scores.std()))


def _label_repr(label: object) -> str:
    return repr(label.item() if isinstance(label, np.generic) else label)


def _check_folds(labels: pd.Series, cv_folds: int) -> None:
    counts = labels.value_counts()
    smallest = int(counts.min())
    if smallest >= cv_folds:
        return
    advice = (
        f"lower cv_folds to {smallest} or add rows of that class"
        if smallest >= 2
        else "add rows of that class or remove its rows"
    )
    raise ValueError(
        f"cv_folds={cv_folds} needs at least {cv_folds} training rows in every class, "
        f"but the smallest class has {smallest} (class {_label_repr(counts.idxmin())}): {advice}"
    )
