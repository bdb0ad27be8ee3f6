"""`cmsdl simulate`: a toy CMS tracker. Charged particles on helices in a 3.8 T solenoid leave hits on
CMS-like barrel layers and endcap disks (efficiency < 1, smearing, noise); events go to ROOT files.

The processes differ in topology, not in hit multiplicity: soft underlying-event tracks first top up every
event's hard-scatter hits to `ue_fill_hits`, then the same underlying event, pile-up and noise come on top for
every process. So the number of hits alone (total or per subdetector) does not tell the processes apart.

Output, one file per process and block of events: `<out>/<process>_<NNN>.root` with a tree `events`:
hit_x, hit_y, hit_z (cm, jagged float32), hit_layer (int16), hit_subdet (int8, see geometry.py),
counter nhit, and per event: event (int64), process (int32, index in PROCESS_CODES), n_tracks, n_noise.
Vectorised over whole blocks of events (no per-hit Python loop); deterministic for a given seed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from cmsdl.errors import ConfigError, closest
from cmsdl.sim.geometry import OUTER_RADIUS, Barrel, Endcap, cms_barrel, cms_endcap, curvature_radius_cm
from cmsdl.sim.processes import PROCESSES, Particles, concat, pileup, soft_particles, underlying_event

log = logging.getLogger(__name__)
PROCESS_CODES = {"jpsi": 0, "qcd": 1, "higgs": 2}
HIT_FIELDS = ("x", "y", "z", "layer", "subdet")
SOFT_HITS_PER_TRACK = 8  # a low guess of a top-up track's hits, so that one round of tracks nearly always suffices
# The top-up comes as mini-jets (tracks per mini-jet, spread in eta and phi, pT slope in GeV): with single soft
# tracks, hits per subdetector still told QCD's clustered jets from J/psi's even spray (75% on 1500 events).
MINIJET_TRACKS, MINIJET_SPREAD, MINIJET_PT_SLOPE = 12, 0.3, 0.8


def barrel_hits(p: Particles, radius_cm: np.ndarray, barrel: Barrel) -> dict[str, np.ndarray]:
    """Crossings of every particle with every barrel layer, shape (particles, layers), with a validity mask."""
    r = barrel.radius[None, :]
    ratio = r / (2 * radius_cm[:, None])
    ok = ratio < 1
    turn = np.arcsin(np.minimum(ratio, 1.0))
    z = p["z0"][:, None] + 2 * radius_cm[:, None] * turn * np.sinh(p["eta"])[:, None]
    ok &= np.abs(z) < barrel.half_length[None, :]
    phi = p["phi"][:, None] - p["charge"][:, None] * turn
    shape = ok.shape
    return {"r": np.broadcast_to(r, shape), "phi": phi, "z": z, "ok": ok,
            "layer": np.broadcast_to(np.arange(shape[1])[None, :], shape),
            "subdet": np.broadcast_to(barrel.subdet[None, :], shape)}


def endcap_hits(p: Particles, radius_cm: np.ndarray, endcap: Endcap, first_layer: int) -> dict[str, np.ndarray]:
    """Crossings with the disks on the particle's side (+z or -z), shape (particles, disks)."""
    cot = np.sinh(p["eta"])[:, None]
    side = np.where(cot >= 0, 1.0, -1.0)
    z = side * endcap.z[None, :]
    path = (z - p["z0"][:, None]) / np.where(cot == 0, 1e-12, cot)
    turn = path / radius_cm[:, None]
    r = 2 * radius_cm[:, None] * np.sin(np.clip(turn, 0, np.pi) / 2)
    ok = (path > 0) & (turn < np.pi) & (r > endcap.r_min[None, :]) & (r < endcap.r_max[None, :])
    n = len(endcap.z)
    layer = first_layer + np.arange(n)[None, :] + np.where(side > 0, 0, n)
    return {"r": r, "phi": p["phi"][:, None] - p["charge"][:, None] * turn / 2, "z": z, "ok": ok,
            "layer": layer, "subdet": np.broadcast_to(endcap.subdet[None, :], r.shape)}


def detect(rng: np.random.Generator, p: Particles, efficiency: float, smear: bool = True) -> dict[str, np.ndarray]:
    """All hits of all particles, flat and ordered by event: event, x, y, z, layer, subdet."""
    barrel, endcap = cms_barrel(), cms_endcap()
    radius_cm = curvature_radius_cm(p["pt"])
    parts = [barrel_hits(p, radius_cm, barrel), endcap_hits(p, radius_cm, endcap, len(barrel.radius))]
    sig_rphi = [np.broadcast_to(barrel.sigma_rphi, parts[0]["ok"].shape), np.broadcast_to(endcap.sigma_rphi, parts[1]["ok"].shape)]
    sig_long = [np.broadcast_to(barrel.sigma_z, parts[0]["ok"].shape), np.broadcast_to(endcap.sigma_r, parts[1]["ok"].shape)]
    hits = {key: np.concatenate([part[key] for part in parts], axis=1) for key in ("r", "phi", "z", "ok", "layer", "subdet")}
    ok = hits["ok"] & (rng.random(hits["ok"].shape) < efficiency)
    event = np.broadcast_to(p["event"][:, None], ok.shape)[ok]
    r, phi, z = hits["r"][ok], hits["phi"][ok], hits["z"][ok]
    if smear:
        n_barrel = len(barrel.radius)
        is_barrel = hits["layer"][ok] < n_barrel
        phi = phi + rng.normal(0, 1, len(r)) * np.concatenate(sig_rphi, axis=1)[ok] / r
        long = rng.normal(0, 1, len(r)) * np.concatenate(sig_long, axis=1)[ok]
        z = np.where(is_barrel, z + long, z)
        r = np.where(is_barrel, r, np.clip(r + long, 0.0, OUTER_RADIUS))
    return {"event": event, "x": r * np.cos(phi), "y": r * np.sin(phi), "z": z,
            "layer": hits["layer"][ok].astype(np.int16), "subdet": hits["subdet"][ok].astype(np.int8)}


def noise_hits(rng: np.random.Generator, n_events: int, mean: float) -> dict[str, np.ndarray]:
    """Random hits spread uniformly over all detector surfaces."""
    barrel, endcap = cms_barrel(), cms_endcap()
    n_barrel, n_disks = len(barrel.radius), len(endcap.z)
    event = np.repeat(np.arange(n_events), rng.poisson(mean, n_events))
    n = len(event)
    layer = rng.integers(0, n_barrel + 2 * n_disks, n)
    on_barrel = layer < n_barrel
    b, d = np.minimum(layer, n_barrel - 1), (layer - n_barrel) % n_disks
    side = np.where(layer - n_barrel < n_disks, 1.0, -1.0)
    disk_r = np.sqrt(rng.uniform(endcap.r_min[d] ** 2, endcap.r_max[d] ** 2))
    r = np.where(on_barrel, barrel.radius[b], disk_r)
    z = np.where(on_barrel, rng.uniform(-1, 1, n) * barrel.half_length[b], side * endcap.z[d])
    phi = rng.uniform(-np.pi, np.pi, n)
    return {"event": event, "x": r * np.cos(phi), "y": r * np.sin(phi), "z": z, "layer": layer.astype(np.int16),
            "subdet": np.where(on_barrel, barrel.subdet[b], endcap.subdet[d]).astype(np.int8)}


def top_up_hits(rng: np.random.Generator, hits_per_event: np.ndarray, target: int, z0: np.ndarray,
                efficiency: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Hits of underlying-event mini-jets added to each event, track by track, until it holds `target` hits.

    Returns the added hits (as `detect` does) and the number of tracks added per event. An event that already
    holds `target` hits gets none; the last track may overshoot the target by its own hits. With a detector that
    records nothing (efficiency 0) the top-up stops after one round.
    """
    n_events = len(hits_per_event)
    deficit = np.maximum(target - hits_per_event, 0)
    added = [detect(rng, soft_particles(rng, np.zeros(0, np.int64), np.zeros(0)), efficiency)]
    n_tracks = np.zeros(n_events, np.int64)
    while (short := np.flatnonzero(deficit > 0)).size:
        n_new = deficit[short] // SOFT_HITS_PER_TRACK + 1
        event = np.repeat(short, n_new)
        soft = soft_particles(rng, event, z0[event], MINIJET_PT_SLOPE, MINIJET_TRACKS, MINIJET_SPREAD)
        soft["event"] = np.arange(len(event))
        hits = detect(rng, soft, efficiency)
        per_track = np.bincount(hits["event"], minlength=len(event))
        before = np.cumsum(per_track) - per_track
        before -= np.repeat(before[np.r_[0, np.cumsum(n_new)[:-1]]], n_new)
        keep = before < deficit[event]
        kept_hits = keep[hits["event"]]
        added.append({**{k: v[kept_hits] for k, v in hits.items()}, "event": event[hits["event"][kept_hits]]})
        n_tracks += np.bincount(event[keep], minlength=n_events)
        deficit -= np.bincount(event, weights=per_track * keep, minlength=n_events).astype(np.int64)
        if not kept_hits.any():
            break
    return {k: np.concatenate([a[k] for a in added]) for k in added[0]}, n_tracks


def simulate_events(process: str, n_events: int, seed: int | tuple[int, ...], efficiency: float = 0.97,
                    noise: float = 20.0, ue_mean: float = 10.0, pileup_mean: float = 0.0,
                    higgs_mass: float = 125.0, ue_fill_hits: int = 700) -> dict[str, Any]:
    """n_events of one process: jagged hit arrays (awkward) and per-event truth, ready for uproot.

    The hard scatter's hits are topped up to `ue_fill_hits` with soft tracks, then an underlying event of
    `ue_mean` tracks, `pileup_mean` pile-up interactions and `noise` noise hits are added, alike for all processes.
    """
    if process not in PROCESSES:
        hint = closest(process, PROCESSES)
        raise ConfigError(f"processes: unknown process {process!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected some of {', '.join(PROCESSES)}")
    rng = np.random.default_rng(seed)
    z0 = rng.normal(0.0, 5.0, n_events)
    hard = PROCESSES[process](rng, n_events, z0, higgs_mass=higgs_mass)
    hard_hits = detect(rng, hard, efficiency)
    fill_hits, n_fill = top_up_hits(rng, np.bincount(hard_hits["event"], minlength=n_events), ue_fill_hits, z0,
                                    efficiency)
    soft = underlying_event(rng, n_events, ue_mean, z0)
    n_tracks = np.bincount(hard["event"], minlength=n_events) + n_fill + np.bincount(soft["event"], minlength=n_events)
    if pileup_mean > 0:
        soft = concat([soft, pileup(rng, n_events, pileup_mean, ue_mean)])
    noise = noise_hits(rng, n_events, noise)
    parts = (hard_hits, fill_hits, detect(rng, soft, efficiency), noise)
    merged = {k: np.concatenate([part[k] for part in parts]) for k in hard_hits}
    order = np.argsort(merged["event"], kind="stable")
    counts = np.bincount(merged["event"], minlength=n_events)
    hit = ak.zip({k: ak.unflatten(_hit_dtype(k, merged[k][order]), counts) for k in HIT_FIELDS})
    return {"hit": hit, "process": np.full(n_events, PROCESS_CODES[process], np.int32),
            "n_tracks": n_tracks.astype(np.int32), "n_noise": np.bincount(noise["event"], minlength=n_events).astype(np.int32)}


def _hit_dtype(field: str, values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) if field in ("x", "y", "z") else values


def write_root(path: Path, events: dict[str, Any], first_event: int) -> None:
    """Write one block of events as the tree `events`, atomically (temporary name, then rename)."""
    import uproot

    from cmsdl.io import atomic_path

    n = len(events["process"])
    data = {"event": np.arange(first_event, first_event + n, dtype=np.int64), **events}
    with atomic_path(path, ".root") as tmp, uproot.recreate(tmp) as f:
        tree = f.mktree("events", {k: ak.type(v).content if isinstance(v, ak.Array) else v.dtype for k, v in data.items()})
        tree.extend(data)


def simulate_files(cfg: Any) -> list[Path]:
    """Write cfg.n_events events per process in files of cfg.events_per_file; existing files are kept (resume)."""
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(process, k) for process in cfg.processes for k in range(-(-int(cfg.n_events) // int(cfg.events_per_file)))]
    written, n_done, start = [], 0, time.perf_counter()
    for process, k in tqdm(jobs, desc="simulate", unit="file", disable=not cfg.progress):
        path = out / f"{process}_{k:03d}.root"
        n = min(cfg.events_per_file, cfg.n_events - k * cfg.events_per_file)
        written.append(path)
        if path.is_file() and not cfg.overwrite:
            continue
        events = simulate_events(process, n, (int(cfg.seed), PROCESS_CODES.get(process, 99), k), cfg.efficiency,
                                 cfg.noise_hits, cfg.ue_mean, cfg.pileup, cfg.higgs_mass, int(cfg.ue_fill_hits))
        write_root(path, events, k * cfg.events_per_file)
        n_done += n
    seconds = time.perf_counter() - start
    rate = f", {n_done / seconds:.0f} events/s" if n_done else " (all files existed; overwrite=true redoes them)"
    print(f"simulated {n_done} events into {len(written)} files in {out}{rate}")
    return written


def run(cfg: Any) -> list[Path]:
    from cmsdl.io import write_config

    for process in cfg.processes:
        if process not in PROCESSES:
            simulate_events(process, 1, 0)
    if int(cfg.n_events) < 1 or int(cfg.events_per_file) < 1:
        raise ConfigError(f"n_events/events_per_file: expected positive integers, got {cfg.n_events}/{cfg.events_per_file}")
    paths = simulate_files(cfg)
    write_config(Path(cfg.out) / "simulate.config.yaml", cfg)
    return paths
