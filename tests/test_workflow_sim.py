"""The workflow simulator: valid, deterministic, realistic, and learnable but not trivially."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cmsdl.cms import EXIT_CODES, SITES
from cmsdl.features.workflows.records import parse_workflows
from cmsdl.features.workflows.source import WorkflowMatrix
from cmsdl.sim.workflows import simulate_workflows


def test_same_seed_same_document_other_seed_other_document() -> None:
    a, b, c = (json.dumps(simulate_workflows(50, seed=s)) for s in (5, 5, 6))
    assert a == b and a != c


def test_uses_real_exit_codes_and_site_names_and_is_sparse() -> None:
    wfs = parse_workflows(simulate_workflows(400, seed=1))
    codes = Counter(e.code for wf in wfs for e in wf.errors)
    sites = {e.site for wf in wfs for e in wf.errors}
    for code in (50660, 50664, 71304, 99303, 99305, 8001, 134, 139, 84, 85, 92, -1):
        assert codes[code] > 0, f"exit code {code} never simulated"
    assert set(codes) <= set(EXIT_CODES)
    assert {"T0_CH_CERN", "T1_US_FNAL", "T2_CH_CERN"} <= sites and sites <= set(SITES) | {"NoReportedSite"}
    cells = [len({(e.code, e.site) for e in wf.errors}) for wf in wfs]
    assert np.mean(cells) < 0.2 * len(EXIT_CODES) * len(SITES), "error-code x site matrices should be sparse"
    assert any(e.site_bad for wf in wfs for e in wf.errors)


def test_actions_depend_on_the_error_pattern_with_noise() -> None:
    wfs = [wf for wf in parse_workflows(simulate_workflows(3000, seed=2)) if wf.action in ("acdc", "clone")]
    y = np.array([wf.action == "clone" for wf in wfs])
    x = WorkflowMatrix().fit(wfs[:2000]).transform(wfs)
    model = LogisticRegression(max_iter=2000).fit(x[:2000], y[:2000])
    auc = roc_auc_score(y[2000:], model.predict_proba(x[2000:])[:, 1])
    assert 0.7 < auc < 0.97, f"a linear model should learn the task but not solve it (AUC {auc:.3f})"
