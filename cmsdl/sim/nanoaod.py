"""`cmsdl simulate-top`: toy NanoAOD for a top-quark tagger. Signal is all-hadronic t tbar (t → b W, W → q q'),
background QCD multijet production; both go through the same parton shower, jet clustering and detector model.

Output, one file per process and block of events: `<out>/ttbar_<NNN>.root` (signal) and `<out>/qcd_<NNN>.root`
(background), each with the tree `Events` and NanoAOD branch names and types:

    run                 uint32    always 1
    luminosityBlock     uint32    1 + (event - 1) // 1000
    event               uint64    1, 2, 3, ... unique and increasing within a process
    nJet                int32     number of jets (the counter of every Jet_* branch)
    Jet_pt              float32[] GeV, sorted descending, above jet_pt_min (20)
    Jet_eta, Jet_phi    float32[] |eta| below jet_eta_max (2.5); phi in [-pi, pi]
    Jet_mass            float32[] GeV
    Jet_btagDeepFlavB   float32[] b-tag discriminant in [0, 1]; > 0.3: ~70% of b, ~16% of c, ~2% of light jets
    Jet_hadronFlavour   int32[]   truth: 5 b, 4 c, 0 light or gluon
    MET_pt, MET_phi     float32   GeV; from b/c semileptonic neutrinos and jet mismeasurement
    PV_npvs             int32     number of primary vertices, Poisson(pileup)
    genWeight           float32   1 for ttbar; for qcd (HT_gen / 250 GeV)^-3 with HT_gen the scalar pt sum of the
                                  generated partons: generated like pt_hat^-4.5 (overlapping the signal's HT),
                                  weighted the spectrum falls like a physical one, about pt_hat^-7.5

Example::

    cmsdl simulate-top out=data/top n_events=20000 events_per_file=5000 seed=1
    >>> events = uproot.open("data/top/ttbar_000.root")["Events"].arrays(entry_stop=1)
    >>> events.nJet[0], events.Jet_pt[0], events.Jet_hadronFlavour[0]
    (7, [73.8, 65, 63.8, 50.9, 42.8, 26.8, 21.2], [5, 4, 4, 5, 0, 0, 0])
    >>> events.Jet_btagDeepFlavB[0]
    [0.12, 0.15, 0.13, 1, 0.01, 0.24, 0]

Physics: t tbar pairs (Breit-Wigner tops, m_tt above threshold, recoiling against ISR gluons) decay with proper
boosts, t → b W, W → u d or c s; QCD is a 2 → 2 scattering with hard wide-angle branchings (4-10 partons, a few %
with g → b b). Then final-state branchings (momentum conserving), clustering of partons closer than ΔR 0.4,
semileptonic b/c neutrinos, jet masses, sigma/E = N/E ⊕ 100%/sqrt(E) ⊕ 5% and pile-up jets.

Vectorised over whole blocks of events (padded arrays of partons, no per-event Python loop); deterministic for a
given seed: file k of a process always holds the same events, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from cmsdl.errors import ConfigError, closest

PROCESS_CODES = {"ttbar": 0, "qcd": 1}
EVENTS_PER_LUMI = 1000
TOP_MASS, TOP_WIDTH, W_MASS, W_WIDTH, B_MASS = 172.5, 1.4, 80.4, 2.1, 4.8   # GeV
JET_RADIUS = 0.4            # anti-kT-like distance parameter of the clustering
MET_ETA_MAX = 4.7           # jets beyond are not measured (they add to MET)
ISR_PT_MIN = 15.0           # GeV, softest initial-state parton generated
QCD_PT_HAT_MIN, QCD_PT_HAT_INDEX = 115.0, 4.5   # generated pt_hat ~ pt^-4.5 above 115 GeV
QCD_HT_REF, QCD_WEIGHT_INDEX = 250.0, 3.0       # genWeight = (HT_gen / 250)^-3
# branchings: (smallest momentum share of the softer daughter, opening angle range in ΔR), both log-uniform;
# soft and often collinear for final-state radiation, hard and wide for the extra jets of QCD multijet events
Branching = tuple[float, tuple[float, float]]
FSR: Branching = (0.05, (0.1, 1.5))
MULTIJET: Branching = (0.15, (0.4, 2.5))
P_GLUON_TO_BB, P_GLUON_TO_CC = 0.02, 0.04       # chance that a branching of a light parton is g → b b / c c
JET_FIELDS = {"pt": np.float32, "eta": np.float32, "phi": np.float32, "mass": np.float32,
              "btagDeepFlavB": np.float32, "hadronFlavour": np.int32}


@dataclass
class Partons:
    """Padded partons (or jets) of a block of events: p4 (events, slots, 4) = E, px, py, pz in GeV."""

    p4: np.ndarray
    flav: np.ndarray
    ok: np.ndarray

    def padded(self, slots: int) -> Partons:
        """The same partons with at least `slots` slots per event (the new ones empty)."""
        extra = max(slots - self.ok.shape[1], 0)
        return Partons(np.pad(self.p4, ((0, 0), (0, extra), (0, 0))), np.pad(self.flav, ((0, 0), (0, extra))),
                       np.pad(self.ok, ((0, 0), (0, extra))))

    def join(self, other: Partons) -> Partons:
        """These partons followed by `other`'s, event by event."""
        return Partons(np.concatenate([self.p4, other.p4], axis=1), np.concatenate([self.flav, other.flav], axis=1),
                       np.concatenate([self.ok, other.ok], axis=1))


def four_vector(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """(E, px, py, pz) from pt, eta, phi, mass, stacked on a last axis of length 4."""
    pz = pt * np.sinh(eta)
    return np.stack([np.sqrt(pt**2 + pz**2 + mass**2), pt * np.cos(phi), pt * np.sin(phi), pz], axis=-1)


def pt_eta_phi_m(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pt, eta, phi, mass of four-vectors (eta 0 for empty ones)."""
    pt = np.hypot(p4[..., 1], p4[..., 2])
    eta = np.arcsinh(np.divide(p4[..., 3], pt, out=np.zeros_like(pt), where=pt > 0))
    mass2 = p4[..., 0] ** 2 - np.sum(p4[..., 1:] ** 2, axis=-1)
    return pt, eta, np.arctan2(p4[..., 2], p4[..., 1]), np.sqrt(np.maximum(mass2, 0.0))


def boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lorentz boost of four-vectors by velocity `beta` (..., 3): rest frame of a moving system → lab."""
    b2 = np.sum(beta**2, axis=-1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p4[..., 1:], axis=-1)
    factor = np.divide(gamma - 1.0, b2, out=np.zeros_like(b2), where=b2 > 0) * bp + gamma * p4[..., 0]
    return np.concatenate([(gamma * (p4[..., 0] + bp))[..., None], p4[..., 1:] + factor[..., None] * beta], axis=-1)


def velocity(p4: np.ndarray) -> np.ndarray:
    """beta = p / E of four-vectors."""
    return p4[..., 1:] / p4[..., :1]


def breit_wigner(rng: np.random.Generator, mass: float, width: float, n: int, window: float = 10.0) -> np.ndarray:
    """Masses from a Breit-Wigner (Cauchy) line shape, truncated to mass ± window × width."""
    lo, hi = (np.arctan(2 * s * window) / np.pi + 0.5 for s in (-1, 1))
    return mass + width / 2 * np.tan(np.pi * (rng.uniform(lo, hi, n) - 0.5))


def power_law(rng: np.random.Generator, size: Any, x_min: float, index: float, x_max: float = 6500.0) -> np.ndarray:
    """Values above x_min distributed as x^-index (capped at x_max)."""
    return np.minimum(x_min * rng.random(size) ** (-1.0 / (index - 1.0)), x_max)


def back_to_back(mass: np.ndarray, m1: Any, m2: Any, cos_theta: np.ndarray,
                 phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two daughters of a decay at rest, the first along (cos_theta, phi)."""
    p = np.sqrt(np.maximum((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2), 0.0)) / (2 * mass)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    direction = np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=-1) * p[:, None]
    d1 = np.concatenate([np.sqrt(p**2 + m1**2)[:, None], direction], axis=-1)
    d2 = np.concatenate([np.sqrt(p**2 + m2**2)[:, None], -direction], axis=-1)
    return d1, d2


def decay(rng: np.random.Generator, parent: np.ndarray, mass: np.ndarray, m1: Any,
          m2: Any) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of moving parents (lab four-vectors of the given masses): lab daughters."""
    n = len(mass)
    d1, d2 = back_to_back(mass, m1, m2, rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n))
    beta = velocity(parent)
    return boost(d1, beta), boost(d2, beta)


def system_velocity(mass: np.ndarray, recoil: np.ndarray, rapidity: np.ndarray) -> np.ndarray:
    """Velocity of a hard system of the given mass, transverse momentum `recoil` (n, 2) and rapidity."""
    mt = np.sqrt(mass**2 + np.sum(recoil**2, axis=-1))
    energy, pz = mt * np.cosh(rapidity), mt * np.sinh(rapidity)
    return np.concatenate([recoil, pz[:, None]], axis=-1) / energy[:, None]


def initial_state_radiation(rng: np.random.Generator, counts: np.ndarray, slots: int) -> Partons:
    """Up to `slots` massless gluons per event, falling pt above ISR_PT_MIN and a wide rapidity spread."""
    n = len(counts)
    pt = power_law(rng, (n, slots), ISR_PT_MIN, 2.6, 500.0)
    p4 = four_vector(pt, rng.normal(0.0, 1.8, (n, slots)), rng.uniform(-np.pi, np.pi, (n, slots)), 0.0)
    ok = np.arange(slots)[None, :] < counts[:, None]
    return Partons(p4 * ok[..., None], np.zeros((n, slots), np.int32), ok)


def ttbar_partons(rng: np.random.Generator, n: int) -> tuple[Partons, np.ndarray, np.ndarray]:
    """Six decay partons (b q q' twice) plus ISR gluons; the number of FSR branchings; genWeight (1)."""
    isr = initial_state_radiation(rng, np.minimum(rng.poisson(1.5, n), 4), 4)
    m_t1, m_t2 = breit_wigner(rng, TOP_MASS, TOP_WIDTH, n), breit_wigner(rng, TOP_MASS, TOP_WIDTH, n)
    m_tt = m_t1 + m_t2 + rng.gamma(1.6, 90.0, n)
    t1, t2 = back_to_back(m_tt, m_t1, m_t2, rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n))
    beta = system_velocity(m_tt, -isr.p4[..., 1:3].sum(axis=1), rng.normal(0.0, 0.9, n))
    partons, flavours = [], []
    for top, m_top in ((boost(t1, beta), m_t1), (boost(t2, beta), m_t2)):
        m_w = breit_wigner(rng, W_MASS, W_WIDTH, n)
        b, w = decay(rng, top, m_top, B_MASS, m_w)
        q1, q2 = decay(rng, w, m_w, 0.0, 0.0)
        charm = rng.random(n) < 0.5                     # W → c s half of the time, else u d
        partons += [b, q1, q2]
        flavours += [np.full(n, 5), np.where(charm, 4, 0), np.zeros(n, int)]
    hard = Partons(np.stack(partons, axis=1), np.stack(flavours, axis=1).astype(np.int32), np.ones((n, 6), bool))
    return hard.join(isr), np.minimum(rng.poisson(1.2, n), 4), np.ones(n)


def qcd_partons(rng: np.random.Generator, n: int) -> tuple[Partons, np.ndarray, np.ndarray]:
    """A 2 → 2 scattering plus ISR gluons, 4-10 partons after the shower; the branchings; genWeight from HT_gen."""
    n_partons = np.minimum(4 + rng.poisson(3.5, n), 10)
    isr = initial_state_radiation(rng, np.minimum(rng.poisson(1.2, n), n_partons - 2), 4)
    pt_hat = power_law(rng, n, QCD_PT_HAT_MIN, QCD_PT_HAT_INDEX)
    y_star = 0.5 * np.log(rng.uniform(1.0, 10.0, n)) * rng.choice([-1.0, 1.0], n)   # chi = exp(2|y*|) flat
    m_hat = 2 * pt_hat * np.cosh(y_star)
    p1, p2 = back_to_back(m_hat, 0.0, 0.0, np.tanh(y_star), rng.uniform(-np.pi, np.pi, n))
    beta = system_velocity(m_hat, -isr.p4[..., 1:3].sum(axis=1), rng.normal(0.0, 0.8, n))
    u = rng.random((n, 2))
    flav = np.where(u < 0.025, 5, np.where(u < 0.085, 4, 0)).astype(np.int32)   # b / c flavour excitation
    hard = Partons(np.stack([boost(p1, beta), boost(p2, beta)], axis=1), flav, np.ones((n, 2), bool))
    both = hard.join(isr)
    ht_gen = pt_eta_phi_m(both.p4)[0].sum(axis=1)
    return both, n_partons - 2 - isr.ok.sum(axis=1), (ht_gen / QCD_HT_REF) ** -QCD_WEIGHT_INDEX


PROCESSES = {"ttbar": ttbar_partons, "qcd": qcd_partons}


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """n values spread evenly in log between lo and hi."""
    return lo * (hi / lo) ** rng.random(n)


def branch(rng: np.random.Generator, partons: Partons, rows: np.ndarray, kind: Branching) -> None:
    """One branching in each event of `rows`: a parton chosen ∝ pt → two, momentum conserved (in place)."""
    p4, ok, n = partons.p4[rows], partons.ok[rows], len(rows)
    pt = np.hypot(p4[..., 1], p4[..., 2]) * ok
    cumulative = np.cumsum(pt, axis=1)
    j = np.minimum((cumulative < (rng.random(n) * cumulative[:, -1])[:, None]).sum(axis=1), ok.shape[1] - 1)
    slot = np.argmin(ok, axis=1)
    p = p4[np.arange(n), j, 1:]
    pt_parent = np.hypot(p[:, 0], p[:, 1])
    z = log_uniform(rng, kind[0], 0.5, n)
    kt = z * (1 - z) * log_uniform(rng, *kind[1], n) * pt_parent      # opening angle ΔR ≈ kt / (z (1-z) pt)
    e1 = np.stack([p[:, 1], -p[:, 0], np.zeros(n)], axis=-1) / pt_parent[:, None]
    e2 = np.cross(p / np.linalg.norm(p, axis=-1, keepdims=True), e1)
    psi = rng.uniform(-np.pi, np.pi, n)
    k = kt[:, None] * (np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2)
    soft, hard = z[:, None] * p + k, (1 - z)[:, None] * p - k
    parent_flav = partons.flav[rows, j]
    u = rng.random(n)
    pair = np.select([parent_flav > 0, u < P_GLUON_TO_BB, u < P_GLUON_TO_BB + P_GLUON_TO_CC], [0, 5, 4], 0)
    partons.p4[rows, j] = np.concatenate([np.linalg.norm(hard, axis=-1, keepdims=True), hard], axis=-1)
    partons.p4[rows, slot] = np.concatenate([np.linalg.norm(soft, axis=-1, keepdims=True), soft], axis=-1)
    partons.flav[rows, j] = np.where(pair > 0, pair, parent_flav)
    partons.flav[rows, slot] = pair
    partons.ok[rows, slot] = True


def shower(rng: np.random.Generator, partons: Partons, n_branch: np.ndarray, kind: Branching) -> Partons:
    """n_branch[i] successive branchings in event i, of the given kind (FSR or MULTIJET)."""
    partons = partons.padded(int(partons.ok.sum(axis=1).max(initial=0) + n_branch.max(initial=0)) + 1)
    for step in range(int(n_branch.max(initial=0))):
        branch(rng, partons, np.flatnonzero(n_branch > step), kind)
    return partons


def cluster(partons: Partons, radius: float = JET_RADIUS) -> Partons:
    """Jets: repeatedly merge the closest pair of an event while it is nearer than `radius` in (eta, phi)."""
    p4, flav, ok = partons.p4.copy(), partons.flav.copy(), partons.ok.copy()
    slots = ok.shape[1]
    upper = np.triu(np.ones((slots, slots), bool), k=1)
    for _ in range(slots - 1):
        _, eta, phi, _ = pt_eta_phi_m(p4)
        dphi = (phi[:, :, None] - phi[:, None, :] + np.pi) % (2 * np.pi) - np.pi
        both = upper & ok[:, :, None] & ok[:, None, :]
        dr2 = np.where(both, (eta[:, :, None] - eta[:, None, :]) ** 2 + dphi**2, np.inf)
        nearest = dr2.reshape(len(ok), -1).argmin(axis=1)
        rows = np.flatnonzero(dr2.reshape(len(ok), -1)[np.arange(len(ok)), nearest] < radius**2)
        if not len(rows):
            break
        i, j = np.divmod(nearest[rows], slots)
        p4[rows, i] += p4[rows, j]
        flav[rows, i] = np.maximum(flav[rows, i], flav[rows, j])
        p4[rows, j], ok[rows, j] = 0.0, False
    return Partons(p4, flav, ok)


def neutrino_loss(rng: np.random.Generator, jets: Partons) -> np.ndarray:
    """Jets after semileptonic b and c decays: a neutrino takes a share of the jet's momentum (it adds to MET)."""
    u = rng.random(jets.ok.shape)
    decays = ((jets.flav == 5) & (u < 0.35)) | ((jets.flav == 4) & (u < 0.2))
    share = np.where(decays, rng.beta(1.5, 6.0, jets.ok.shape), 0.0)
    return jets.p4 * (1.0 - share)[..., None]


def hadronise(rng: np.random.Generator, p4: np.ndarray) -> np.ndarray:
    """Give jets a mass ~13% of their pt (at fixed energy and direction), as hadronisation spreads them."""
    energy = p4[..., 0]
    pt, _, _, mass = pt_eta_phi_m(p4)
    share = np.clip(rng.normal(0.13, 0.04, energy.shape), 0.03, 0.35)
    mass = np.minimum(np.hypot(mass, share * pt), 0.5 * energy)
    momentum = np.linalg.norm(p4[..., 1:], axis=-1)
    scale = np.divide(np.sqrt(energy**2 - mass**2), momentum, out=np.zeros_like(momentum), where=momentum > 0)
    return np.concatenate([energy[..., None], p4[..., 1:] * scale[..., None]], axis=-1)


def measure(rng: np.random.Generator, p4: np.ndarray, npvs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Detector response: sigma/E = noise/E ⊕ 100%/sqrt(E) ⊕ 5% (noise from pile-up), angles smeared by 0.02."""
    energy = np.maximum(p4[..., 0], 1e-9)
    noise = 0.4 * np.sqrt(npvs)[:, None]
    sigma = np.sqrt((noise / energy) ** 2 + 1.0 / energy + 0.05**2)
    response = np.maximum(rng.normal(1.0, sigma), 0.1)
    pt, eta, phi, mass = pt_eta_phi_m(p4 * response[..., None])
    eta = eta + rng.normal(0.0, 0.02, eta.shape)
    phi = (phi + rng.normal(0.0, 0.02, phi.shape) + np.pi) % (2 * np.pi) - np.pi
    return pt, eta, phi, mass


def missing_pt(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
               npvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MET_pt, MET_phi: minus the vector sum of the measured jets (|eta| < 4.7) plus an unclustered soft term."""
    seen = np.abs(eta) < MET_ETA_MAX
    soft = np.sqrt(25.0 + 0.5 * npvs)[:, None]
    met = -np.stack([(pt * np.cos(phi) * seen).sum(axis=1), (pt * np.sin(phi) * seen).sum(axis=1)], axis=-1)
    met = met + rng.normal(0.0, 1.0, met.shape) * soft
    return np.hypot(met[:, 0], met[:, 1]), np.arctan2(met[:, 1], met[:, 0])


def pileup_jets(rng: np.random.Generator, npvs: np.ndarray, slots: int = 3) -> tuple[np.ndarray, ...]:
    """Soft jets from pile-up interactions, 0.01 per vertex: pt, eta, phi, mass, ok (light flavour)."""
    n = len(npvs)
    ok = np.arange(slots)[None, :] < np.minimum(rng.poisson(0.01 * npvs), slots)[:, None]
    pt = power_law(rng, (n, slots), 15.0, 4.0, 200.0)
    return pt, rng.uniform(-4.7, 4.7, (n, slots)), rng.uniform(-np.pi, np.pi, (n, slots)), 0.12 * pt, ok


def btag_discriminant(rng: np.random.Generator, flav: np.ndarray) -> np.ndarray:
    """DeepJet-like b-tag score: peaked near 1 for b jets, near 0 for light jets, charm in between."""
    tagged = 1.0 - rng.beta(0.35, 6.0, flav.shape)
    share = np.select([flav == 5, flav == 4], [0.64, 0.04], 0.018)
    body = np.select([flav == 5, flav == 4], [rng.beta(0.9, 4.0, flav.shape), rng.beta(0.8, 5.0, flav.shape)],
                     rng.beta(0.35, 14.0, flav.shape))
    return np.where(rng.random(flav.shape) < share, tagged, body)


def jet_record(columns: dict[str, np.ndarray], keep: np.ndarray) -> ak.Array:
    """Jagged jets from padded (events, slots) columns: the kept ones, sorted by pt descending."""
    order = np.argsort(np.where(keep, -columns["pt"], np.inf), axis=1, kind="stable")
    kept = np.take_along_axis(keep, order, axis=1)
    counts = keep.sum(axis=1)
    return ak.zip({name: ak.unflatten(np.take_along_axis(columns[name], order, axis=1)[kept].astype(dtype), counts)
                   for name, dtype in JET_FIELDS.items()})


def check_process(process: str) -> None:
    """A ConfigError naming the closest known process when `process` is not one."""
    if process not in PROCESSES:
        hint = closest(str(process), PROCESSES)
        raise ConfigError(f"processes: unknown process {process!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected some of {', '.join(PROCESSES)}")


def reconstruct(rng: np.random.Generator, jets: Partons, npvs: np.ndarray, jet_pt_min: float,
                jet_eta_max: float) -> tuple[ak.Array, np.ndarray, np.ndarray]:
    """Measured jets in acceptance (pile-up jets added, b tags drawn), sorted by pt; MET_pt and MET_phi."""
    pt, eta, phi, mass = measure(rng, hadronise(rng, neutrino_loss(rng, jets)), npvs)
    pt, eta = pt * jets.ok, np.where(jets.ok, eta, 99.0)
    met_pt, met_phi = missing_pt(rng, pt, eta, phi, npvs)
    *pileup, pileup_ok = pileup_jets(rng, npvs)
    columns = {name: np.concatenate([a, b], axis=1)
               for name, a, b in zip(("pt", "eta", "phi", "mass"), (pt, eta, phi, mass), pileup)}
    columns["hadronFlavour"] = np.concatenate([jets.flav, np.zeros_like(pileup_ok, np.int32)], axis=1)
    columns["btagDeepFlavB"] = btag_discriminant(rng, columns["hadronFlavour"])
    keep = np.concatenate([jets.ok, pileup_ok], axis=1) & (columns["pt"] > jet_pt_min)
    return jet_record(columns, keep & (np.abs(columns["eta"]) < jet_eta_max)), met_pt, met_phi


def event_ids(first_event: int, n_events: int) -> dict[str, np.ndarray]:
    """run (1), luminosityBlock (EVENTS_PER_LUMI events each) and event (first_event + 1, ...)."""
    event = np.arange(first_event + 1, first_event + n_events + 1, dtype=np.uint64)
    return {"run": np.ones(n_events, np.uint32), "event": event,
            "luminosityBlock": (1 + (event - 1) // EVENTS_PER_LUMI).astype(np.uint32)}


def simulate_events(process: str, n_events: int, seed: int | Sequence[int], jet_pt_min: float = 20.0,
                    jet_eta_max: float = 2.5, pileup: float = 30.0, first_event: int = 0) -> dict[str, Any]:
    """n_events of one process as NanoAOD branches (Jet as one awkward record array), ready for uproot."""
    check_process(process)
    rng = np.random.default_rng(seed)
    partons, n_branch, weight = PROCESSES[process](rng, n_events)
    jets = cluster(shower(rng, partons, n_branch, FSR if process == "ttbar" else MULTIJET))
    npvs = rng.poisson(pileup, n_events)
    jet, met_pt, met_phi = reconstruct(rng, jets, npvs, jet_pt_min, jet_eta_max)
    ids = event_ids(first_event, n_events)
    return {"run": ids["run"], "luminosityBlock": ids["luminosityBlock"], "event": ids["event"], "Jet": jet,
            "MET_pt": met_pt.astype(np.float32), "MET_phi": met_phi.astype(np.float32),
            "PV_npvs": npvs.astype(np.int32), "genWeight": weight.astype(np.float32)}


def write_root(path: Path, events: dict[str, Any]) -> None:
    """Write one block of events as the tree `Events`, atomically (temporary name beside it, then renamed)."""
    import uproot

    from cmsdl.io import atomic_path

    types = {k: ak.type(v).content if isinstance(v, ak.Array) else v.dtype for k, v in events.items()}
    with atomic_path(path, ".root") as tmp, uproot.recreate(tmp) as f:
        f.mktree("Events", types, title="Events").extend(events)


def simulate_files(cfg: Any) -> list[Path]:
    """Write cfg.n_events events per process in files of cfg.events_per_file; existing files are kept (resume)."""
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    n_events, per_file = int(cfg.n_events), int(cfg.events_per_file)
    jobs = [(process, k) for process in cfg.processes for k in range(-(-n_events // per_file))]
    written, n_done, start = [], 0, time.perf_counter()
    for process, k in tqdm(jobs, desc="simulate-top", unit="file", disable=not cfg.progress):
        path = out / f"{process}_{k:03d}.root"
        n = min(per_file, n_events - k * per_file)
        written.append(path)
        if path.is_file() and not cfg.overwrite:
            continue
        events = simulate_events(process, n, (int(cfg.seed), PROCESS_CODES[process], k), float(cfg.jet_pt_min),
                                 float(cfg.jet_eta_max), float(cfg.pileup), first_event=k * per_file)
        write_root(path, events)
        n_done += n
    seconds = time.perf_counter() - start
    rate = f", {n_done / seconds:.0f} events/s" if n_done else " (all files existed; overwrite=true redoes them)"
    print(f"simulated {n_done} events into {len(written)} files in {out}{rate}")
    return written


def _number(cfg: Any, key: str, kind: type, low: float, high: float = float("inf")) -> None:
    """A ConfigError unless cfg[key] is a `kind` in [low, high]."""
    value = cfg[key]
    try:
        ok = not isinstance(value, bool) and kind(value) == float(value) and low <= kind(value) <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = "an integer" if kind is int else "a number"
        bounds = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
        raise ConfigError(f"{key}: expected {what} {bounds}, got {value!r}")


def check_config(cfg: Any) -> None:
    """Every setting in range, or one ConfigError that names it."""
    if isinstance(cfg.processes, str) or not cfg.processes:
        raise ConfigError(f"processes: expected a list such as [ttbar, qcd] (processes=[ttbar] for one), "
                          f"got {cfg.processes!r}")
    for process in cfg.processes:
        check_process(process)
    _number(cfg, "n_events", int, 1)
    _number(cfg, "events_per_file", int, 1)
    _number(cfg, "seed", int, 0)
    _number(cfg, "jet_pt_min", float, 0.0, 1000.0)
    _number(cfg, "jet_eta_max", float, 0.1, MET_ETA_MAX)
    _number(cfg, "pileup", float, 0.0, 300.0)
    for key in ("overwrite", "progress"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key}: expected true or false, got {cfg[key]!r}")


def run(cfg: Any) -> list[Path]:
    """`cmsdl simulate-top`: check the config, write the ROOT files and the config used beside them."""
    from cmsdl.io import write_config

    check_config(cfg)
    paths = simulate_files(cfg)
    write_config(Path(cfg.out) / "simulate_top.config.yaml", cfg)
    return paths
