"""Reading ROOT files over root:// from a real xrootd server on loopback: same arrays as local reads, clear errors."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from cmsdl.errors import InputFormatError
from cmsdl.io.root import file_fingerprint, is_remote, match_files, open_root
from tests.xrootd_server import XRootDServer, stoppable_xrootd_server, xrootd_server  # noqa: F401

TREE = "Events"


def write_events(path: Path, n: int, seed: int) -> None:
    """A NanoAOD-like tree: flat branches, a jagged Jet collection and a branch whose name has a dot; atomic write."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(4, n)
    pt = ak.unflatten(rng.normal(50, 20, counts.sum()).astype(np.float32), counts)
    events = {"run": np.arange(n, dtype=np.int64), "MET_pt": rng.exponential(30, n),
              "Jet": ak.zip({"pt": pt, "eta": pt * np.float32(0.01)}), "Muon.iso": rng.normal(size=n)}
    types = {k: ak.type(v).content if isinstance(v, ak.Array) else v.dtype for k, v in events.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    with uproot.recreate(tmp) as f:
        f.mktree(TREE, types).extend(events)
    os.replace(tmp, path)


def timed(call: Callable[[], object]) -> tuple[InputFormatError, float]:
    """The InputFormatError that `call()` raises and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(InputFormatError) as caught:
        call()
    return caught.value, time.monotonic() - start


@pytest.mark.parametrize("path, remote", [("root://host//store/a.root", True), ("roots://host:1094//a.root", True),
                                          ("https://host/a.root", True), ("HTTP://host/a.root", True),
                                          ("/data/a.root", False), ("file.root", False), ("rootfile.root", False)])
def test_is_remote(path: str, remote: bool) -> None:
    assert is_remote(path) is remote


def test_root_reads_the_same_arrays_as_local(xrootd_server: XRootDServer) -> None:  # noqa: F811
    path = xrootd_server.directory / "same.root"
    write_events(path, 20_000, seed=1)
    local = uproot.open(path)[TREE]
    with open_root(xrootd_server.url("same.root")) as handle:
        remote = handle[TREE]
        assert remote.keys() == local.keys() and "Muon.iso" in remote.keys()
        assert ak.array_equal(remote.arrays(), local.arrays())
        assert ak.array_equal(remote.arrays(filter_name=["Muon.iso"]), local.arrays(filter_name=["Muon.iso"]))
        chunks = zip(remote.iterate(step_size=3000), local.iterate(step_size=3000), strict=True)
        assert sum(ak.array_equal(r, loc) for r, loc in chunks) == 7


def test_replaced_file_is_read_fresh(xrootd_server: XRootDServer) -> None:  # noqa: F811
    path = xrootd_server.directory / "replaced.root"
    write_events(path, 100, seed=2)
    with open_root(xrootd_server.url("replaced.root")) as handle:
        assert handle[TREE].num_entries == 100
    write_events(path, 250, seed=3)
    with open_root(xrootd_server.url("replaced.root")) as handle:
        assert handle[TREE].num_entries == 250


def test_missing_remote_file_is_one_clear_error(xrootd_server: XRootDServer) -> None:  # noqa: F811
    url = xrootd_server.url("nope.root")
    err, seconds = timed(lambda: open_root(url))
    assert str(err) == f"{url}: no such file on the server"
    assert seconds < 5


def test_remote_file_that_is_not_root(xrootd_server: XRootDServer) -> None:  # noqa: F811
    (xrootd_server.directory / "text.root").write_text("not a ROOT file at all\n" * 50)
    url = xrootd_server.url("text.root")
    err, _ = timed(lambda: open_root(url))
    assert str(err).startswith(f"{url}: not a ROOT file (")
    assert "\n" not in str(err)


def test_stopped_server_fails_fast_and_recovers(stoppable_xrootd_server: XRootDServer) -> None:  # noqa: F811
    server = stoppable_xrootd_server
    write_events(server.directory / "a.root", 100, seed=4)
    url = server.url("a.root")
    with open_root(url) as handle:
        assert handle[TREE].num_entries == 100
    server.stop()
    err, seconds = timed(lambda: open_root(url))
    assert str(err).startswith(f"{url}: cannot reach the XRootD server 127.0.0.1:{server.port} after 3 attempts (")
    assert seconds < 15
    server.start()
    with open_root(url) as handle:
        assert handle[TREE].num_entries == 100


def test_unreachable_http_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.root"
    err, seconds = timed(lambda: open_root(url, retries=2))
    assert str(err).startswith(f"{url}: cannot reach the HTTP server 127.0.0.1:{port} after 2 attempts (")
    assert seconds < 10


def test_local_errors(tmp_path: Path) -> None:
    assert str(timed(lambda: open_root(str(tmp_path / "no.root")))[0]) == f"{tmp_path / 'no.root'}: no such file"
    assert str(timed(lambda: file_fingerprint(str(tmp_path / "no.root")))[0]) == f"{tmp_path / 'no.root'}: no such file"
    (tmp_path / "t.root").write_text("text")
    assert str(timed(lambda: open_root(str(tmp_path / "t.root")))[0]).startswith(f"{tmp_path / 't.root'}: not a ROOT")


def test_fingerprint_changes_when_the_file_is_rewritten(xrootd_server: XRootDServer) -> None:  # noqa: F811
    path = xrootd_server.directory / "fp.root"
    write_events(path, 500, seed=5)
    local, remote = file_fingerprint(str(path)), file_fingerprint(xrootd_server.url("fp.root"))
    assert file_fingerprint(str(path)) == local and file_fingerprint(xrootd_server.url("fp.root")) == remote
    assert f"size={path.stat().st_size} " in remote
    write_events(path, 500, seed=5)
    assert file_fingerprint(str(path)) != local
    assert file_fingerprint(xrootd_server.url("fp.root")) != remote
    err, _ = timed(lambda: file_fingerprint(xrootd_server.url("gone.root")))
    assert str(err) == f"{xrootd_server.url('gone.root')}: no such file on the server"


def test_remote_glob_says_why_it_matches_nothing(xrootd_server: XRootDServer) -> None:  # noqa: F811
    (xrootd_server.directory / "globbed").mkdir(exist_ok=True)
    write_events(xrootd_server.directory / "globbed" / "a.root", 10, seed=6)
    (xrootd_server.directory / "globbed" / "b.txt").write_text("not ROOT")
    assert match_files(xrootd_server.url("globbed/*.root")) == [xrootd_server.url("globbed/a.root")]
    server = f"XRootD server 127.0.0.1:{xrootd_server.port}"
    err, seconds = timed(lambda: match_files(xrootd_server.url("globbed/*.csv")))
    assert str(err) == (f"{xrootd_server.url('globbed/*.csv')} matches no file on the {server} (the directory "
                        f"{xrootd_server.directory / 'globbed'} exists; nothing in it matches)")
    err, _ = timed(lambda: match_files(xrootd_server.url("missing/dir/*.root")))
    assert str(err) == (f"{xrootd_server.url('missing/dir/*.root')} matches no file on the {server}: it has no "
                        f"directory {xrootd_server.directory / 'missing/dir'}")
    assert seconds < 5


def test_remote_glob_on_a_stopped_server(stoppable_xrootd_server: XRootDServer) -> None:  # noqa: F811
    server = stoppable_xrootd_server
    write_events(server.directory / "a.root", 10, seed=7)
    assert match_files(server.url("*.root")) == [server.url("a.root")]
    server.stop()
    err, seconds = timed(lambda: match_files(server.url("*.root"), retries=2))
    assert str(err).startswith(f"{server.url('*.root')}: cannot reach the XRootD server 127.0.0.1:{server.port} after "
                               "2 attempts (")
    assert seconds < 15


def test_unreachable_host_in_a_glob() -> None:
    pytest.importorskip("fsspec_xrootd")
    url = "root://no-such-host.invalid//store/*.root"
    err, _ = timed(lambda: match_files(url, retries=1))
    assert str(err).startswith(f"{url}: cannot reach the XRootD server no-such-host.invalid after 1 attempt (")


def test_local_glob_says_why_it_matches_nothing(tmp_path: Path) -> None:
    (tmp_path / "b.root").write_text("")
    (tmp_path / "a.root").write_text("")
    assert match_files(str(tmp_path / "*.root")) == [str(tmp_path / "a.root"), str(tmp_path / "b.root")]
    assert match_files(str(tmp_path / "a.root")) == [str(tmp_path / "a.root")]
    assert str(timed(lambda: match_files(str(tmp_path / "*.csv")))[0]) == (
        f"{tmp_path / '*.csv'} matches no file (the directory {tmp_path} exists; nothing in it matches)")
    assert str(timed(lambda: match_files(str(tmp_path / "no" / "*.root")))[0]) == (
        f"{tmp_path / 'no' / '*.root'} matches no file: there is no directory {tmp_path / 'no'}")
    assert str(timed(lambda: match_files(str(tmp_path / "c.root")))[0]) == f"{tmp_path / 'c.root'}: no such file or directory"
