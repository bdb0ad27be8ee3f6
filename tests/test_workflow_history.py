"""Workflow error snapshots over time: ordering by date, rolling k-means fits, and their stability."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from cmsdl.errors import InputFormatError
from cmsdl.features.workflows.history import load_snapshots, snapshot_paths, window
from cmsdl.features.workflows.records import parse_workflows
from cmsdl.features.workflows.source import WorkflowMatrix
from cmsdl.sim.workflows import simulate_snapshots
from cmsdl.tools.cluster_history import Fit, stability
from conftest import run_cmsdl


def doc(names: list[str], code: str = "84", day: str | None = None) -> dict:
    body: dict = {"workflows": [{"name": n, "action": None, "tasks": [{"errors": {code: {"T1_US_FNAL": 3}}}]}
                                for n in names]}
    if day:
        body["date"] = day
    return body


def write(path: Path, body: dict) -> Path:
    path.write_text(json.dumps(body))
    return path


def test_snapshots_are_ordered_by_the_date_in_the_name_or_else_in_the_document(tmp_path: Path) -> None:
    write(tmp_path / "a-2026-03-02.json", doc(["late"]))
    write(tmp_path / "b-20260105.json", doc(["early"]))
    write(tmp_path / "c-undated.json", doc(["middle"], day="2026-02-01"))
    (tmp_path / "notes.txt").write_text("not a snapshot")
    snapshots = load_snapshots(tmp_path)
    assert [s.day for s in snapshots] == [date(2026, 1, 5), date(2026, 2, 1), date(2026, 3, 2)]
    assert [s.workflows[0].name for s in snapshots] == ["early", "middle", "late"]
    assert len(snapshot_paths(str(tmp_path / "*-2026-*.json"))) == 1


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"x.json": doc(["a"])}, "x.json: snapshot has no date"),
        ({"x.json": doc(["a"], day="first of May")}, "got 'first of May'"),
        ({"w-2026-01-05.json": doc(["a"]), "v.json": doc(["b"], day="2026-01-05")}, "are both snapshots of 2026-01-05"),
    ],
)
def test_undated_or_same_day_snapshots_are_one_clear_error(tmp_path: Path, files: dict, expected: str) -> None:
    for name, body in files.items():
        write(tmp_path / name, body)
    with pytest.raises(InputFormatError, match=expected):
        load_snapshots(tmp_path)


def test_a_glob_or_folder_that_matches_nothing_is_the_error_every_input_gives(tmp_path: Path) -> None:
    """The same words as `cmsdl predict` (cmsdl.io.root.match_files): the pattern, then why it matched nothing."""
    with pytest.raises(InputFormatError) as err:
        snapshot_paths(str(tmp_path / "*.json"))
    assert str(err.value) == f"input: {tmp_path / '*.json'} matches no file (the directory {tmp_path} exists; nothing " \
        "in it matches)"
    with pytest.raises(InputFormatError) as err:
        snapshot_paths(str(tmp_path / "no" / "*.json"))
    assert str(err.value) == f"input: {tmp_path / 'no' / '*.json'} matches no file: there is no directory " \
        f"{tmp_path / 'no'}"
    with pytest.raises(InputFormatError, match=r"matches no file \(the directory .* exists"):
        snapshot_paths(tmp_path)


def test_a_folder_whose_name_looks_like_a_glob_is_read_as_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "runs[1]"
    folder.mkdir()
    write(folder / "wf-2026-01-05.json", doc(["a"]))
    (tmp_path / "runs1").mkdir()
    write(tmp_path / "runs1" / "wf-2026-01-12.json", doc(["b"]))
    assert snapshot_paths(folder) == [folder / "wf-2026-01-05.json"]


def test_window_keeps_each_workflow_once_with_its_latest_record(tmp_path: Path) -> None:
    for day, names, code in [("2026-01-05", ["a", "b"], "84"), ("2026-01-12", ["b", "c"], "85"),
                             ("2026-01-19", ["c", "d"], "92")]:
        write(tmp_path / f"wf-{day}.json", doc(names, code))
    snapshots = load_snapshots(tmp_path)
    last_two = window(snapshots, 2, history=2)
    assert sorted(wf.name for wf in last_two) == ["b", "c", "d"]
    assert {wf.name: wf.errors[0].code for wf in last_two}["c"] == 92
    assert [wf.name for wf in window(snapshots, 0, history=4)] == ["a", "b"]


def fit_of(workflows, labels) -> Fit:
    matrix = WorkflowMatrix(min_code_workflows=1).fit(workflows)
    return Fit(list(workflows), matrix, matrix.transform(workflows), np.asarray(labels), len(set(labels)), 0.0)


def test_stability_matches_renamed_clusters_and_scores_the_shared_workflows() -> None:
    records = [{"name": f"m{i}", "action": None, "tasks": [{"errors": {"50660": {"T1_UK_RAL": 40 + i}}}]}
               for i in range(5)] + \
              [{"name": f"f{i}", "action": None, "tasks": [{"errors": {"84": {"T1_UK_RAL": 30 + i}}}]} for i in range(5)]
    wfs = parse_workflows(records)
    before = fit_of(wfs, [0] * 5 + [1] * 5)
    after = fit_of(wfs, [1] * 5 + [0] * 5)   # the same clusters, numbered the other way round
    same = stability(before, after)
    assert same["ari"] == 1.0 and same["matched_share"] == 1.0 and same["shared"] == 10
    assert {(m["previous"], m["current"]) for m in same["matching"]} == {(0, 1), (1, 0)}
    mixed = stability(before, fit_of(wfs, [0, 1] * 5))
    assert mixed["ari"] < 0.2 and mixed["matched_share"] < 0.8


def test_simulated_snapshots_are_weekly_carry_workflows_over_and_drift() -> None:
    docs = simulate_snapshots(3, n_workflows=200, seed=5, carry_over=0.5)
    assert [d["date"] for d in docs] == ["2026-01-05", "2026-01-12", "2026-01-19"]
    names = [{wf["name"] for wf in d["workflows"]} for d in docs]
    assert all(len(n) == 200 for n in names)
    assert 60 < len(names[0] & names[1]) < 140 and not names[0] & names[2] - names[1]
    first = {wf["name"]: wf["action"] for wf in docs[0]["workflows"]}
    assert all(first[wf["name"]] == wf["action"] for wf in docs[1]["workflows"] if wf["name"] in first)
    assert simulate_snapshots(1, n_workflows=50, seed=5, drift=0.0)[0]["workflows"] \
        == simulate_snapshots(1, n_workflows=50, seed=5, drift=1.0)[0]["workflows"]


def test_cluster_command_on_snapshots_reports_stability(tmp_path: Path) -> None:
    data = tmp_path / "history"
    run_cmsdl("simulate-workflows", f"out={data}", "snapshots=3", "n_workflows=150", "seed=2", cwd=tmp_path)
    assert len(list(data.glob("workflows-2026-*.json"))) == 3
    out = tmp_path / "clusters"
    proc = run_cmsdl("cluster-workflows", f"input={data}", "history=2", "k=3", "compress.components=4",
                     f"out={out}", cwd=tmp_path)
    assert "mean ARI between consecutive fits (history=2)" in proc.stdout
    fits = json.loads((out / "stability.json").read_text())["fits"]
    rows = list(csv.DictReader((out / "stability.csv").open()))
    assert [r["date"] for r in rows] == [f["date"] for f in fits] == ["2026-01-05", "2026-01-12", "2026-01-19"]
    assert rows[0]["ari"] == "" and fits[1]["shared"] == 150 and -1 <= fits[2]["ari"] <= 1
    assert len(fits[2]["snapshots"]) == 2 and len(fits[2]["matching"]) == 3
    assert (out / "stability.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "clusters.json").read_text())["n_features"] == 4


@pytest.mark.parametrize(("override", "expected"), [("history=0", "history: got 0"),
                                                    ("compress.components=500", "got 500, expected an integer from 1")])
def test_bad_history_or_components_is_one_error_line(tmp_path: Path, workflows_file: Path, override: str,
                                                     expected: str) -> None:
    proc = run_cmsdl("cluster-workflows", f"input={workflows_file}", f"out={tmp_path / 'c'}", "k=2", override,
                     cwd=tmp_path, check=False)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "c" / "clusters.json").exists()
