"""`cmsdl cluster-workflows`: workflows with the same errors land together, whatever sites they ran at."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cmsdl.features.workflows.records import parse_workflows
from cmsdl.features.workflows.source import WorkflowMatrix
from cmsdl.tools.cluster import kmeans, summarize
from conftest import run_cmsdl

SITES = ["T1_US_FNAL", "T2_CH_CERN", "T2_US_MIT", "T1_DE_KIT", "T2_IT_Pisa", "T2_UK_London_IC"]


def family(prefix: str, codes: dict[int, int], n: int, rng: np.random.Generator) -> list[dict]:
    """n workflows failing with the same codes, each at a different random site."""
    out = []
    for i in range(n):
        site = SITES[rng.integers(len(SITES))]
        errors = {str(c): {site: int(k * rng.uniform(0.7, 1.3)) + 1} for c, k in codes.items()}
        out.append({"name": f"{prefix}{i}", "action": None, "tasks": [{"errors": errors, "site_status": {}}]})
    return out


def test_same_errors_at_different_sites_share_a_cluster() -> None:
    rng = np.random.default_rng(0)
    docs = family("mem", {50660: 40, 8004: 10}, 30, rng) + family("io", {84: 30, 85: 20}, 30, rng) \
        + family("wall", {50664: 50, 71304: 30}, 30, rng)
    wfs = parse_workflows(docs)
    result = kmeans(WorkflowMatrix().fit(wfs).transform(wfs), "auto", 2, 6, seed=1)
    assert result.k == 3 and result.silhouette > 0.5
    for start in (0, 30, 60):
        assert len(set(result.labels[start:start + 30])) == 1
    assert len(set(result.labels)) == 3
    summary = summarize(wfs, result.labels, top_codes=2)
    assert {tuple(c["code"] for c in row["top_codes"]) for row in summary} == {(50660, 8004), (84, 85), (50664, 71304)}


def test_cluster_command_writes_assignments_summary_and_config(tmp_path: Path, workflows_file: Path) -> None:
    out = tmp_path / "clusters"
    proc = run_cmsdl("cluster-workflows", f"input={workflows_file}", f"out={out}", "k=4", cwd=tmp_path)
    assert "k=4" in proc.stdout and "top exit codes" in proc.stdout
    report = json.loads((out / "clusters.json").read_text())
    rows = list(csv.DictReader((out / "assignments.csv").open()))
    assert report["k"] == 4 and len(rows) == report["n_workflows"] == 1500
    assert sum(c["workflows"] for c in report["clusters"]) == 1500
    assert {r["cluster"] for r in rows} == {"0", "1", "2", "3"}
    assert "k: 4" in (out / "config.yaml").read_text()


def test_bad_k_is_a_clear_error(tmp_path: Path, workflows_file: Path) -> None:
    proc = run_cmsdl("cluster-workflows", f"input={workflows_file}", f"out={tmp_path}", "k=0", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "k: got 0" in proc.stderr and "Traceback" not in proc.stderr
