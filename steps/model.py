"""Pure model code: build, fit and score a RandomForest. No MLflow here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score


@dataclass(frozen=True)
class FitResult:
    model: RandomForestClassifier
    train_accuracy: float
    cv_accuracy_mean: float
    cv_accuracy_std: float


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
    """Cross-validate on the training rows, then fit on all of them.

    The gap between training accuracy and the cross-validated mean is the
    overfitting check. Raises ValueError when a class has fewer rows than
    ``cv_folds``, because stratified folds need one row of each class per fold.
    """
    smallest = smallest_class_size(labels)
    if smallest < cv_folds:
        raise ValueError(
            f"cv_folds={cv_folds} needs at least {cv_folds} training rows in every class, "
            f"but the smallest class has {smallest}"
        )
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=random_state)
    scores = cross_val_score(
        build_classifier(n_estimators, max_depth, random_state),
        features,
        labels,
        cv=folds,
        scoring="accuracy",
    )

    model = build_classifier(n_estimators, max_depth, random_state)
    model.fit(features, labels)
    train_accuracy = float(np.mean(model.predict(features) == labels.to_numpy()))
    return FitResult(model, train_accuracy, float(scores.mean()), float(scores.std()))
