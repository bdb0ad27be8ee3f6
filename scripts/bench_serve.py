"""`cmsdl serve` throughput: requests/s and p50/p99 latency on loopback for JSON, .npy and V2 binary bodies, under
several service settings side by side (by default one worker vs two), driven by `hey` when it is installed.

Each setting starts a real `cmsdl serve ... read_only=true <setting>` process on a free port with an exported model
(the seed's workflow MLP, trained briefly here unless --model is given), then sends the same single-row prediction
(--batch rows) as a JSON body ({"inputs": [[...]]} to /models/<name>/predict), a binary .npy body, and an Open
Inference Protocol request with binary tensor data (/v2/models/<name>/infer). Beside each figure: non-2xx answers,
the server's CPU time per 1000 requests (all its processes; less sensitive to a busy machine than requests/s) and
the load average when the run started. The machine's other load changes the figures: compare rows of one run.

    python scripts/bench_serve.py                                   # hey -n 20000 -c 100, workers=1 vs workers=2
    python scripts/bench_serve.py --settings "http=h11 inline_kb=0" "inline_kb=0" "" "workers=2"   # step by step
    python scripts/bench_serve.py --model models/mlp.onnx --requests 2000 --clients 8 --no-hey
    python scripts/bench_serve.py --small     # scripts/bench_all.py: JSON only, 3000 requests, workers=1 vs 2
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_all import bench_line
from cmsdl.inference import Predictor

TICKS = os.sysconf("SC_CLK_TCK")
JSON_TARGET_REQUESTS_PER_S = 5000.0  # issue 21's target for single-row JSON requests (a target, not measured here)


@dataclass(frozen=True)
class Payload:
    kind: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Row:
    setting: str
    kind: str
    body_bytes: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    cpu_ms_per_1000: float
    load: float


def exported_mlp(work: Path) -> Path:
    """Simulate workflows, train the seed DNN for one epoch and export it (the same commands a user runs)."""
    cmsdl = [sys.executable, "-m", "cmsdl.cli"]
    quiet = {"check": True, "capture_output": True, "cwd": work}
    subprocess.run([*cmsdl, "simulate-workflows", "out=data/workflows.json", "n_workflows=800"], **quiet)
    subprocess.run([*cmsdl, "train", "experiment=workflow_actions", "trainer.max_epochs=1", "run_name=bench",
                    "trainer=cpu", "callbacks.progress_bar.refresh_rate=0"], **quiet)
    best = json.loads((work / "logs/train/runs/bench/metrics.json").read_text())["best_checkpoint"]
    subprocess.run([*cmsdl, "export", f"ckpt={best}", "out=models/mlp.onnx"], **quiet)
    return work / "models" / "mlp.onnx"


def payloads(name: str, x: np.ndarray, input_name: str) -> list[Payload]:
    """The same rows as a JSON predict body, a .npy body, and a V2 infer request with binary tensor data."""
    npy = io.BytesIO()
    np.save(npy, x)
    header = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return [Payload("json", f"/models/{name}/predict", json.dumps({"inputs": x.tolist()}).encode(),
                    {"content-type": "application/json"}),
            Payload("npy", f"/models/{name}/predict", npy.getvalue(), {"content-type": "application/x-npy"}),
            Payload("v2-binary", f"/v2/models/{name}/infer", header + x.astype("<f4").tobytes(),
                    {"content-type": "application/octet-stream",
                     "inference-header-content-length": str(len(header))})]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(models: Path, setting: str, log: Path) -> tuple[subprocess.Popen, int]:
    """`cmsdl serve` with `setting` (space-separated overrides), once it answers /ready."""
    port = free_port()
    command = [sys.executable, "-m", "cmsdl.cli", "serve", f"models={models}", f"port={port}", "read_only=true",
               "log_level=warning", *setting.split()]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=models.parent, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cmsdl serve {setting} exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/ready")
            if connection.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"cmsdl serve {setting} was not ready within 120 s")


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants (the workers), from /proc."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    tree, grew = {pid}, True
    while grew:
        children = {child for child, (parent, _) in stats.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(stats[p][1] for p in tree if p in stats)


def run_hey(port: int, payload: Payload, requests: int, clients: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx or failed) from hey's summary."""
    with tempfile.NamedTemporaryFile(suffix=".body") as body:
        body.write(payload.body)
        body.flush()
        command = ["hey", "-n", str(requests), "-c", str(clients), "-m", "POST", "-D", body.name,
                   "-T", payload.headers["content-type"]]
        for key, value in payload.headers.items():
            if key != "content-type":
                command += ["-H", f"{key}: {value}"]
        out = subprocess.run([*command, f"http://127.0.0.1:{port}{payload.path}"], capture_output=True, text=True,
                             check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p50, p99 = (float(found[1]) * 1e3 if (found := re.search(rf"{q}% in ([\d.]+) secs", out)) else float("nan")
                for q in (50, 99))  # hey leaves out percentiles it has too few requests for
    ok = sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out) if code.startswith("2"))
    return rate, p50, p99, requests - ok


def client(port: int, payload: Payload, n: int) -> tuple[list[float], int]:
    """One keep-alive connection sending n requests: latencies in ms, and the non-2xx count."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, failed = [], 0
    for _ in range(n):
        start = time.perf_counter()
        connection.request("POST", payload.path, payload.body, payload.headers)
        response = connection.getresponse()
        response.read()
        failed += not 200 <= response.status < 300
        latencies.append((time.perf_counter() - start) * 1e3)
    connection.close()
    return latencies, failed


def run_python_clients(port: int, payload: Payload, requests: int, clients: int) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(port, payload, requests // clients), range(clients)))
    elapsed = time.perf_counter() - start
    latencies = sorted(t for lat, _ in results for t in lat)
    return (len(latencies) / elapsed, statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))],
            sum(failed for _, failed in results))


def measure(models: Path, setting: str, kinds: list[Payload], args: argparse.Namespace, log: Path) -> list[Row]:
    proc, port = start_service(models, setting, log)
    drive = run_hey if args.hey else run_python_clients
    rows = []
    try:
        for payload in kinds:
            drive(port, payload, max(args.requests // 10, args.clients), args.clients)  # warm-up
            load, cpu = os.getloadavg()[0], process_tree_cpu_s(proc.pid)
            rate, p50, p99, failed = drive(port, payload, args.requests, args.clients)
            cpu_ms = (process_tree_cpu_s(proc.pid) - cpu) * 1e6 / args.requests
            rows.append(Row(setting or "(defaults)", payload.kind, len(payload.body), rate, p50, p99, failed,
                            cpu_ms, load))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    driver = f"hey -n {args.requests} -c {args.clients}" if args.hey else f"{args.clients} Python clients"
    print(f"{driver}, batch {args.batch}, loopback, {os.cpu_count()} CPUs (load average: 1-minute, at each start)")
    width = max(len(r.setting) for r in rows) + 2
    print(f"{'setting':<{width}}{'payload':<11}{'bytes':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
          f"{'cpu ms/1k':>11}{'load':>7}")
    for r in rows:
        print(f"{r.setting:<{width}}{r.kind:<11}{r.body_bytes:>7}{r.requests_per_s:>9.0f}{r.p50_ms:>9.2f}"
              f"{r.p99_ms:>9.2f}{r.failed:>9}{r.cpu_ms_per_1000:>11.0f}{r.load:>7.2f}")
    by = {(r.setting, r.kind): r.requests_per_s for r in rows}
    first, last = rows[0].setting, rows[-1].setting
    if first != last:
        for kind in dict.fromkeys(r.kind for r in rows):
            print(f"ratio {last} / {first} requests/s, {kind}: {by[last, kind] / by[first, kind]:.2f}")
    if (last, "npy") in by and (last, "json") in by:
        print(f"ratio npy/json requests/s: {by[last, 'npy'] / by[last, 'json']:.2f}")


def print_bench_lines(rows: list[Row], args: argparse.Namespace) -> None:
    """The BENCH lines of scripts/bench_all.py: last setting vs first per payload, and JSON req/s vs the target."""
    driver = f"hey -c {args.clients}" if args.hey else f"{args.clients} Python clients, not hey"
    by = {(r.setting, r.kind): r for r in rows}
    first, last = rows[0].setting, rows[-1].setting
    for kind in dict.fromkeys(r.kind for r in rows):
        if first != last:
            print(bench_line(f"serve: {kind} req/s, {last} vs {first} ({driver})", by[last, kind].requests_per_s,
                             by[first, kind].requests_per_s, "", "req/s"))
    if (last, "json") in by:
        rate = by[last, "json"].requests_per_s
        print(bench_line(f"serve: single-row JSON req/s, {last} ({driver})", rate, JSON_TARGET_REQUESTS_PER_S,
                         ">= 1", "req/s", note=f"reference: the issue's target of {JSON_TARGET_REQUESTS_PER_S:.0f} "
                                                "req/s, not a measurement"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["workers=1", "workers=2"],
                        help="cmsdl serve overrides per setting, each a quoted string ('' for the defaults)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--model", type=Path, help="an exported .onnx model (default: train and export the MLP)")
    parser.add_argument("--payloads", default="json,npy,v2-binary", help="body kinds to send, comma-separated")
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--no-hey", dest="hey", action="store_false", help="use Python clients even if hey is "
                                                                           "installed")
    args = parser.parse_args()
    if args.small:
        args.requests, args.payloads, args.settings = 3000, "json", ["workers=1", "workers=2"]
    args.hey = args.hey and shutil.which("hey") is not None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or exported_mlp(work)
        models = work / "served"
        models.mkdir()
        shutil.copy(model, models / "mlp.onnx")
        spec = Predictor(model).contract.input
        x = np.random.default_rng(0).normal(size=(args.batch, *spec.shape[1:])).astype(np.float32)
        kinds = [p for p in payloads("mlp", x, spec.name) if p.kind in args.payloads.split(",")]
        rows = [row for setting in args.settings for row in measure(models, setting, kinds, args, work / "log")]
    print_table(rows, args)
    print_bench_lines(rows, args)


if __name__ == "__main__":
    main()
