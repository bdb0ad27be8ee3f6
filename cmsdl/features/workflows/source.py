"""The seed's per-workflow matrix: counts of each exit code at good and at bad sites, as one feature row.

The exit-code vocabulary (and, with ``per_site``, the site vocabulary) is fitted on training workflows only;
codes or sites never seen there go to an ``other`` bucket. Counts are log-scaled (``log1p``).
Feature names read ``<code>|good``, ``<code>|bad`` and, with ``per_site``, ``<code>@<site>``.
With ``svd_components`` the sparse matrix is compressed by a truncated SVD (fitted with the vocabulary, on the
same workflows) into that many dense features named ``svd0``, ``svd1``, ...
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.workflows.records import ACTIONS, Workflow, load_workflows, parse_workflows

log = logging.getLogger(__name__)

OTHER = "other"


class WorkflowMatrix:
    """Fits an exit-code vocabulary on training workflows and turns workflows into feature rows."""

    def __init__(
        self,
        per_site: bool = False,
        min_code_workflows: int = 2,
        max_codes: int | None = None,
        log_scale: bool = True,
        svd_components: int | None = None,
        seed: int = 0,
    ) -> None:
        self.per_site = per_site
        self.min_code_workflows = min_code_workflows
        self.max_codes = max_codes
        self.log_scale = log_scale
        self.svd_components = svd_components
        self.seed = seed
        self.codes: list[int] = []
        self.sites: list[str] = []
        self.svd_basis: list[list[float]] = []

    @property
    def fitted(self) -> bool:
        return bool(self.codes) or bool(self.sites)

    def fit(self, workflows: Sequence[Workflow]) -> WorkflowMatrix:
        """Choose the codes seen in at least `min_code_workflows` workflows, most failed jobs first."""
        jobs: Counter[int] = Counter()
        seen_in: Counter[int] = Counter()
        site_jobs: Counter[str] = Counter()
        for wf in workflows:
            seen_in.update({e.code for e in wf.errors})
            for e in wf.errors:
                jobs[e.code] += e.count
                site_jobs[e.site] += e.count
        kept = [c for c in seen_in if seen_in[c] >= self.min_code_workflows]
        kept.sort(key=lambda c: (-jobs[c], c))
        self.codes = kept[: self.max_codes] if self.max_codes else kept
        self.sites = sorted(site_jobs, key=lambda s: (-site_jobs[s], s)) if self.per_site else []
        self.svd_basis = []
        if self.svd_components is not None:
            self.svd_basis = self._fit_svd(self._counts(workflows))
        return self

    def _fit_svd(self, counts: np.ndarray) -> list[list[float]]:
        """The truncated-SVD basis (components x matrix columns) of the sparse training matrix."""
        n = self.svd_components
        columns = counts.shape[1]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < columns:
            raise ConfigError(f"svd_components (compress.components for cluster-workflows, "
                              f"data.source.matrix.svd_components for training): got {n!r}, expected an integer from 1 "
                              f"to {columns - 1} (the error x site matrix has {columns} columns)")
        from scipy import sparse  # fitting only: predict and serve run without scikit-learn (base install)
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=n, random_state=self.seed).fit(sparse.csr_matrix(counts))
        return svd.components_.tolist()

    @property
    def matrix_names(self) -> list[str]:
        """Names of the columns of the (uncompressed) error x site matrix."""
        codes = [str(c) for c in self.codes] + [OTHER]
        names = [f"{c}|{status}" for c in codes for status in ("good", "bad")]
        if self.per_site:
            names += [f"{c}@{s}" for c in codes for s in [*self.sites, OTHER]]
        return names

    @property
    def feature_names(self) -> list[str]:
        if self.svd_basis:
            return [f"svd{i}" for i in range(len(self.svd_basis))]
        return self.matrix_names

    def transform(self, workflows: Sequence[Workflow]) -> np.ndarray:
        """Feature matrix of shape (len(workflows), len(feature_names)), float32."""
        counts = self._counts(workflows)
        if self.svd_basis:
            counts = counts @ np.asarray(self.svd_basis, dtype=np.float64).T
        return counts.astype(np.float32)

    def _counts(self, workflows: Sequence[Workflow]) -> np.ndarray:
        """The (log-scaled) error x site matrix, float64, before any compression."""
        n_codes = len(self.codes) + 1
        code_index = {c: i for i, c in enumerate(self.codes)}
        site_index = {s: i for i, s in enumerate(self.sites)}
        rows, codes, bad, sites, counts = self._flatten(workflows, code_index, site_index)
        out = np.zeros((len(workflows), len(self.matrix_names)), dtype=np.float64)
        np.add.at(out, (rows, codes * 2 + bad), counts)
        if self.per_site:
            n_sites = len(self.sites) + 1
            np.add.at(out, (rows, 2 * n_codes + codes * n_sites + sites), counts)
        if self.log_scale:
            np.log1p(out, out=out)
        return out

    @staticmethod
    def _flatten(
        workflows: Sequence[Workflow], code_index: dict[int, int], site_index: dict[str, int]
    ) -> tuple[np.ndarray, ...]:
        other_code, other_site = len(code_index), len(site_index)
        entries = [
            (row, code_index.get(e.code, other_code), e.site_bad, site_index.get(e.site, other_site), e.count)
            for row, wf in enumerate(workflows)
            for e in wf.errors
        ]
        table = np.array(entries, dtype=np.int64).reshape(-1, 5)
        return table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4].astype(np.float64)

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_site": self.per_site,
            "min_code_workflows": self.min_code_workflows,
            "max_codes": self.max_codes,
            "log_scale": self.log_scale,
            "svd_components": self.svd_components,
            "seed": self.seed,
            "codes": list(self.codes),
            "sites": list(self.sites),
            "svd_basis": [list(row) for row in self.svd_basis],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class WorkflowActionSource:
    """Tabular source for the action DNN: workflows of a JSON file, labelled by the operator action."""

    def __init__(self, path: str, classes: Sequence[str] = ("acdc", "clone"), matrix: WorkflowMatrix | None = None):
        unknown = [c for c in classes if c not in ACTIONS]
        if len(classes) < 2 or unknown:
            raise ConfigError(f"data.source.classes: expected at least two of {', '.join(ACTIONS)}, got {list(classes)}")
        self.path = path
        self.class_names = list(classes)
        self.matrix = matrix or WorkflowMatrix()

    @property
    def fitted(self) -> bool:
        return self.matrix.fitted

    @property
    def feature_names(self) -> list[str]:
        return self.matrix.feature_names

    @property
    def feature_defaults(self) -> dict[str, float]:
        """Every feature counts failed jobs: a feature row that leaves one out has none of them (0)."""
        return dict.fromkeys(self.feature_names, 0.0)

    def load(self) -> tuple[list[Workflow], np.ndarray]:
        """Workflows whose action is one of the classes, and their class indices."""
        workflows = load_workflows(self.path)
        index = {name: i for i, name in enumerate(self.class_names)}
        kept = [wf for wf in workflows if wf.action in index]
        if len(kept) < 10:
            raise InputFormatError(
                f"{self.path}: only {len(kept)} workflows have an action among {self.class_names}; need at least 10"
            )
        if len(kept) < len(workflows):
            log.info("%s: using %d of %d workflows (actions %s)", self.path, len(kept), len(workflows), self.class_names)
        return kept, np.array([index[wf.action] for wf in kept], dtype=np.int64)

    def fit(self, workflows: Sequence[Workflow]) -> None:
        self.matrix.fit(workflows)

    def transform(self, workflows: Sequence[Workflow]) -> np.ndarray:
        return self.matrix.transform(workflows)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "workflow_actions", "classes": self.class_names, "matrix": self.matrix.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.class_names = list(state["classes"])
        self.matrix.load_state_dict(state["matrix"])


def features_from_records(state: dict[str, Any], records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Raw (unscaled) feature rows for workflow JSON records, with a fitted WorkflowActionSource state."""
    matrix = WorkflowMatrix()
    matrix.load_state_dict(state["matrix"])
    return matrix.transform(parse_workflows(list(records), source="records"))
