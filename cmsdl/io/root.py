"""Opening ROOT files on local disk or on a server, with bounded retries and one clear error line.

Accepted forms (uproot picks the reader from the scheme; remote files are read through fsspec):

* a local path: ``events/ttbar.root``, ``/data/qcd_1.root``
* XRootD: ``root://host[:port]//absolute/path/file.root`` (``roots://`` for TLS), read by fsspec-xrootd
  on top of the XRootD client (pip packages ``xrootd`` and ``fsspec-xrootd``); for example a CMS
  redirector ``root://cms-xrd-global.cern.ch//store/mc/.../file.root``
* HTTP(S): ``https://host/path/file.root``, read by fsspec's HTTP file system (the server must support
  byte ranges)

The XRootD client reads its settings from ``XRD_*`` environment variables once, when its library is
first loaded. With its defaults a request to a stopped server waits up to ten minutes (5 connection
attempts, each waiting out a 120 s window; a stat call was still waiting after 5 minutes here), timeouts
are checked only every 15 s (a 5 s request timeout fired after 15 s), and after one failed connection every
request to that server fails at once, without trying, for 30 minutes. Importing this module therefore sets
these defaults with ``os.environ.setdefault`` (a value already in the environment wins), and `open_root`
applies them again through ``XRootD.client.EnvPutInt`` in case XRootD was imported before this module:

* ``XRD_CONNECTIONRETRY=1``: one connection attempt per request; `open_root` retries with back-off itself
* ``XRD_CONNECTIONWINDOW=10``: seconds one connection attempt may take on a server that does not answer
* ``XRD_REQUESTTIMEOUT=60``: seconds for a request that names no timeout (uproot passes ``timeout_s``)
* ``XRD_STREAMTIMEOUT=30``: seconds of silence after which a connection with pending requests is dropped
* ``XRD_STREAMERRORWINDOW=0``: after a failed connection the client otherwise refuses every new request to
  that server for 1800 s without trying, so retries (and a restarted server) would never be seen
* ``XRD_TIMEOUTRESOLUTION=1``: how often, in seconds, the client checks timeouts

With these, a stopped server is reported after the back-off pauses (1.5 s for 3 attempts) and a server
that accepts connections but never answers after about ``retries * min(timeout_s, 11)`` s plus the pauses
(33.5 s for the defaults). The price of ``XRD_CONNECTIONRETRY=1``: a connection lost in the middle of a
read is re-established once, not five times, before the read fails. `open_root` also closes the open
handle that fsspec-xrootd keeps for a URL (for 30 s), so a file replaced on the server (os.replace) or a
restarted server is read afresh instead of through the stale handle.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cmsdl.errors import CmsdlError, InputFormatError

XRD_DEFAULTS = {"ConnectionRetry": 1, "ConnectionWindow": 10, "RequestTimeout": 60, "StreamTimeout": 30,
                "StreamErrorWindow": 0, "TimeoutResolution": 1}
for _name, _value in XRD_DEFAULTS.items():
    os.environ.setdefault(f"XRD_{_name.upper()}", str(_value))

XROOTD_SCHEMES = ("root://", "roots://")
HTTP_SCHEMES = ("http://", "https://")
BACKOFF_S = 0.5
NOT_ROOT = re.compile(r"not a ROOT file|expected Chunk of length \d+, received")
MISSING = re.compile(r"\[3011\]|no such file", re.IGNORECASE)
TRANSIENT = re.compile(r"\[FATAL\]|operation expired|connection (error|refused|reset)|cannot connect"
                       r"|socket (error|timeout)|closed file|server disconnected", re.IGNORECASE)
T = TypeVar("T")


class _Unreachable(Exception):
    """A failure worth retrying: the server did not answer or dropped the connection."""


def is_remote(path: str) -> bool:
    """Whether `path` is a URL read over the network (root://, roots://, http://, https://)."""
    return str(path).lower().startswith(XROOTD_SCHEMES + HTTP_SCHEMES)


def open_root(path: str, timeout_s: float = 30, retries: int = 3) -> Any:
    """The uproot directory of a local or remote ROOT file; failures raise one InputFormatError naming `path`."""
    path = str(path)
    if not is_remote(path):
        return _open_local(path)
    options = _remote_options(path, timeout_s)
    return _retrying(path, retries, lambda: _open_remote(path, options))


def file_fingerprint(path: str, timeout_s: float = 30, retries: int = 3) -> str:
    """A cheap identity of a file's content: size and mtime (plus the ROOT uuid for remote files)."""
    path = str(path)
    if not is_remote(path):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise InputFormatError(f"{path}: no such file") from None
        return f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
    options = _remote_options(path, timeout_s)
    info = _retrying(path, retries, lambda: _remote_info(path, options))
    with open_root(path, timeout_s, retries) as handle:
        uuid = handle.file.uuid
    return f"size={info.get('size')} mtime={_modified(info)} uuid={uuid}"


def branch_names(tree: Any) -> list[str]:
    """Every name a branch (TTree) or field (RNTuple) of `tree` answers to: full paths first
    (`TrackerHits/TrackerHits.position.x`; in an RNTuple `TrackerHits.position.x`), then short names."""
    full = list(tree.keys(recursive=True, full_paths=True))
    known = set(full)
    return full + [name for name in tree.keys(recursive=True, full_paths=False) if name not in known]


def resolve_branch(name: str, names: Sequence[str]) -> str | None:
    """The branch among `names` that `name` means: itself, or for a path `parent/child` that the tree does not hold
    as such (a writer that stored the split branch's children at the top), its last part; None if neither."""
    if name in names:
        return name
    leaf = name.rsplit("/", 1)[-1]
    return leaf if leaf != name and leaf in names else None


def branch_array(arrays: Any, name: str) -> Any:
    """The array of branch `name` in what `tree.arrays`/`tree.iterate` returned: by its name, by its last path part
    (uproot names the subbranch `TrackerHits/TrackerHits.position.x` `TrackerHits.position.x`), or down an RNTuple's
    records (`TrackerHits.position.x` is the field x of the record position of TrackerHits); KeyError if none."""
    fields = arrays.fields
    if name in fields:
        return arrays[name]
    leaf = name.rsplit("/", 1)[-1]
    if leaf in fields:
        return arrays[leaf]
    head, dot, rest = leaf.partition(".")
    if dot and head in fields:
        return branch_array(arrays[head], rest)
    raise KeyError(name)


def has_magic(pattern: str) -> bool:
    """Whether `pattern` is a glob (holds *, ? or [)."""
    return any(c in pattern for c in "*?[")


def match_files(pattern: str, timeout_s: float = 30, retries: int = 3) -> list[str]:
    """The files a path, glob or URL names, sorted (local globs through `glob`, remote ones through the server's
    listing); a name that matches nothing is one InputFormatError saying why."""
    pattern = str(pattern)
    if is_remote(pattern):
        return expand_remote(pattern, timeout_s, retries)
    if not has_magic(pattern):
        if not os.path.exists(pattern):
            raise InputFormatError(f"{pattern}: no such file or directory")
        return [pattern]
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        directory = _fixed_prefix(pattern) or "."
        raise InputFormatError(f"{pattern} matches no file" + (
            f" (the directory {directory} exists; nothing in it matches)" if os.path.isdir(directory)
            else f": there is no directory {directory}"))
    return matches


def expand_remote(pattern: str, timeout_s: float = 30, retries: int = 3) -> list[str]:
    """The URLs a remote glob (`root://host//dir/*.root`) matches, sorted; a URL without wildcards as it is.
    A glob that matches nothing is one InputFormatError saying why: the server cannot be reached, it has no such
    directory, or nothing in the directory matches (the XRootD listing itself reports none of these)."""
    if not has_magic(pattern):
        return [pattern]
    options = _remote_options(pattern, timeout_s)
    matches = _retrying(pattern, retries, lambda: _remote_glob(pattern, options))
    if matches:
        return matches
    directory = _fixed_prefix(pattern)
    exists = _retrying(pattern, retries, lambda: _remote_exists(directory, options))
    where = "/" + urlsplit(directory).path.lstrip("/")
    raise InputFormatError(f"{pattern} matches no file on the {_server(pattern)}" + (
        f" (the directory {where} exists; nothing in it matches)" if exists else f": it has no directory {where}"))


def _fixed_prefix(pattern: str) -> str:
    """The part of a glob before the path component that holds the first wildcard (its directory)."""
    first = min(i for i in (pattern.find(c) for c in "*?[") if i >= 0)
    return pattern[:pattern.rfind("/", 0, first)]


def _remote_glob(pattern: str, options: dict[str, Any]) -> list[str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(pattern, **options)
        fs.invalidate_cache()  # fsspec keeps listings per server: a stopped server or a new file would go unseen
        return sorted(fs.unstrip_protocol(match) for match in fs.glob(path))
    except Exception as err:
        raise _classified(pattern, err) from None


def _remote_exists(url: str, options: dict[str, Any]) -> bool:
    """Whether the server has `url`; an unreachable server raises _Unreachable (to retry)."""
    try:
        _remote_info(url, options)
    except InputFormatError:
        return False
    return True


def _open_local(path: str) -> Any:
    """uproot.open of a local file, its failures as one InputFormatError."""
    import uproot

    try:
        return uproot.open(path)
    except FileNotFoundError:
        raise InputFormatError(f"{path}: no such file") from None
    except Exception as err:
        raise InputFormatError(_unreadable(path, err)) from None


def _remote_options(url: str, timeout_s: float) -> dict[str, Any]:
    """uproot/fsspec options for `url`: the XRootD client wants whole seconds."""
    if url.lower().startswith(XROOTD_SCHEMES):
        _configure_xrootd(url)
        return {"timeout": max(1, math.ceil(timeout_s))}
    return {"timeout": timeout_s}


def _configure_xrootd(url: str) -> None:
    """Import the XRootD client (one clear error if it is missing) and apply the XRD_* settings."""
    try:
        import fsspec_xrootd  # noqa: F401
        from XRootD import client
    except ImportError:
        raise CmsdlError(f"{url}: reading root:// URLs needs the Python packages xrootd and fsspec-xrootd "
                         "(pip install xrootd fsspec-xrootd)") from None
    for name in XRD_DEFAULTS:
        value = os.environ.get(f"XRD_{name.upper()}", "")
        if value.strip().lstrip("-").isdigit():
            client.EnvPutInt(name, int(value))


def _retrying(url: str, retries: int, action: Callable[[], T]) -> T:
    """`action()` tried up to `retries` times while the server is unreachable, pausing 0.5 s, 1 s, 2 s, ..."""
    attempts = max(1, retries)
    for attempt in range(1, attempts):
        with contextlib.suppress(_Unreachable):
            return action()
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    try:
        return action()
    except _Unreachable as err:
        raise InputFormatError(f"{url}: cannot reach the {_server(url)} after {attempts} attempt"
                               f"{'s' if attempts > 1 else ''} ({err})") from None


def _open_remote(url: str, options: dict[str, Any]) -> Any:
    """One attempt at uproot.open on a fresh server handle; transient failures raise _Unreachable."""
    import uproot

    _forget_handles(url, options)
    try:
        return uproot.open(url, **options)
    except Exception as err:
        raise _classified(url, err) from None


def _remote_info(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """The fsspec stat of `url` (size, mtime where the server gives one)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        fs.invalidate_cache(path)
        return fs.info(path)
    except Exception as err:
        raise _classified(url, err) from None


def _forget_handles(url: str, options: dict[str, Any]) -> None:
    """Close fsspec-xrootd's cached open handle of `url`, so a restarted server or a replaced file is seen."""
    if not url.lower().startswith(XROOTD_SCHEMES):
        return
    import fsspec

    with contextlib.suppress(Exception):
        fs, path = fsspec.core.url_to_fs(url, **options)
        fs.invalidate_cache(path)


def _classified(url: str, err: Exception) -> Exception:
    """The error to raise for `err`: _Unreachable (to retry) or a final InputFormatError."""
    text = _short(err, url)
    if isinstance(err, FileNotFoundError) or MISSING.search(text):
        return InputFormatError(f"{url}: no such file on the server")
    if isinstance(err, TimeoutError | ConnectionError) or TRANSIENT.search(text) or _server_error(err):
        return _Unreachable(text or type(err).__name__)
    return InputFormatError(_unreadable(url, err))


def _server_error(err: Exception) -> bool:
    """An HTTP 5xx answer, worth retrying."""
    status = getattr(err, "status", None)
    return isinstance(status, int) and status >= 500


def _unreadable(path: str, err: Exception) -> str:
    """The error line for a file that exists but is not (readable) ROOT."""
    text = _short(err, path)
    if NOT_ROOT.search(text):
        return f"{path}: not a ROOT file ({text})"
    return f"{path}: not a readable ROOT file ({type(err).__name__}: {text})"


def _server(url: str) -> str:
    """'XRootD server host:port' or 'HTTP server host:port' for the error line."""
    parts = urlsplit(url)
    kind = "XRootD server" if url.lower().startswith(XROOTD_SCHEMES) else "HTTP server"
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{kind} {host}" + (f":{parts.port}" if parts.port else "")


def _modified(info: dict[str, Any]) -> Any:
    """The modification stamp in an fsspec info dict (XRootD: mtime; HTTP: Last-Modified or ETag if given)."""
    return info.get("mtime") or info.get("LastModified") or info.get("Last-Modified") or info.get("ETag")


def _short(err: Exception, path: str) -> str:
    """The error text on one line, without uproot's 'in file <path>' suffix, at most 200 characters."""
    text = " ".join(str(err).replace(f"in file {path}", "").split())
    return text[:200]
