"""Generator-level physics for the toy tracker: charged particles of J/psi, QCD multijet and H -> tau tau events.

Every process returns flat arrays over the charged particles of its hard scatter (one row per particle, ordered
by event): event index, pT (GeV), eta, phi, charge, vertex z (cm). Kinematics are plausible, not a physics
generator. The underlying event and pile-up are added by `cmsdl.sim.tracker` in the same way for every process,
so that the processes differ in topology, not in the number of hits they leave.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Particles = dict[str, np.ndarray]
MUON_MASS, TAU_MASS, JPSI_MASS = 0.10566, 1.77686, 3.0969
MAX_ETA = 2.5


def _particles(event: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, charge: np.ndarray,
               z0: np.ndarray) -> Particles:
    return {"event": event.astype(np.int64), "pt": pt, "eta": eta, "phi": _wrap(phi), "charge": charge.astype(np.int8),
            "z0": z0}


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def concat(parts: list[Particles]) -> Particles:
    """Particles of several sources, re-ordered by event (stable, so each source keeps its order)."""
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(merged["event"], kind="stable")
    return {key: value[order] for key, value in merged.items()}


def p4(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray | float) -> np.ndarray:
    """Four-vectors (E, px, py, pz), shape (n, 4)."""
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + np.asarray(mass) ** 2)
    return np.stack([energy, px, py, pz], axis=1)


def pt_eta_phi(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(vec[:, 1], vec[:, 2])
    return pt, np.arcsinh(vec[:, 3] / np.maximum(pt, 1e-9)), np.arctan2(vec[:, 2], vec[:, 1])


def two_body_decay(rng: np.random.Generator, parent: np.ndarray, daughter_mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic decays of parents (n, 4) into two equal-mass daughters, boosted to the lab frame."""
    n = len(parent)
    mass = np.sqrt(np.maximum(parent[:, 0] ** 2 - (parent[:, 1:] ** 2).sum(axis=1), 0))
    p_star = np.sqrt(np.maximum(mass**2 / 4 - daughter_mass**2, 0))
    cos_t, phi = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    e_star = np.sqrt(p_star**2 + daughter_mass**2)
    beta = parent[:, 1:] / parent[:, :1]
    gamma = parent[:, 0] / np.maximum(mass, 1e-9)
    out = []
    for sign in (1.0, -1.0):
        p = sign * p_star[:, None] * direction
        bp = (beta * p).sum(axis=1)
        coef = gamma**2 / (gamma + 1) * bp + gamma * e_star
        out.append(np.column_stack([gamma * (e_star + bp), p + coef[:, None] * beta]))
    return out[0], out[1]


def resonance(rng: np.random.Generator, n: int, mass: float, pt_mean: float, pt_min: float,
              y_max: float) -> np.ndarray:
    """Four-vectors of n resonances with exponential pT and flat rapidity."""
    pt = pt_min + rng.exponential(pt_mean, n)
    y, phi = rng.uniform(-y_max, y_max, n), rng.uniform(-np.pi, np.pi, n)
    mt = np.sqrt(pt**2 + mass**2)
    return np.column_stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)])


def soft_particles(rng: np.random.Generator, event: np.ndarray, z0: np.ndarray, pt_slope: float = 0.45,
                   cluster_size: int = 1, cluster_spread: float = 0.3) -> Particles:
    """One soft charged particle (pT ~ 0.15 GeV + Exp(`pt_slope`)) per entry of `event` (grouped by event).

    With `cluster_size` > 1, consecutive particles of an event come in mini-jets of that many, spread by
    `cluster_spread` in eta and phi around a direction flat in eta and phi; with 1 each particle is on its own.
    """
    n = len(event)
    starts = np.flatnonzero(np.r_[True, event[1:] != event[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    opens_cluster = rank % cluster_size == 0
    cluster = np.cumsum(opens_cluster) - 1
    n_clusters = int(opens_cluster.sum())
    centre_eta, centre_phi = rng.uniform(-MAX_ETA, MAX_ETA, n_clusters), rng.uniform(-np.pi, np.pi, n_clusters)
    spread = cluster_spread if cluster_size > 1 else 0.0
    pt = 0.15 + rng.exponential(pt_slope, n)
    eta = centre_eta[cluster] + spread * rng.normal(0, 1, n)
    phi = centre_phi[cluster] + spread * rng.normal(0, 1, n)
    return _particles(event, pt, eta, phi, rng.choice(np.array([-1, 1]), n), z0)


def underlying_event(rng: np.random.Generator, n_events: int, mean: float, z0: np.ndarray) -> Particles:
    """Soft charged particles of the rest of the collision: a broad (gamma-Poisson) multiplicity."""
    counts = rng.poisson(rng.gamma(2.0, mean / 2.0, n_events))
    event = np.repeat(np.arange(n_events), counts)
    return soft_particles(rng, event, z0[event])


def pileup(rng: np.random.Generator, n_events: int, mean_interactions: float, tracks_per_interaction: float) -> Particles:
    """Extra minimum-bias interactions, each at its own vertex along the beam line."""
    n_vertices = rng.poisson(mean_interactions, n_events)
    vertex_event = np.repeat(np.arange(n_events), n_vertices)
    soft = underlying_event(rng, len(vertex_event), tracks_per_interaction, rng.normal(0, 5.0, len(vertex_event)))
    soft["event"] = vertex_event[soft["event"]]
    return soft


def jpsi(rng: np.random.Generator, n_events: int, z0: np.ndarray, **_: float) -> Particles:
    """J/psi -> mu+ mu-: two muons of a few GeV."""
    mu1, mu2 = two_body_decay(rng, resonance(rng, n_events, JPSI_MASS, 6.0, 3.0, 2.4), MUON_MASS)
    event = np.arange(n_events)
    return concat([_particles(event, *pt_eta_phi(m), np.full(n_events, q), z0) for m, q in ((mu1, 1), (mu2, -1))])


def qcd(rng: np.random.Generator, n_events: int, z0: np.ndarray, jet_pt_min: float = 25.0,
        n_jets_mean: float = 0.6, **_: float) -> Particles:
    """Multijet events: 2-4 jets (2 + Poisson(`n_jets_mean`) extra) with a steeply falling pT spectrum, each a
    collimated spray of soft tracks.

    With a negative `n_jets_mean` it makes initial-state radiation for other processes: 0-2 softer jets.
    """
    n_jets = np.minimum(2 + rng.poisson(n_jets_mean, n_events), 4) if n_jets_mean >= 0 else np.minimum(
        rng.poisson(-n_jets_mean, n_events), 2)
    jet_event = np.repeat(np.arange(n_events), n_jets)
    first = np.r_[0, np.cumsum(n_jets)[:-1]]
    rank = np.arange(len(jet_event)) - np.repeat(first, n_jets)
    jet_pt = np.minimum(jet_pt_min * (1 - rng.random(len(jet_event))) ** (-1 / 3.0), 600.0) / (1 + 0.6 * rank)
    phi_lead = np.repeat(rng.uniform(-np.pi, np.pi, n_events), n_jets)
    jet_phi = np.where(rank == 1, phi_lead + np.pi + rng.normal(0, 0.3, len(rank)), phi_lead + rng.uniform(-np.pi, np.pi, len(rank)))
    jet_phi = np.where(rank == 0, phi_lead, jet_phi)
    jet_eta = rng.uniform(-MAX_ETA, MAX_ETA, len(jet_event))
    n_charged = np.maximum(rng.poisson(3.0 + 2.5 * np.log(jet_pt)), 2)
    owner = np.repeat(np.arange(len(jet_event)), n_charged)
    share = rng.exponential(1.0, len(owner))
    share /= np.bincount(owner, share)[owner]
    pt = np.maximum(0.6 * jet_pt[owner] * share, 0.3)
    spread = 0.4 / np.sqrt(pt)
    event = jet_event[owner]
    jets = _particles(event, pt, jet_eta[owner] + rng.normal(0, 1, len(owner)) * np.minimum(spread, 0.3),
                      jet_phi[owner] + rng.normal(0, 1, len(owner)) * np.minimum(spread, 0.3),
                      rng.choice(np.array([-1, 1]), len(owner)), z0[event])
    return jets


def higgs(rng: np.random.Generator, n_events: int, z0: np.ndarray, higgs_mass: float = 125.0,
          **_: float) -> Particles:
    """H -> tau+ tau-; each tau decays to 1 charged track (leptonic or 1-prong) or 3 (3-prong), neutrinos unseen.

    A gluon-fusion process, so it comes with initial-state radiation: 0-2 softer jets.
    """
    tau1, tau2 = two_body_decay(rng, resonance(rng, n_events, higgs_mass, 25.0, 0.0, 2.2), TAU_MASS)
    taus = np.concatenate([tau1, tau2])
    tau_event = np.tile(np.arange(n_events), 2)
    tau_charge = np.repeat([1, -1], n_events)
    three_prong = rng.random(len(taus)) < 0.15
    n_prongs = np.where(three_prong, 3, 1)
    owner = np.repeat(np.arange(len(taus)), n_prongs)
    visible = np.where(three_prong, rng.uniform(0.4, 1.0, len(taus)), rng.uniform(0.15, 1.0, len(taus)))
    share = rng.exponential(1.0, len(owner))
    share /= np.bincount(owner, share)[owner]
    tau_pt, tau_eta, tau_phi = pt_eta_phi(taus)
    momentum = np.linalg.norm(taus[:, 1:], axis=1)
    spread = np.where(three_prong, TAU_MASS / np.maximum(momentum, 2.0), 0.0)[owner]
    prong = np.arange(len(owner)) - np.repeat(np.r_[0, np.cumsum(n_prongs)[:-1]], n_prongs)
    charge = np.where(three_prong[owner] & (prong == 1), -tau_charge[owner], tau_charge[owner])
    event = tau_event[owner]
    prongs = _particles(event, np.maximum(tau_pt[owner] * visible[owner] * share, 0.3),
                        tau_eta[owner] + rng.normal(0, 1, len(owner)) * spread,
                        tau_phi[owner] + rng.normal(0, 1, len(owner)) * spread, charge, z0[event])
    isr = qcd(rng, n_events, z0, jet_pt_min=10.0, n_jets_mean=-0.6)
    return concat([prongs, isr])


PROCESSES: dict[str, Callable[..., Particles]] = {"jpsi": jpsi, "qcd": qcd, "higgs": higgs}
