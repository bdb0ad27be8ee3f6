"""Hit counts only: how well the number of tracker hits, in total and per subdetector, tells processes apart.

The baseline beside the event-image networks (what an image adds is its accuracy above this one). Reads the ROOT
files of `cmsdl simulate` (tree `events`, branches `hit_subdet` and `process`); imports neither torch nor lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score

from cmsdl.errors import ConfigError, InputFormatError, closest
from cmsdl.sim.geometry import SUBDETECTORS
from cmsdl.sim.tracker import PROCESS_CODES

TREE = "events"
FEATURES = {"total hits": [0], "hits per subdetector": list(range(1, 1 + len(SUBDETECTORS)))}


def read_hit_counts(paths: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Per event: [total hits, hits in each subdetector] (n, 5), and the process codes (n,)."""
    import awkward as ak
    import uproot

    counts, codes = [], []
    for path in paths:
        try:
            tree = uproot.open(path)[TREE]
            arrays = tree.arrays(["hit_subdet", "process"])
        except (OSError, ValueError, KeyError) as err:
            raise InputFormatError(f"{path}: expected a `cmsdl simulate` file with tree {TREE!r} and branches "
                                   f"hit_subdet, process ({type(err).__name__}: {err})") from None
        subdet = arrays["hit_subdet"]
        per_subdet = [ak.to_numpy(ak.sum(subdet == k, axis=1)) for k in range(len(SUBDETECTORS))]
        counts.append(np.column_stack([ak.to_numpy(ak.num(subdet)), *per_subdet]))
        codes.append(ak.to_numpy(arrays["process"]))
    if not counts:
        raise ConfigError("files: no ROOT files given; expected the output of `cmsdl simulate`")
    return np.concatenate(counts), np.concatenate(codes)


def cross_validated_accuracy(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over `folds` stratified folds of a gradient-boosting classifier's accuracy."""
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(HistGradientBoostingClassifier(random_state=seed), x, y, cv=split)
    return float(scores.mean()), float(scores.std())


def hit_count_baseline(paths: Sequence[str | Path], classes: Sequence[str], folds: int = 5,
                       seed: int = 0) -> dict[str, Any]:
    """Accuracy of gradient boosting on hit counts alone for the events of `classes`, per feature set."""
    unknown = [c for c in classes if c not in PROCESS_CODES]
    if unknown:
        hint = closest(unknown[0], PROCESS_CODES)
        raise ConfigError(f"classes: unknown process {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected some of {', '.join(PROCESS_CODES)}")
    counts, codes = read_hit_counts(paths)
    wanted = [PROCESS_CODES[c] for c in classes]
    keep = np.isin(codes, wanted)
    y = np.searchsorted(np.sort(wanted), codes[keep])
    events = np.bincount(y, minlength=len(classes))
    if (events < folds).any():
        raise ConfigError(f"files: {dict(zip(sorted(classes, key=PROCESS_CODES.get), events.tolist()))} events per "
                          f"class; expected at least {folds} of each class for {folds}-fold cross-validation")
    result: dict[str, Any] = {"classes": list(classes), "events": int(keep.sum()), "folds": folds,
                              "majority_rate": float(events.max() / events.sum())}
    for name, columns in FEATURES.items():
        mean, std = cross_validated_accuracy(counts[keep][:, columns], y, folds, seed)
        result[name] = {"accuracy": mean, "std": std}
    return result
