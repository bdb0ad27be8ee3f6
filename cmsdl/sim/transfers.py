"""Synthetic FTS-like transfer logs (cmsdl-transfers/1, see cmsdl.features.transfers.records) with latency classes.

Each transfer moves one file of a dataset block over a site-to-site link. Most are *normal* (a short queue,
then the link's throughput); *early stuck* ones wait hours in the queue before starting (more often from tape
and on busy links); *late stuck* ones start but crawl below 1 MB/s (more often to flaky destinations and for
big files). Records carry static attributes, identifiers, optional fields that are sometimes missing, and
the attributes known only at the end (end time, duration, failures, final state). Imports no torch.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.cms import SITES
from cmsdl.errors import ConfigError
from cmsdl.features.transfers.records import MARKER

CLASSES = ("normal", "early_stuck", "late_stuck")
ACTIVITIES = {"Production Output": 0.35, "Data Consolidation": 0.25, "User Subscriptions": 0.2,
              "Analysis Output": 0.15, "Express": 0.05}
PROTOCOLS = ("davs", "gsiftp", "root")
OPTIONAL_MISSING = {"user_dn": 0.3, "src.protocol": 0.1, "queue.submitted": 0.15, "params.timeout": 0.1,
                    "file.checksum": 0.05, "priority": 0.05}
START_EPOCH = 1527811200.0  # 2018-06-01


def simulate_transfers(n_transfers: int = 20000, seed: int = 1, missing_scale: float = 1.0,
                       n_sites: int = 24) -> tuple[list[dict[str, Any]], list[str]]:
    """Synthetic transfer records and their true latency classes."""
    if n_transfers < 1 or not 2 <= n_sites <= len(SITES):
        raise ConfigError(f"expected n_transfers >= 1 and 2 <= n_sites <= {len(SITES)}, got {n_transfers}, {n_sites}")
    rng = np.random.default_rng(seed)
    sites = [s for s in SITES if not s.startswith("T3")][:n_sites]
    link_rate = rng.lognormal(np.log(40.0), 0.6, (n_sites, n_sites))
    flaky = rng.random(n_sites) < 0.2
    has_tape = np.array([s.startswith("T1") or s.startswith("T0") for s in sites])
    submit = START_EPOCH + np.sort(rng.uniform(0, 30 * 86400, n_transfers))
    records, classes = [], []
    blocks: dict[int, dict[str, Any]] = {}
    for i in range(n_transfers):
        record, cls = _transfer(rng, i, sites, link_rate, flaky, has_tape, submit[i], blocks, missing_scale)
        records.append(record)
        classes.append(cls)
    return records, classes


def _transfer(rng: np.random.Generator, i: int, sites: list[str], link_rate: np.ndarray, flaky: np.ndarray,
              has_tape: np.ndarray, submit: float, blocks: dict[int, dict[str, Any]], missing_scale: float,
              ) -> tuple[dict[str, Any], str]:
    src, dst = rng.choice(len(sites), 2, replace=False)
    tape = bool(has_tape[src] and rng.random() < 0.5)
    block_id = int(rng.integers(0, 400))
    block = blocks.setdefault(block_id, _block(rng, block_id))
    size = float(np.clip(block["bytes"] / block["nfiles"] * rng.lognormal(0, 0.2), 1e6, 2e10))
    activity = str(rng.choice(list(ACTIVITIES), p=np.array(list(ACTIVITIES.values()))))
    active = int(rng.poisson(20 + 60 * rng.random() ** 3))
    streams = int(rng.integers(1, 9))
    early = -3.8 + 3.0 * tape + 0.03 * active + (0.8 if activity == "Data Consolidation" else 0.0)
    late = -3.6 + 3.0 * flaky[dst] + 0.9 * np.log10(size / 1e9) - 0.15 * streams
    p = np.exp([0.0, early, late])
    cls = CLASSES[int(rng.choice(3, p=p / p.sum()))]
    queue = float(np.clip(rng.lognormal(np.log(60 + 8 * active), 0.8), 5, 3.5 * 3600))
    rate = float(np.clip(link_rate[src, dst] * min(streams, 4) ** 0.3 * rng.lognormal(0, 0.3), 2.0, 2000.0))
    if cls == "early_stuck":
        queue = float(rng.uniform(4.5, 48) * 3600)
    elif cls == "late_stuck":
        rate = float(rng.uniform(0.05, 0.8))
    duration = size / (rate * 1e6)
    failures = int(rng.poisson(2.0 if cls != "normal" else 0.1))
    record = {
        "tr_id": f"{rng.integers(2**63):016x}-{i:07d}", "job_id": f"{rng.integers(2**63):016x}",
        "vo": "cms", "fts_host": "fts3-cms.cern.ch", "version": "3.7.10",
        "activity": activity, "priority": int(rng.integers(1, 6)),
        "user_dn": f"/DC=ch/DC=cern/OU=Users/CN=user{int(rng.integers(0, 40))}",
        "src": {"site": sites[src], "se": f"se.{sites[src].lower()}.cern", "kind": "tape" if tape else "disk",
                "protocol": str(rng.choice(PROTOCOLS))},
        "dst": {"site": sites[dst], "se": f"se.{sites[dst].lower()}.cern", "kind": "disk"},
        "file": {"lfn": f"{block['name']}/file_{i:07d}.root", "bytes": int(size),
                 "checksum": {"type": "adler32", "value": f"{rng.integers(2**32):08x}"}},
        "block": {"name": block["name"], "nfiles": block["nfiles"], "bytes": block["bytes"]},
        "params": {"streams": streams, "timeout": 3600 * int(rng.integers(1, 4)), "overwrite": bool(rng.random() < 0.1),
                   "verify_checksum": True},
        "queue": {"active": active, "submitted": int(active * rng.uniform(0.5, 3))},
        "submit_time": round(submit, 1),
        "start_time": round(submit + queue, 1), "end_time": round(submit + queue + duration, 1),
        "tx_duration": round(duration, 1), "failures": failures,
        "final_state": "FINISHED" if rng.random() > 0.03 else "FAILED",
    }
    if failures:
        record["retries"] = [{"attempt": k + 1, "reason": "TRANSFER [110] timeout"} for k in range(failures)]
    _drop_optional(rng, record, missing_scale)
    return record, cls


def _block(rng: np.random.Generator, block_id: int) -> dict[str, Any]:
    nfiles = int(rng.integers(5, 400))
    return {"name": f"/Sim{block_id % 17}/Run2018-v{block_id}/AODSIM#{block_id:05d}", "nfiles": nfiles,
            "bytes": int(nfiles * 2.5e9 * rng.lognormal(0.0, 0.1))}


def _drop_optional(rng: np.random.Generator, record: dict[str, Any], scale: float) -> None:
    for name, p in OPTIONAL_MISSING.items():
        if rng.random() < p * scale:
            parent, _, key = name.rpartition(".")
            (record[parent] if parent else record).pop(key, None)


def write_log(path: str | Path, records: list[dict[str, Any]], marker: str = MARKER, n_bad: int = 0,
              truncate_last: bool = False, seed: int = 0) -> Path:
    """Write records one per line, each followed by the marker; optionally spoil some to exercise the reader."""
    from cmsdl.io import atomic_write

    rng = np.random.default_rng(seed)
    lines = [json.dumps(r, separators=(",", ":")) + marker for r in records]
    for k, j in enumerate(rng.choice(len(lines), min(n_bad, len(lines)), replace=False)):
        broken = dict(records[j])
        if k % 3 == 0:
            broken.pop("submit_time")
        elif k % 3 == 1:
            broken["file"] = {**broken["file"], "bytes": "many"}
        lines[j] = (json.dumps(broken) if k % 3 != 2 else lines[j][: len(lines[j]) // 2] + "}") + marker
    text = "\n".join(lines) + "\n"
    if truncate_last:
        text = text[: -len(marker) - 20]
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_simulated_transfers(cfg: Any) -> Path:
    """Simulate cfg.n_transfers transfers and write the log to cfg.out, with the config beside it."""
    from cmsdl.io import write_config

    records, classes = simulate_transfers(cfg.n_transfers, cfg.seed, cfg.missing_scale, cfg.n_sites)
    out = write_log(cfg.out, records, cfg.marker, cfg.n_bad, cfg.truncate_last, cfg.seed)
    write_config(out.with_name(out.stem + ".config.yaml"), cfg)
    counts = Counter(classes)
    print(f"wrote {len(records)} transfer records to {out} (" + ", ".join(f"{c} {counts[c]}" for c in CLASSES) + ")")
    return out
