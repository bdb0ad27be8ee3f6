"""ROOT tables over root:// from a real XRootD server (and over http://) on loopback: the same rows as local reading, training and
scoring from the server, and one clear error when the server is down."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uproot

from cmsdl.data.root_table import RootTableDataModule
from cmsdl.errors import InputFormatError
from cmsdl.sim.nanoaod import simulate_events, write_root
from tests.conftest import run_cmsdl
from tests.xrootd_server import stoppable_xrootd_server, xrootd_server  # noqa: F401  fixtures

SPEC = {"tree": "Events", "flat": ["MET_pt"], "derived": {"HT": "sum(Jet_pt)"}, "selection": "nJet >= 4",
        "collections": {"jet": {"fields": {"pt": "Jet_pt", "btag": "Jet_btagDeepFlavB"}, "sort_by": "pt",
                                "length": 6}}}


@pytest.fixture(scope="module")
def served(xrootd_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[str]]]:  # noqa: F811
    """NanoAOD-like files on local disk and the same files on the server (URLs with a glob)."""
    local = tmp_path_factory.mktemp("top")
    for i, process in enumerate(("ttbar", "qcd")):
        for part in range(2):
            path = local / f"{process}_{part:03d}.root"
            write_root(path, simulate_events(process, 1500, seed=[i, part]))
            shutil.copy(path, xrootd_server.directory / path.name)
    return {"local": {p: [str(local / f"{p}_*.root")] for p in ("ttbar", "qcd")},
            "remote": {p: [xrootd_server.url(f"{p}_*.root")] for p in ("ttbar", "qcd")}}


def rows(files: dict[str, list[str]], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    dm = RootTableDataModule({**SPEC, "files": files}, step_size=1000, progress=False)
    batches = list(dm.split_loader(split))
    names = [i.rsplit("/", 1)[-1] for i in dm.split_ids(split)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), names


def test_remote_rows_equal_local_rows(served: dict) -> None:
    x_local, y_local, ids_local = rows(served["local"], "val")
    x_remote, y_remote, ids_remote = rows(served["remote"], "val")
    assert ids_remote == ids_local and len(ids_local) > 100
    assert np.array_equal(x_local, x_remote) and np.array_equal(y_local, y_remote)


@pytest.mark.slow
def test_train_and_score_from_the_server(served: dict, tmp_path: Path) -> None:
    files = [f"data.spec.files.{p}=[{served['remote'][p][0]}]" for p in ("ttbar", "qcd")]
    run_cmsdl("train", "experiment=top_sb", *files, "trainer=cpu", "trainer.max_epochs=2", "run_name=x",
              f"paths.log_dir={tmp_path / 'logs'}", "callbacks.progress_bar.refresh_rate=0", cwd=tmp_path)
    summary = json.loads((tmp_path / "logs/train/runs/x/metrics.json").read_text())
    assert summary["metrics"]["test/auroc"] > 0.7
    run_cmsdl("export", f"ckpt={summary['best_checkpoint']}", f"out={tmp_path / 'top.onnx'}", cwd=tmp_path)
    run_cmsdl("predict", f"model={tmp_path / 'top.onnx'}", f"input={served['remote']['qcd'][0]}",
              f"out={tmp_path / 'scores'}", cwd=tmp_path)
    for part in range(2):
        scores = uproot.open(tmp_path / "scores" / f"qcd_{part:03d}_scores.root")["Scores"]
        assert scores.num_entries == 1500


def test_stopped_server_is_one_clear_error(stoppable_xrootd_server, tmp_path: Path) -> None:  # noqa: F811
    server = stoppable_xrootd_server
    write_root(server.directory / "ttbar_000.root", simulate_events("ttbar", 200, seed=1))
    write_root(server.directory / "qcd_000.root", simulate_events("qcd", 200, seed=2))
    files = {p: [server.url(f"{p}_000.root")] for p in ("ttbar", "qcd")}
    server.stop()
    with pytest.raises(InputFormatError, match=r"ttbar_000.root: cannot reach the XRootD server 127.0.0.1:\d+ after 2"):
        RootTableDataModule({**SPEC, "files": files}, retries=2, progress=False).setup()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files of `server.directory` with byte ranges (uproot reads remote ROOT files in ranges)."""

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, body: bool) -> None:
        path = self.server.directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, stop = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            part = data[start:stop + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop}/{len(data)}")
        else:
            part = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(part)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_files(served: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """The local files behind an HTTP server on loopback that honours byte ranges."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.directory = Path(served["local"]["ttbar"][0]).parent
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {p: [f"{base}/{p}_{part:03d}.root" for part in range(2)] for p in ("ttbar", "qcd")}
    server.shutdown()


def test_http_rows_equal_local_rows(served: dict, http_files: dict[str, list[str]]) -> None:
    x_local, _, ids_local = rows(served["local"], "test")
    x_http, _, ids_http = rows(http_files, "test")
    assert ids_http == ids_local and np.array_equal(x_local, x_http)
    missing = {"ttbar": [http_files["ttbar"][0].replace("ttbar_000", "nothing")], "qcd": http_files["qcd"]}
    with pytest.raises(InputFormatError, match=r"nothing.root: no such file on the server"):
        RootTableDataModule({**SPEC, "files": missing}, progress=False).setup()
