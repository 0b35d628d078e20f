"""A fitted scikit-learn decision tree as plain JSON, and its elementwise prediction.

The calibration file holds no pickles; an optional residual tree is stored as its node arrays
(children, split feature, threshold, leaf value) and evaluated here with numpy, one row at a
time in effect, so a row's prediction never depends on the other rows in the call.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def tree_to_json(tree, feature_names: list[str]) -> dict[str, Any]:
    """From a fitted sklearn DecisionTreeRegressor (single output)."""
    t = tree.tree_
    return {
        "type": "decision_tree",
        "features": list(feature_names),
        "children_left": t.children_left.astype(int).tolist(),
        "children_right": t.children_right.astype(int).tolist(),
        "feature": t.feature.astype(int).tolist(),
        "threshold": t.threshold.astype(float).tolist(),
        "value": t.value[:, 0, 0].astype(float).tolist(),
    }


def tree_predict(spec: dict[str, Any], columns: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate a JSON tree on feature columns (name -> 1-D array, all the same length)."""
    left = np.asarray(spec["children_left"], dtype=np.int64)
    right = np.asarray(spec["children_right"], dtype=np.int64)
    feature = np.asarray(spec["feature"], dtype=np.int64)
    threshold = np.asarray(spec["threshold"], dtype=np.float64)
    value = np.asarray(spec["value"], dtype=np.float64)
    X = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in spec["features"]])
    node = np.zeros(len(X), dtype=np.int64)
    rows = np.arange(len(X))
    for _ in range(len(left)):
        inner = left[node] != -1
        if not inner.any():
            break
        r, nd = rows[inner], node[inner]
        go_left = X[r, feature[nd]] <= threshold[nd]
        node[r] = np.where(go_left, left[nd], right[nd])
    return value[node]
