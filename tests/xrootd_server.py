"""A real `xrootd` server on loopback for tests, serving a temporary directory over root://.

Use it with ``from tests.xrootd_server import xrootd_server`` (session-scoped, shared) or
``stoppable_xrootd_server`` (function-scoped, a private server the test may stop and start again).
The server is started as::

    xrootd -c <run>/xrootd.cfg -p any -l <run>/xrootd.log [-R nobody]

with a configuration that exports only the served directory and accepts connections from localhost only
(``xrd.allow host localhost``; xrootd itself binds every interface). As root, ``-R nobody`` drops privileges,
so the served directory is world-readable and the run directory (admin files, log) belongs to nobody;
both live in a fresh directory under the system temp dir (pytest's tmp_path is private to its owner).
With ``-p any`` xrootd picks a free port, read back from the log; a restart reuses that port.
Tests are skipped when the `xrootd` binary or the XRootD/fsspec-xrootd Python modules are missing.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HOST = "127.0.0.1"
PORT_LINE = re.compile(r"xrootd \S+:(\d+) initialization completed")


class XRootDServer:
    """One `xrootd` process exporting `directory`; `url()` names a file in it as root://127.0.0.1:PORT//abs/path."""

    def __init__(self, base: Path) -> None:
        self.directory = base / "data"
        self.run_dir = base / "run"
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._prepare()

    def url(self, relative_path: str) -> str:
        """The root:// URL of `relative_path` inside the served directory."""
        return f"root://{HOST}:{self.port}/{(self.directory / relative_path).as_posix()}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on its previous port after a stop) and wait until it accepts connections."""
        if self.running:
            return
        log = self.run_dir / "xrootd.log"
        offset = log.stat().st_size if log.exists() else 0
        command = ["xrootd", "-c", str(self.run_dir / "xrootd.cfg"), "-p", str(self.port or "any"), "-l", str(log)]
        if os.geteuid() == 0:
            command += ["-R", "nobody"]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT)
        self.port = self._wait_ready(log, offset)

    def stop(self) -> None:
        """Terminate the server and wait for it to exit."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_TIMEOUT_S)
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def log_tail(self, n: int = 20) -> str:
        """The last `n` lines of the server log, for failure messages."""
        log = self.run_dir / "xrootd.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"

    def _prepare(self) -> None:
        """Create the served and run directories and the configuration file."""
        self.directory.mkdir(parents=True)
        self.run_dir.mkdir()
        self.directory.chmod(0o755)
        self.directory.parent.chmod(0o755)
        (self.run_dir / "xrootd.cfg").write_text(
            f"all.export {self.directory}\nall.adminpath {self.run_dir}\nall.pidpath {self.run_dir}\n"
            "xrd.allow host localhost\n")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.run_dir, nobody.pw_uid, nobody.pw_gid)

    def _wait_ready(self, log: Path, offset: int) -> int:
        """The port once the server accepts connections; an error with the log tail after START_TIMEOUT_S."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"xrootd exited during start-up:\n{self.log_tail()}")
            port = self.port or _logged_port(log, offset)
            if port and _accepts(port):
                return port
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"xrootd did not accept connections within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")


def _logged_port(log: Path, offset: int) -> int:
    """The port the log announces after byte `offset`, or 0."""
    if not log.exists():
        return 0
    with log.open("rb") as handle:
        handle.seek(offset)
        match = PORT_LINE.search(handle.read().decode(errors="replace"))
    return int(match.group(1)) if match else 0


def _accepts(port: int) -> bool:
    """Whether 127.0.0.1:`port` accepts a TCP connection."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _skip_reason() -> str | None:
    """Why the server cannot run here, or None."""
    if shutil.which("xrootd") is None:
        return "the xrootd binary is not installed (`make install` installs xrootd-server with apt-get as root)"
    for module in ("XRootD", "fsspec_xrootd"):
        if importlib.util.find_spec(module) is None:
            return f"the Python module {module} is not installed (pip install xrootd fsspec-xrootd)"
    return None


def _serve() -> Iterator[XRootDServer]:
    """Start a server in a fresh temporary directory, yield it, then stop it and remove the directory."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="cmsdl-xrootd-"))
    server = XRootDServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """A shared xrootd server for the whole session; tests write files into `.directory`."""
    yield from _serve()


@pytest.fixture
def stoppable_xrootd_server() -> Iterator[XRootDServer]:
    """A private xrootd server for one test, which may `stop()` and `start()` it."""
    yield from _serve()
