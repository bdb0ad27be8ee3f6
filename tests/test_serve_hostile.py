"""`cmsdl serve` under hostile and broken requests, as a real process on loopback with its shipped limits.

One table of cases (what is sent → the expected 4xx): none may answer 5xx, `/health` answers during and after
each, the server logs no traceback, and its peak RSS stays bounded for decompression-bomb PNGs and big JSON bodies
(measured per case from /proc/<pid>/status VmHWM after resetting it through /proc/<pid>/clear_refs).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import toy_onnx
from cmsdl.features.images.png import SIGNATURE, encode_png, png_chunk

TOKEN = "s3cret-tøken"
MB = 1 << 20
RSS_BOUND_MB = 200  # peak RSS over the idle server's, per case; decoding one 9000x9000 RGBA PNG alone takes 324 MB
FEATURES = [f"f{i:02d}" for i in range(45)]


@dataclass
class Server:
    port: int
    pid: int
    log: Path
    models: Path

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str | bytes] | None = None, timeout: float = 60) -> tuple[int, dict]:
        """One request on a fresh connection; header values given as bytes are sent as they are."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            headers = {"content-type": "application/json", **(headers or {})}
            if body is not None and "content-length" not in headers:
                headers["content-length"] = str(len(body))
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"raw": raw[:200].decode("latin-1")}

    def health(self) -> int:
        return self.request("GET", "/health", timeout=10)[0]

    def rss_mb(self, field: str) -> float:
        """VmRSS (now) or VmHWM (peak since the last reset) of the server process, in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def reset_peak(self) -> None:
        """Restart VmHWM from the current RSS (where the kernel does not allow it, peaks add up over the cases)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`cmsdl serve` with the shipped defaults (short header and body deadlines), a token, five model files of
    which two are broken."""
    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    models.mkdir()
    toy_onnx.write(models / "top.onnx", toy_onnx.top_model(defaults={"f44": 0.0}))
    toy_onnx.write(models / "wf.onnx", toy_onnx.workflow_model())
    toy_onnx.write(models / "img.onnx", toy_onnx.image_model())
    bad_inputs = toy_onnx.tabular_contract(FEATURES, ["b", "t"]) | {"inputs": [1, 2]}
    toy_onnx.write(models / "bad_inputs.onnx", toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), bad_inputs))
    toy_onnx.write(models / "junk.onnx", b"not a model")
    port, log = free_port(), root / "server.log"
    env = {**os.environ, "CMSDL_SERVE_TOKEN": TOKEN, "PYTHONWARNINGS": "ignore"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cmsdl.cli", "serve", f"models={models}", f"port={port}",
                                 "threads=1", "connections.header_timeout_s=2", "connections.body_timeout_s=2"],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(port, proc.pid, log, models)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cmsdl serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if server.request("GET", "/ready", timeout=5)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    yield server
    proc.terminate()
    proc.wait(timeout=30)


def png_zeros(width: int, height: int, color_type: int = 6, planes: int = 4) -> bytes:
    """A valid all-zero 8-bit PNG, compressed row by row (a 9000x9000 RGBA one is ~320 KB, 324 MB decoded)."""
    stream = zlib.compressobj(9)
    row = bytes(1 + width * planes)
    data = b"".join(stream.compress(row) for _ in range(height)) + stream.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGBA and whose pixel data is cut short."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    pixels = png_chunk(b"IDAT", zlib.compress(bytes(1000)))
    return SIGNATURE + png_chunk(b"IHDR", ihdr) + pixels + png_chunk(b"IEND", b"")


def pil_png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def images(*pngs: bytes) -> bytes:
    return json.dumps({"images": [base64.b64encode(p).decode() for p in pngs]}).encode()


def doc(**payload: object) -> bytes:
    return json.dumps(payload).encode()


def full_row(**changes: object) -> dict:
    return {name: 0.5 for name in FEATURES} | changes


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A .npy header (format 1.0) declaring `shape`, followed by only 16 bytes of data."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin-1") + bytes(16)


def json_numbers_body(n_bytes: int) -> bytes:
    """A valid `inputs` document of about n_bytes: 45-wide rows of numbers."""
    row = "[" + ",".join(["0.25"] * 45) + "]"
    return ('{"inputs": [' + ",".join([row] * (n_bytes // (len(row) + 1))) + "]}").encode()


def v2_tensor(name: str, datatype: str, shape: list, binary: bytes = b"", **fields: object) -> bytes:
    """A V2 infer body of one tensor; with `binary`, the JSON header is followed by it (binary-tensor extension)."""
    tensor = {"name": name, "datatype": datatype, "shape": shape, **fields}
    if binary:
        tensor["parameters"] = {"binary_data_size": len(binary)}
    return json.dumps({"inputs": [tensor]}).encode() + binary


def v2_headers(body: bytes) -> dict[str, str | bytes]:
    """The binary extension's header: the length of the JSON part of `body`, which ends at its first ']}'."""
    return {"inference-header-content-length": str(body.index(b"]}") + 2)}


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def upload(contract_changes: dict) -> Callable[[], bytes]:
    """An upload whose tabular contract differs from a valid one by `contract_changes`."""
    def build() -> bytes:
        contract = toy_onnx.tabular_contract(FEATURES, ["b", "t"]) | contract_changes
        return toy_onnx.model_bytes(toy_onnx.softmax_graph(45, 2), contract)
    return build


@dataclass
class Case:
    name: str
    path: str
    body: bytes | Callable[[], bytes] | None
    status: int
    method: str = "POST"
    headers: dict[str, str | bytes] | None = None
    copies: int = 1  # sent at once, each on its own connection
    measure: bool = False  # report this case's peak RSS
    binary: bool = False  # a V2 body with binary data: send Inference-Header-Content-Length for its JSON part


PREDICT_TOP, PREDICT_WF, PREDICT_IMG = "/models/top/predict", "/models/wf/predict", "/models/img/predict"
INFER_TOP, INFER_IMG = "/v2/models/top/infer", "/v2/models/img/infer"
AUTH = {"authorization": f"Bearer {TOKEN}".encode(), "content-type": "application/octet-stream"}
CASES = [
    Case("png declaring 9000x9000 RGBA, 6 at once", PREDICT_IMG, lambda: images(png_zeros(9000, 9000)), 422,
         copies=6, measure=True),
    Case("png declaring 20000x20000 (decompression bomb)", PREDICT_IMG, lambda: images(png_header_only(20000, 20000)),
         422),
    Case("png of the right size in palette mode", PREDICT_IMG, lambda: images(pil_png(np.zeros((32, 32, 3), np.uint8),
                                                                                         "P")), 422),
    Case("png of the right size with 16-bit samples", PREDICT_IMG,
         lambda: images(pil_png(np.zeros((32, 32), np.uint16))), 422),
    Case("png with one channel for a two-channel model", PREDICT_IMG, lambda: images(encode_png(np.zeros((1, 32, 32),
                                                                                                np.uint8))), 422),
    Case("images: a number instead of base64", PREDICT_IMG, doc(images=[5]), 422),
    Case("json of 60 MB (under the old 64 MB cap)", PREDICT_TOP, lambda: json_numbers_body(60 * MB), 413,
         measure=True),
    Case("json just under the 8 MB cap, 40k rows", PREDICT_TOP, lambda: json_numbers_body(8 * MB - 4096), 413,
         measure=True),
    Case("json nested 100000 deep", PREDICT_TOP, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    Case("json integer of 5000 digits", PREDICT_TOP, b'{"rows": [[' + b"9" * 5000 + b"]]}", 400),
    Case("content-length of 1 TB", PREDICT_TOP, b"{}", 413, headers={"content-length": str(1 << 40)}),
    Case("rows: a string value", PREDICT_TOP, doc(rows=[full_row(f00="x")]), 422),
    Case("rows: a list value", PREDICT_TOP, doc(rows=[full_row(f00=[1, 2])]), 422),
    Case("rows: an object value", PREDICT_TOP, doc(rows=[full_row(f00={"a": 1})]), 422),
    Case("rows: a null value", PREDICT_TOP, doc(rows=[full_row(f00=None)]), 422),
    Case("rows: an object row then an int", PREDICT_TOP, doc(rows=[full_row(), 7]), 422),
    Case("rows: a list row of strings", PREDICT_TOP, doc(rows=[["1.5"] * 45]), 422),
    Case("rows: empty", PREDICT_TOP, doc(rows=[]), 422),
    Case("rows: MET_pt only of 45 features", PREDICT_TOP, doc(rows=[{"f00": 50}]), 422),
    Case("rows: 10**400", PREDICT_TOP, b'{"rows": [[1' + b"0" * 400 + b"" + b", 0" * 44 + b"]]}", 422),
    Case("rows: NaN", PREDICT_TOP, b'{"rows": [[NaN' + b", 0" * 44 + b"]]}", 422),
    Case("rows: 3e38, finite but the model overflows", PREDICT_TOP, doc(rows=[[3e38] * 45]), 422),
    Case("inputs: 3e38, model output NaN", PREDICT_TOP, doc(inputs=[[3e38] * 45]), 422),
    Case("inputs: strings", PREDICT_TOP, doc(inputs=[["0.5"] * 45]), 422),
    Case("inputs: 4097 rows, over max_batch", PREDICT_TOP, doc(inputs=[[0.5] * 45] * 4097), 413),
    Case("records: a count of 2**63", PREDICT_WF,
         doc(records=[{"name": "w", "tasks": [{"errors": {"50660": {"T1_US_FNAL": 2**63}}, "site_status": {}}]}]),
         422),
    Case("records: a count of 2**64", PREDICT_WF,
         doc(records=[{"name": "w", "tasks": [{"errors": {"84": {"T1_US_FNAL": 2**64}}, "site_status": {}}]}]), 422),
    Case("records: ints", PREDICT_WF, doc(records=[1, 2]), 422),
    Case("npy header declaring shape (1e11, 42)", PREDICT_TOP, npy_header("<f4", (100_000_000_000, 42)), 422,
         headers={"content-type": "application/x-npy"}),
    Case("npy of Python objects", PREDICT_TOP, npy_header("|O", (2, 45)), 422,
         headers={"content-type": "application/x-npy"}),
    Case("hits: an int", PREDICT_IMG, doc(hits=5), 400),
    Case("hits: a list of ints", PREDICT_IMG, doc(hits=[5]), 422),
    Case("hits: scalars", PREDICT_IMG, doc(hits=[{"x": 1.0, "y": 2.0, "z": 3.0}]), 422),
    Case("hits: lists of different lengths", PREDICT_IMG, doc(hits=[{"x": [1.0, 2.0], "y": [1.0], "z": [0.0]}]), 422),
    Case("hits: subdet of 2**63", PREDICT_IMG,
         doc(hits=[{"x": [1.0], "y": [1.0], "z": [0.0], "subdet": [2**63]}]), 422),
    Case("hits: subdet of 2**64", PREDICT_IMG,
         doc(hits=[{"x": [1.0], "y": [1.0], "z": [0.0], "subdet": [2**64]}]), 422),
    Case("hits: empty", PREDICT_IMG, doc(hits=[]), 422),
    Case("authorization header with UTF-8 bytes", "/models/new", b"onnx", 401, method="PUT",
         headers={"authorization": "Bearer tøken-wrong".encode(), "content-type": "application/octet-stream"}),
    Case("authorization header with invalid UTF-8", "/models/new", b"onnx", 401, method="DELETE",
         headers={"authorization": b"Bearer \xff\xfe"}),
    Case("upload: cmsdl.preprocessing = []", "/models/up", upload({"preprocessing": []}), 422, "PUT", AUTH),
    Case("upload: cmsdl.inputs = [1, 2]", "/models/up", upload({"inputs": [1, 2]}), 422, "PUT", AUTH),
    Case("upload: empty class_names", "/models/up", upload({"class_names": []}), 422, "PUT", AUTH),
    Case("upload: empty inputs", "/models/up", upload({"inputs": []}), 422, "PUT", AUTH),
    Case("upload: unknown dtype", "/models/up",
         upload({"inputs": [{"name": "features", "shape": ["batch", 45], "dtype": "float128"}]}), 422, "PUT", AUTH),
    Case("upload: input name not in the graph", "/models/up",
         upload({"inputs": [{"name": "x", "shape": ["batch", 45], "dtype": "float32"}]}), 422, "PUT", AUTH),
    Case("upload: input width not the graph's", "/models/up",
         upload({"inputs": [{"name": "features", "shape": ["batch", 44], "dtype": "float32"}]}), 422, "PUT", AUTH),
    Case("upload: input dtype not the graph's", "/models/up",
         upload({"inputs": [{"name": "features", "shape": ["batch", 45], "dtype": "float64"}]}), 422, "PUT", AUTH),
    Case("upload: cmsdl.outputs for 3 classes, graph has 2", "/models/up",
         upload({"class_names": ["a", "b", "c"],
                 "outputs": [{"name": "probabilities", "shape": ["batch", 3], "dtype": "float32"}]}), 422, "PUT",
         AUTH),
]


V2_CASES = [
    Case("v2: png declaring 9000x9000 as binary BYTES, 6 at once", INFER_IMG,
         lambda: v2_tensor("images", "BYTES", [1], length_prefixed(png_zeros(9000, 9000))), 400, binary=True,
         copies=6, measure=True),
    Case("v2: png declaring 20000x20000 as base64 BYTES", INFER_IMG,
         lambda: v2_tensor("images", "BYTES", [1], data=[base64.b64encode(png_header_only(20000, 20000)).decode()]),
         400),
    Case("v2: binary header declaring shape [1e11, 45]", INFER_TOP,
         v2_tensor("features", "FP32", [100_000_000_000, 45], bytes(180)), 400, binary=True),
    Case("v2: binary_data_size of 2**62", INFER_TOP,
         json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 45],
                                 "parameters": {"binary_data_size": 2**62}}]}).encode(), 400, binary=True),
    Case("v2: BYTES element declaring 4 GB", INFER_IMG,
         v2_tensor("images", "BYTES", [1], b"\xff\xff\xff\xff" + bytes(8)), 400, binary=True),
    Case("v2: 4097 images as BYTES", INFER_IMG, v2_tensor("images", "BYTES", [4097], length_prefixed(b"x") * 4097),
         400, binary=True),
    Case("v2: Inference-Header-Content-Length of 1 TB", INFER_TOP, v2_tensor("features", "FP32", [1, 45], bytes(180)),
         400, headers={"inference-header-content-length": str(1 << 40)}),
    Case("v2: binary body of 70 MB (over the 64 MB cap)", INFER_TOP,
         lambda: v2_tensor("features", "FP32", [70 * MB // 180, 45], bytes(70 * MB // 180 * 180)), 413, binary=True,
         measure=True),
    Case("v2: JSON of 9 MB (over the 8 MB cap)", INFER_TOP,
         lambda: v2_tensor("features", "FP32", [50_000, 45], data=[0.25] * 2_250_000), 413, measure=True),
    Case("v2: JSON nested 100000 deep", INFER_TOP, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    Case("v2: data nested 100000 deep", INFER_TOP,
         b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 45], "data": '
         + b"[" * 100_000 + b"]" * 100_000 + b"}]}", 400),
    Case("v2: an integer of 5000 digits", INFER_TOP,
         b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 45], "data": [' + b"9" * 5000 + b"]}]}",
         400),
    Case("v2: shape of 1000 sizes", INFER_TOP, v2_tensor("features", "FP32", [1] * 1000, data=[0.5]), 400),
    Case("v2: shape sizes that are strings", INFER_TOP, v2_tensor("features", "FP32", ["1", "45"], data=[0.5]), 400),
    Case("v2: datatype an object", INFER_TOP,
         b'{"inputs": [{"name": "features", "datatype": {"a": 1}, "shape": [1, 45], "data": [0.5]}]}', 400),
    Case("v2: inputs a string", INFER_TOP, b'{"inputs": "features"}', 400),
    Case("v2: tensor name a list", INFER_TOP, b'{"inputs": [{"name": [1]}]}', 400),
    Case("v2: outputs a number", INFER_TOP, json.dumps({"inputs": [{"name": "features", "datatype": "FP32",
                                                                     "shape": [1, 45], "data": [0.5] * 45}],
                                                         "outputs": 5}).encode(), 400),
    Case("v2: 3e38, model output NaN", INFER_TOP, v2_tensor("features", "FP32", [1, 45], data=[3e38] * 45), 400),
    Case("v2: model name with a path", "/v2/models/..%2F..%2Fetc/infer", b"{}", 400),
    Case("v2: model name of 300 characters", "/v2/models/" + "a" * 300 + "/infer", b"{}", 400),
    Case("v2: metadata of an unknown version", "/v2/models/top/versions/99", None, 404, method="GET"),
]
CASES += V2_CASES


def send(server: Server, case: Case) -> list[int]:
    """The statuses of the case's requests, sent at once (None where the connection failed)."""
    body = case.body() if callable(case.body) else case.body
    headers = {**(case.headers or {}), **(v2_headers(body) if case.binary else {})}
    statuses: list[int | None] = [None] * case.copies

    def one(i: int) -> None:
        statuses[i] = server.request(case.method, case.path, body, headers)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(case.copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_hostile_requests_get_4xx_with_health_answering_and_bounded_memory(server: Server) -> None:
    health_failures: list[str] = []
    done = threading.Event()

    def poll_health() -> None:
        while not done.is_set():
            try:
                if server.health() != 200:
                    health_failures.append("status")
            except OSError as err:
                health_failures.append(repr(err))
            time.sleep(0.05)

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    wrong, peaks = [], {}
    try:
        for case in CASES:
            server.reset_peak()
            idle = server.rss_mb("VmRSS")
            statuses = send(server, case)
            peaks[case.name] = (idle, server.rss_mb("VmHWM"))
            if statuses != [case.status] * case.copies:
                wrong.append(f"{case.name}: got {statuses}, expected {case.status}")
            assert server.health() == 200, f"/health after {case.name}"
            assert server.request("GET", "/models")[0] == 200, f"/models after {case.name}"
    finally:
        done.set()
        poller.join(timeout=20)
    for case in (c for c in CASES if c.measure):
        idle, peak = peaks[case.name]
        print(f"peak RSS {case.name}: {peak:.0f} MB (idle {idle:.0f} MB, +{peak - idle:.0f} MB)")
    assert not wrong, "\n".join(wrong)
    assert not health_failures, health_failures[:5]
    over = {name: round(peak - idle) for name, (idle, peak) in peaks.items() if peak - idle > RSS_BOUND_MB}
    assert not over, f"peak RSS over the idle server's by more than {RSS_BOUND_MB} MB: {over}"
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_bad_files_are_skipped_and_listed_at_start_up(server: Server) -> None:
    status, ready = server.request("GET", "/ready")
    assert status == 200 and ready["models"] == 3
    assert set(ready["invalid_files"]) == {"bad_inputs.onnx", "junk.onnx"}
    assert "cmsdl.inputs[0]" in ready["invalid_files"]["bad_inputs.onnx"]
    assert str(server.models) not in json.dumps(ready)
    assert not (server.models / "up.onnx").exists()


def test_clients_that_never_finish_their_headers_are_disconnected(server: Server) -> None:
    sockets = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sockets.append(sock)
    assert server.health() == 200
    try:
        closed = [sock.recv(1024) == b"" for sock in sockets]  # b"": the server closed the connection
    except TimeoutError:
        closed = [False]
    finally:
        for sock in sockets:
            sock.close()
    assert all(closed)


def test_a_body_that_never_arrives_gets_408(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with sock:
        sock.sendall(b"POST /models/top/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"rows\": ")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_keep_alive_client_is_not_cut_off_by_the_header_deadline(server: Server) -> None:
    """Requests on one connection over longer than the 2 s header deadline, each head sent promptly."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        statuses = []
        for _ in range(3):
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            time.sleep(1.5)
    finally:
        conn.close()
    assert statuses == [200, 200, 200]


def test_a_request_head_over_the_size_cap_gets_400(server: Server) -> None:
    """max_header_kb (16) holds whichever HTTP parser runs (h11 or httptools)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert server.health() == 200
