"""`cmsdl predict` against careless and hostile inputs, run as the README writes it: score files of inputs that share
a file name, temporary files of a killed run, feature specs in model metadata, CSV/JSON records that overflow or
nest deeply (or start with a BOM), and globs that match nothing (local, and root:// on a real XRootD server)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import onnx
import pytest
import toy_onnx
import uproot
from onnx import helper

from cmsdl.errors import InputFormatError
from cmsdl.features.root_table.read import ReadUnit, read_unit
from cmsdl.features.root_table.spec import parse_spec
from cmsdl.inference import Predictor
from cmsdl.inference.scores import output_names
from cmsdl.predict import read_table
from tests.conftest import run_cmsdl
from tests.xrootd_server import XRootDServer, xrootd_server  # noqa: F401  fixture

SPEC: dict[str, Any] = {"tree": "Events", "files": {"bkg": ["b.root"], "sig": ["s.root"]}, "flat": ["MET_pt"],
                        "derived": {"HT": "sum(Jet_pt)"}, "selection": "nJet >= 2"}


def table_model(path: Path, spec: dict[str, Any], width: int | None = None) -> Path:
    """A ROOT-table model as `cmsdl export` writes it (spec in the metadata; a softmax over the features), with an
    input `width` other than the spec's column count if given."""
    names = parse_spec(spec).feature_names if width is None else [f"f{i}" for i in range(width)]
    contract = toy_onnx.tabular_contract(names, ["bkg", "sig"], source={"kind": "root_table", "spec": spec})
    path.write_bytes(toy_onnx.model_bytes(toy_onnx.softmax_graph(len(names), 2), contract))
    return path


def signal_probability(model: Path, features: np.ndarray) -> np.ndarray:
    return Predictor(model).run(np.asarray(features, np.float32)).outputs[:, 1]


def write_events(path: Path, n: int, seed: int) -> None:
    """A NanoAOD-like tree Events: MET_pt, nJet, Jet_pt."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    data = {"MET_pt": rng.exponential(30, n).astype(np.float32), "nJet": counts.astype(np.int32),
            "Jet_pt": ak.unflatten(rng.exponential(40, int(counts.sum())).astype(np.float32), counts)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in data.items()})
        f["Events"].extend(data)


def expected_signal(model: Path, path: Path) -> np.ndarray:
    """The signal probability of every entry of `path`, from features computed here (MET_pt, HT)."""
    events = uproot.open(path)["Events"].arrays(library="ak")
    features = np.stack([ak.to_numpy(events.MET_pt), ak.to_numpy(ak.sum(events.Jet_pt, axis=1))], axis=1)
    return signal_probability(model, features)


def short_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a failed command (exit 2, no traceback)."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, text[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return table_model(tmp_path_factory.mktemp("model") / "m.onnx", SPEC)


@pytest.fixture()
def crab(tmp_path: Path) -> Path:
    """CRAB's layout: tree_1.root in two job folders (different events), tree_2.root in a third."""
    write_events(tmp_path / "crab" / "job_1" / "tree_1.root", 100, seed=1)
    write_events(tmp_path / "crab" / "job_2" / "tree_1.root", 150, seed=2)
    write_events(tmp_path / "crab" / "job_3" / "tree_2.root", 50, seed=3)
    return tmp_path


def test_inputs_with_the_same_file_name_get_distinct_stable_score_files(model: Path, crab: Path) -> None:
    proc = run_cmsdl("predict", f"model={model}", "input=crab/*/tree_*.root", "out=scores/", cwd=crab)
    assert "wrote 3 score files to scores" in proc.stdout
    first, second = crab / "crab/job_1/tree_1.root", crab / "crab/job_2/tree_1.root"
    names = {f"tree_1-{short_hash(first)}_scores.root": first, f"tree_1-{short_hash(second)}_scores.root": second,
             "tree_2_scores.root": crab / "crab/job_3/tree_2.root"}
    assert sorted(p.name for p in (crab / "scores").iterdir()) == sorted(names)
    for name, source in names.items():
        scores = uproot.open(crab / "scores" / name)["Scores"].arrays(library="np")
        assert np.allclose(scores["score_sig"], expected_signal(model, source), atol=1e-5)
    assert f"crab/job_2/tree_1.root → scores/tree_1-{short_hash(second)}_scores.root" in proc.stdout
    again = run_cmsdl("predict", f"model={model}", "input=crab/*/tree_*.root", "out=scores/", cwd=crab)
    assert "wrote 3 score files" in again.stdout
    assert sorted(p.name for p in (crab / "scores").iterdir()) == sorted(names)


def test_score_file_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.root").write_text("")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    url = "root://host//store/job_1/t.root"
    names = output_names([str(tmp_path / "a/t.root"), url, "root://host//store/u.root?svcClass=x"], "root")
    assert names == {str(tmp_path / "a/t.root"): f"t-{short_hash(tmp_path / 'a/t.root')}_scores.root",
                     url: f"t-{hashlib.sha1(url.encode()).hexdigest()[:6]}_scores.root",
                     "root://host//store/u.root?svcClass=x": "u_scores.root"}
    with pytest.raises(InputFormatError, match=r"input: .*a/t.root and .*b/t.root are the same file; give it once"):
        output_names([str(tmp_path / "a/t.root"), str(tmp_path / "b/t.root")], "parquet")


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from cmsdl.io import atomic_path, atomic_write
out = Path(sys.argv[1])
with atomic_write(out / "tree_1_scores.parquet", "wb") as handle:
    handle.write(b"half")
    with atomic_path(out / "tree_2_scores.root", ".root") as tmp:
        tmp.write_bytes(b"half a ROOT file")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_a_writer(out: Path) -> list[str]:
    """Temporary score files as a `cmsdl predict` killed with -9 in the middle of writing leaves them."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=Path(__file__).parents[1])
    assert proc.returncode == -9
    left = sorted(p.name for p in out.iterdir() if ".tmp" in p.name)
    assert len(left) == 2, left
    return left


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(model: Path, crab: Path) -> None:
    left = kill_a_writer(crab / "scores")
    mine = ["notes.tmp", ".notes.tmp", ".tree_1_scores.root.bak"]
    for name in mine:
        (crab / "scores" / name).write_text("the user's")
    run_cmsdl("predict", f"model={model}", "input=crab/job_3/tree_2.root", "out=scores", cwd=crab)
    assert sorted(p.name for p in (crab / "scores").iterdir()) == sorted([*mine, "tree_2_scores.root"])
    assert not set(left) & {p.name for p in (crab / "scores").iterdir()}


def test_temporary_files_of_a_running_scorer_are_left_alone(model: Path, crab: Path) -> None:
    left = kill_a_writer(crab / "scores")
    fd = os.open(crab / "scores", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as a `cmsdl predict` writing into the same folder holds it
        run_cmsdl("predict", f"model={model}", "input=crab/job_3/tree_2.root", "out=scores", cwd=crab)
    finally:
        os.close(fd)
    assert set(left) <= {p.name for p in (crab / "scores").iterdir()}


@pytest.mark.parametrize("change, message", [
    ({"derived": {"HT": "sum(Jet_pt) + 10**10**10"}},
     r"derived.HT: .*the exponent of \*\* must be a number from -64 to 64, got '10 \*\* 10'"),
    ({"derived": {"HT": "sum(Jet_pt) + (1 << 10**11)"}}, r"derived.HT: .*the shift count of << and >> must be"),
    ({"derived": {"HT": "max(Jet_pt, 1, 2, 3)"}}, r"derived.HT: .*max\(\) takes 1 or 2 arguments, got 4"),
])
def test_hostile_spec_in_model_metadata_is_one_line(change: dict, message: str, crab: Path) -> None:
    hostile = table_model(crab / "hostile.onnx", {**SPEC, "derived": {"HT": "sum(Jet_pt)"}})
    model = onnx.load(hostile)
    props = {p.key: p.value for p in model.metadata_props}
    preprocessing = json.loads(props["cmsdl.preprocessing"])
    preprocessing["source"]["spec"].update(change)
    helper.set_model_props(model, {**props, "cmsdl.preprocessing": json.dumps(preprocessing)})
    onnx.save(model, hostile)
    proc = run_cmsdl("predict", "model=hostile.onnx", "input=crab/job_3/tree_2.root", "out=scores", cwd=crab,
                     check=False, timeout=120)
    line = error_line(proc)
    assert line.startswith("error: hostile.onnx: the feature spec in its metadata (cmsdl.preprocessing): data.spec.")
    assert re.search(message, line), line
    assert not (crab / "scores").exists()


def test_huge_collection_in_model_metadata_is_refused_before_reading(crab: Path) -> None:
    table_model(crab / "wide.onnx", {**SPEC, "collections": {"jet": {"fields": {"pt": "Jet_pt"}, "length": 10**9}}},
                width=3)
    proc = run_cmsdl("predict", "model=wide.onnx", "input=crab/job_3/tree_2.root", "out=scores", cwd=crab,
                     check=False, timeout=120)
    assert error_line(proc) == ("error: wide.onnx: the feature spec in its metadata (cmsdl.preprocessing): "
                                "data.spec.collections.jet.length: expected a whole number from 1 to 1024, got 1000000000")


def test_spec_that_does_not_fit_the_model_input_is_refused_before_reading(crab: Path) -> None:
    table_model(crab / "narrow.onnx", SPEC, width=3)
    proc = run_cmsdl("predict", "model=narrow.onnx", "input=crab/job_3/tree_2.root", "out=scores", cwd=crab,
                     check=False)
    assert error_line(proc) == ("error: narrow.onnx: its feature spec makes 2 features (MET_pt, HT) but its input "
                                "width is 3; the metadata does not fit the model")


@pytest.mark.parametrize("content, message", [
    ("MET_pt,HT\n1,2\n3,1e39\n", r"rows.csv: row 1 \(line 3\), field 'HT': 1e39 is out of range \(expected a finite "
                                 r"number of magnitude at most 3.4e\+38\)"),
    ("MET_pt,HT\n1,inf\n", r"rows.csv: row 0 \(line 2\), field 'HT': inf is out of range"),
    ("MET_pt,HT\n1,abc\n", r"rows.csv: row 0 \(line 2\), field 'HT': 'abc' is not a number"),
    ("MET_pt,HT\n1,2,3\n", r"rows.csv: row 0 \(line 2\): 1 more value\(s\) than the header's 2 columns"),
    ("MET_pt,HT\n1\n", r"rows.csv: row 0 \(line 2\), field 'HT': no value"),
    ("MET_pt,HT\n1,2\n1," + "9" * 400 + "\n", r"rows.csv: row 1 \(line 3\), field 'HT': 9{40}\.\.\. \(400 characters\) is out of range"),
    ("MET_pt,HT\n1," + "2" * 200_000 + "\n", r"rows.csv: line \d: not readable as CSV \(field larger than field limit"),
    ("MET_pt,HT\n\xff\n", r"rows.csv: cannot read CSV input \(.*can't decode byte 0xff"),
])
def test_bad_csv_rows_name_file_row_and_field(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "rows.csv").write_bytes(content.encode("latin-1"))
    with pytest.raises(InputFormatError, match=message) as caught:
        read_table(tmp_path / "rows.csv")
    assert "\n" not in str(caught.value)


def test_bad_csv_row_through_the_command(model: Path, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("MET_pt,HT\n1,2\n3,1e39\n")
    proc = run_cmsdl("predict", f"model={model}", "input=rows.csv", "out=p.csv", cwd=tmp_path, check=False)
    assert error_line(proc) == ("error: rows.csv: row 1 (line 3), field 'HT': 1e39 is out of range (expected a finite "
                                "number of magnitude at most 3.4e+38)")
    assert not (tmp_path / "p.csv").exists()


def test_csv_with_a_byte_order_mark_is_read(model: Path, tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("MET_pt,HT\n10,20\n30,5\n")
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())
    for name in ("plain", "excel"):
        run_cmsdl("predict", f"model={model}", f"input={name}.csv", f"out={name}_p.json", cwd=tmp_path)
    plain, excel = (json.loads((tmp_path / f"{n}_p.json").read_text()) for n in ("plain", "excel"))
    assert [r["p_sig"] for r in excel] == [r["p_sig"] for r in plain]
    assert np.allclose([r["p_sig"] for r in plain], signal_probability(model, [[10, 20], [30, 5]]), atol=1e-6)


def test_npy_whose_header_declares_more_than_the_file_holds(model: Path, tmp_path: Path) -> None:
    with (tmp_path / "x.npy").open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 2)})
        handle.write(bytes(64))
    proc = run_cmsdl("predict", f"model={model}", "input=x.npy", "out=p.csv", cwd=tmp_path, check=False)
    assert error_line(proc) == "error: x.npy: not a .npy array (mmap length is greater than file size)"
    np.save(tmp_path / "x.npy", np.array([[10, 20], [30, 5]], np.float32))
    run_cmsdl("predict", f"model={model}", "input=x.npy", "out=p.csv", cwd=tmp_path)
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "id,label,p_bkg,p_sig"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("document, message", [
    ('[{"name": "wf0"}, {"name": "wf1", "errors": {"84": {"T1_US_FNAL": 1e39}}}]',
     r"wf.json: record 1 \('wf1'\), field errors.84.T1_US_FNAL: 1e\+39 is out of range"),
    ('{"workflows": [{"name": "wf0", "n": ' + "9" * 60 + "}]}", r"wf.json: record 0 \('wf0'\), field n: 1e\+60 is out"),
    ('[{"name": "wf0", "n": ' + "9" * 400 + "}]", r"wf.json: record 0 \('wf0'\), field n: an integer of 400 digits is out"),
    ('[{"name": "wf0", "n": NaN}]', r"record 0 \('wf0'\), field n: nan is out of range"),
    ('[{"name": "wf0", "n": ' + "9" * 5000 + "}]", r"wf.json: record 0 \('wf0'\), field n: inf is out of range"),
    (json.dumps([{"name": "deep", "x": nested(40)}]), r"wf.json: record 0 \('deep'\), field x.a.a.*: nested deeper than 32"),
    ("[" * 100_000 + "]" * 100_000, r"wf.json: not valid JSON \(nested deeper than \d+ levels\)"),
    (b"\xff[]", r"wf.json: cannot read JSON input \(.*can't decode byte 0xff"),
    ('[{"name": 1,', r"wf.json: not valid JSON \(Expecting"),
])
def test_bad_json_records_name_file_record_and_field(tmp_path: Path, document: str | bytes, message: str) -> None:
    (tmp_path / "wf.json").write_bytes(document if isinstance(document, bytes) else document.encode())
    with pytest.raises(InputFormatError, match=message) as caught:
        read_table(tmp_path / "wf.json")
    assert "\n" not in str(caught.value)


def test_bad_json_record_through_the_command(model: Path, tmp_path: Path) -> None:
    (tmp_path / "wf.json").write_text(json.dumps({"workflows": [{"name": "wf0", "x": nested(40)}]}))
    proc = run_cmsdl("predict", f"model={model}", "input=wf.json", "out=p.csv", cwd=tmp_path, check=False)
    assert error_line(proc) == ("error: wf.json: record 0 ('wf0'), field x" + ".a" * 32 + ": nested deeper than 32 "
                                "levels")


def test_json_with_a_byte_order_mark_is_read(model: Path, tmp_path: Path) -> None:
    """The BOM is accepted: the run gets as far as the model (a ROOT-table model, whose records are events)."""
    (tmp_path / "wf.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"name": "wf0"}]).encode())
    proc = run_cmsdl("predict", f"model={model}", "input=wf.json", "out=p.csv", cwd=tmp_path, check=False)
    assert "wf0: records: record 0 has no branch 'MET_pt' (expected " in error_line(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_local_glob_that_matches_nothing(model: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("MET_pt,HT\n1,2\n")
    proc = run_cmsdl("predict", f"model={model}", "input=data/*.root", "out=scores/", cwd=tmp_path, check=False)
    assert error_line(proc) == "error: input: data/*.root matches no file (the directory data exists; nothing in it matches)"
    proc = run_cmsdl("predict", f"model={model}", "input=nodata/*.root", "out=scores/", cwd=tmp_path, check=False)
    assert error_line(proc) == "error: input: nodata/*.root matches no file: there is no directory nodata"
    proc = run_cmsdl("predict", f"model={model}", "input=[]", "out=scores/", cwd=tmp_path, check=False)
    assert error_line(proc) == "error: input: an empty list names no input files (folders are searched for .png images)"


def test_remote_glob_on_an_unreachable_server(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("fsspec_xrootd")
    port = free_port()
    url = f"root://127.0.0.1:{port}//store/user/me/*.root"
    proc = run_cmsdl("predict", f"model={model}", f"input={url}", cwd=tmp_path, check=False)  # as issue 14 ran it
    assert error_line(proc).startswith(f"error: input: {url}: cannot reach the XRootD server 127.0.0.1:{port} after "
                                       "3 attempts (")


def test_remote_glob_that_matches_nothing(model: Path, tmp_path: Path, xrootd_server: XRootDServer) -> None:  # noqa: F811
    (xrootd_server.directory / "predict_empty").mkdir(exist_ok=True)
    (xrootd_server.directory / "predict_empty" / "notes.txt").write_text("no ROOT here")
    url = xrootd_server.url("predict_empty/*.root")
    proc = run_cmsdl("predict", f"model={model}", f"input={url}", "out=scores/", cwd=tmp_path, check=False)
    where = f"XRootD server 127.0.0.1:{xrootd_server.port}"
    assert error_line(proc) == (f"error: input: {url} matches no file on the {where} (the directory "
                                f"{xrootd_server.directory / 'predict_empty'} exists; nothing in it matches)")
    url = xrootd_server.url("no_such_folder/*.root")
    proc = run_cmsdl("predict", f"model={model}", f"input={url}", "out=scores/", cwd=tmp_path, check=False)
    assert error_line(proc) == (f"error: input: {url} matches no file on the {where}: it has no directory "
                                f"{xrootd_server.directory / 'no_such_folder'}")


def test_root_table_records_are_events_read_as_from_the_file(model: Path, tmp_path: Path) -> None:
    """predict_records of a ROOT-table model takes events as dicts of branches and gives what the file gives."""
    write_events(tmp_path / "e.root", 6, seed=4)
    predictor = Predictor(model)
    from_file = read_unit(parse_spec(SPEC), ReadUnit(str(tmp_path / "e.root"), 0, 0, 6)).features
    records = uproot.open(tmp_path / "e.root")["Events"].arrays(library="ak").to_list()
    np.testing.assert_allclose(predictor.predict_records(records).outputs,
                               predictor.run(predictor.scale(from_file)).outputs, rtol=1e-6)
