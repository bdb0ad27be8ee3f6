"""Spark MLlib random forest, gradient-boosted trees and decision tree (the seed's Phase 2 choice) behind the
scikit-learn calls that `cmsdl popularity` makes (fit, predict_proba), so they run on the same windows as the DNN::

    cmsdl popularity engine=spark +baselines.mllib_rf._target_=cmsdl.tools.spark_mllib.SparkClassifier \
        +baselines.mllib_rf.kind=random_forest +baselines.mllib_rf.params='{numTrees: 60, maxDepth: 12}'

`params` are the MLlib estimator's own parameters. The Spark session (cmsdl.features.spark_session) starts on the
first fit; pyspark is imported only there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cmsdl.errors import ConfigError
from cmsdl.features.spark_session import SparkSettings, spark_errors, spark_session

KINDS = {"random_forest": "RandomForestClassifier", "gradient_boosted_trees": "GBTClassifier",
         "decision_tree": "DecisionTreeClassifier"}


class SparkClassifier:
    """A binary MLlib tree classifier with fit(x, y) and predict_proba(x) on numpy arrays."""

    def __init__(self, kind: str = "random_forest", params: Mapping[str, Any] | None = None, seed: int = 0,
                 spark: Mapping[str, Any] | None = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"baselines: kind {kind!r} is not an MLlib classifier here; expected one of "
                              f"{', '.join(KINDS)}")
        self.kind, self.params, self.seed = kind, dict(params or {}), seed
        self.settings = SparkSettings.from_config(spark)
        self.model: Any = None

    def _frame(self, x: np.ndarray, y: np.ndarray | None = None) -> Any:
        from pyspark.ml.linalg import Vectors

        labels = np.zeros(len(x)) if y is None else y
        rows = [(Vectors.dense(row.tolist()), float(label)) for row, label in zip(x.astype(np.float64), labels)]
        return spark_session(self.settings).createDataFrame(rows, ["features", "label"])

    def fit(self, x: np.ndarray, y: np.ndarray) -> SparkClassifier:
        from pyspark.ml import classification

        estimator = getattr(classification, KINDS[self.kind])(seed=self.seed, **self.params)
        with spark_errors(f"MLlib {self.kind}", f"fitting on {len(x)} rows"):
            self.model = estimator.fit(self._frame(x, y))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) probabilities of class 0 and 1, rows in the order of `x`."""
        with spark_errors(f"MLlib {self.kind}", f"scoring {len(x)} rows"):
            rows = self.model.transform(self._frame(x)).select("probability").collect()
        return np.array([r.probability.toArray() for r in rows], dtype=np.float64).reshape(len(x), 2)
