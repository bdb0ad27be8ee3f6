"""Synthetic CMS production workflows with realistic errors, for training and tests without CMS data.

Each workflow has one dominant failure cause (sometimes two), which decides which exit codes appear, whether
they sit at one or two (often bad) sites or spread over all sites the workflow ran at, and how an operator
would most likely react. The action is drawn from that tendency and then flipped with `label_noise`, so the
task is learnable but not trivial. Output follows :mod:`cmsdl.features.workflows.records`. Imports no torch.

With ``snapshots=N`` it writes a weekly history instead (read by :mod:`cmsdl.features.workflows.history`): one document
per week, named ``workflows-YYYY-MM-DD.json`` and holding ``"date"``; each week ``carry_over`` of the previous
week's workflows are still failing (same name, causes and action, new errors and site statuses), the others are
new, and the error pattern drifts: cause frequencies and site badness follow a log-normal random walk (``drift``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.cms import NO_SITE, SITES
from cmsdl.errors import ConfigError
from cmsdl.features.workflows.records import ACTIONS, FORMAT

CAMPAIGNS = ("RunIIFall17wmLHEGS", "RunIIAutumn18DRPremix", "RunIISummer19UL17SIM", "Run3Summer22EEGS")
PWGS = ("HIG", "SUS", "EXO", "TOP", "SMP", "BPH", "B2G", "TSG")
TASK_STEPS = ("GENSIM", "DIGIPremix", "RECO", "MiniAOD", "NanoAOD")


@dataclass(frozen=True)
class Cause:
    """A failure cause: its exit codes (with weights), whether it is local to a site, and the usual reaction."""

    name: str
    codes: dict[int, float]
    local: bool
    action_logits: dict[str, float]
    weight: float


CAUSES: tuple[Cause, ...] = (
    Cause("input-file", {84: 3, 85: 3, 92: 2, 8020: 2, 8021: 1, 8028: 2}, True,
          {"acdc": 1.6, "clone": -0.4, "kill": -2.0, "resubmit": -1.0}, 0.26),
    Cause("stage-out", {60307: 4, 61202: 1, 99303: 2}, True,
          {"acdc": 1.2, "clone": -0.2, "kill": -2.5, "resubmit": 0.0}, 0.14),
    Cause("memory", {50660: 5, 71305: 2, 8004: 2, 134: 1}, False,
          {"acdc": -0.8, "clone": 1.3, "kill": -1.0, "resubmit": -0.5}, 0.24),
    Cause("wallclock", {50664: 4, 71304: 4}, False,
          {"acdc": 0.1, "clone": 0.5, "kill": -1.5, "resubmit": -0.5}, 0.20),
    Cause("crash", {139: 3, 8001: 4, 134: 1, 50110: 1}, False,
          {"acdc": -0.5, "clone": 0.3, "kill": 0.8, "resubmit": -1.0}, 0.16),
)


def _site_profile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per site: share of jobs it runs, probability of being 'bad', and whether its status is tracked."""
    tier = np.array([int(s[1]) for s in SITES])
    capacity = np.choose(tier, [6.0, 4.0, 1.5, 0.4]) * rng.lognormal(0, 0.3, len(SITES))
    p_bad = np.choose(tier, [0.02, 0.06, 0.12, 0.2]) * rng.lognormal(0, 0.5, len(SITES))
    tracked = tier < 3
    return capacity / capacity.sum(), np.clip(p_bad, 0, 0.6), tracked


@dataclass(frozen=True)
class _Draft:
    """What stays of a workflow from week to week: name, sites, causes, size, steps, and which sites are bad."""

    name: str
    sites: np.ndarray
    bad: np.ndarray
    causes: list[Cause]
    scale: float
    steps: tuple[str, ...]


def _check_actions(actions: tuple[str, ...]) -> None:
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or not actions:
        raise ConfigError(f"actions: expected a subset of {ACTIONS}, got {list(actions)}")


def simulate_workflows(
    n_workflows: int = 3000,
    seed: int = 1,
    label_noise: float = 0.1,
    actions: tuple[str, ...] = ("acdc", "clone", "kill"),
) -> dict[str, Any]:
    """A workflow document (see cmsdl.features.workflows.records) with `n_workflows` synthetic workflows."""
    _check_actions(actions)
    rng = np.random.default_rng(seed)
    share, p_bad, tracked = _site_profile(rng)
    workflows = [_workflow(i, rng, share, p_bad, tracked, label_noise, actions) for i in range(n_workflows)]
    return {"format": FORMAT, "generator": {"name": "cmsdl simulate-workflows", "seed": seed}, "workflows": workflows}


def _workflow(
    index: int,
    rng: np.random.Generator,
    share: np.ndarray,
    p_bad: np.ndarray,
    tracked: np.ndarray,
    label_noise: float,
    actions: tuple[str, ...],
    cause_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    return _with_action(_draft(index, rng, share, p_bad, cause_weights), rng, share, tracked, label_noise, actions)


def _with_action(
    draft: _Draft, rng: np.random.Generator, share: np.ndarray, tracked: np.ndarray, label_noise: float,
    actions: tuple[str, ...],
) -> dict[str, Any]:
    record = _render(draft, rng, share, tracked)
    record["action"] = _action(rng, draft.causes, float(draft.bad.mean()), label_noise, actions)
    return record


def _draft(
    index: int, rng: np.random.Generator, share: np.ndarray, p_bad: np.ndarray, cause_weights: np.ndarray | None
) -> _Draft:
    name = _workflow_name(index, rng)
    n_sites = int(rng.integers(2, 16))
    sites = rng.choice(len(SITES), size=n_sites, replace=False, p=share)
    bad = rng.random(n_sites) < p_bad[sites]
    causes = _pick_causes(rng, cause_weights)
    scale = rng.lognormal(2.0, 1.0)
    steps = TASK_STEPS[: int(rng.integers(1, len(TASK_STEPS) + 1))]
    return _Draft(name, sites, bad, causes, scale, steps)


def _render(draft: _Draft, rng: np.random.Generator, share: np.ndarray, tracked: np.ndarray) -> dict[str, Any]:
    """The workflow record (action still None): errors and site statuses of each task."""
    tasks = []
    for step in draft.steps:
        errors = _task_errors(rng, draft.causes, draft.sites, draft.bad, share, draft.scale / len(draft.steps))
        status = {SITES[s]: ("bad" if b else "good") for s, b in zip(draft.sites, draft.bad) if tracked[s]}
        tasks.append({"name": f"/{draft.name}/{step}", "errors": errors, "site_status": status})
    return {"name": draft.name, "action": None, "tasks": tasks}


def simulate_snapshots(
    n_snapshots: int,
    n_workflows: int = 3000,
    seed: int = 1,
    label_noise: float = 0.1,
    actions: tuple[str, ...] = ("acdc", "clone", "kill"),
    start_date: str = "2026-01-05",
    carry_over: float = 0.5,
    drift: float = 0.3,
) -> list[dict[str, Any]]:
    """`n_snapshots` weekly workflow documents with a "date", workflows carried over and a drifting error pattern."""
    _check_actions(actions)
    if not isinstance(n_snapshots, int) or n_snapshots < 1:
        raise ConfigError(f"snapshots: got {n_snapshots!r}, expected a positive number of weekly files, or null")
    if not 0 <= carry_over < 1:
        raise ConfigError(f"carry_over: got {carry_over!r}, expected a share in [0, 1)")
    try:
        first = date.fromisoformat(str(start_date))
    except ValueError:
        raise ConfigError(f"start_date: got {start_date!r}, expected a date YYYY-MM-DD") from None
    rng = np.random.default_rng(seed)
    share, p_bad, tracked = _site_profile(rng)
    weights = np.array([c.weight for c in CAUSES])
    carried: list[tuple[_Draft, str]] = []
    docs, next_index = [], 0
    for week in range(n_snapshots):
        if week:
            weights = weights * rng.lognormal(0, drift, len(weights))
            p_bad = np.clip(p_bad * rng.lognormal(0, drift, len(p_bad)), 0, 0.6)
        records = []
        for draft, action in carried:
            moved = replace(draft, bad=rng.random(len(draft.sites)) < p_bad[draft.sites])
            records.append((moved, {**_render(moved, rng, share, tracked), "action": action}))
        while len(records) < n_workflows:
            draft = _draft(next_index, rng, share, p_bad, weights)
            records.append((draft, _with_action(draft, rng, share, tracked, label_noise, actions)))
            next_index += 1
        keep = rng.random(len(records)) < carry_over
        carried = [(d, r["action"]) for (d, r), k in zip(records, keep) if k]
        day = (first + timedelta(days=7 * week)).isoformat()
        docs.append({"format": FORMAT, "date": day, "generator": {"name": "cmsdl simulate-workflows", "seed": seed,
                     "week": week}, "workflows": [r for _, r in records]})
    return docs


def _workflow_name(index: int, rng: np.random.Generator) -> str:
    pwg, campaign = PWGS[rng.integers(len(PWGS))], CAMPAIGNS[rng.integers(len(CAMPAIGNS))]
    date = f"{17 + rng.integers(0, 6):02d}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    return f"pdmvserv_task_{pwg}-{campaign}-{index:05d}__v1_T_{date}_{rng.integers(100000, 999999)}_{index % 10000:04d}"


def _pick_causes(rng: np.random.Generator, cause_weights: np.ndarray | None = None) -> list[Cause]:
    weights = np.array([c.weight for c in CAUSES]) if cause_weights is None else cause_weights
    first = int(rng.choice(len(CAUSES), p=weights / weights.sum()))
    if rng.random() < 0.3:
        second = int(rng.choice(len(CAUSES), p=weights / weights.sum()))
        if second != first:
            return [CAUSES[first], CAUSES[second]]
    return [CAUSES[first]]


def _task_errors(
    rng: np.random.Generator,
    causes: list[Cause],
    sites: np.ndarray,
    bad: np.ndarray,
    share: np.ndarray,
    scale: float,
) -> dict[str, dict[str, int]]:
    errors: dict[str, dict[str, int]] = {}
    for k, cause in enumerate(causes):
        strength = scale * (1.0 if k == 0 else 0.3)
        where = _cause_sites(rng, cause, sites, bad, share)
        codes = list(cause.codes)
        p_code = np.array(list(cause.codes.values()), dtype=float)
        for site in where:
            n_codes = int(rng.integers(1, min(3, len(codes)) + 1))
            for code in rng.choice(codes, size=n_codes, replace=False, p=p_code / p_code.sum()):
                count = int(rng.poisson(strength * rng.lognormal(0, 0.7)))
                if count:
                    _add(errors, int(code), SITES[site], count)
    for site in sites[rng.random(len(sites)) < 0.5]:
        _add(errors, -1, SITES[site], 1)
    if rng.random() < 0.15:
        _add(errors, 99305, NO_SITE, int(rng.integers(1, 100)))
    return errors


def _cause_sites(
    rng: np.random.Generator, cause: Cause, sites: np.ndarray, bad: np.ndarray, share: np.ndarray
) -> np.ndarray:
    """Local causes hit one or two sites, bad ones first; global causes hit most sites the workflow ran at."""
    if cause.local:
        weight = share[sites] * np.where(bad, 8.0, 1.0)
        n = min(len(sites), int(rng.integers(1, 3)))
        return rng.choice(sites, size=n, replace=False, p=weight / weight.sum())
    return sites[rng.random(len(sites)) < 0.8]


def _action(
    rng: np.random.Generator, causes: list[Cause], bad_share: float, label_noise: float, actions: tuple[str, ...]
) -> str:
    logits = np.array([sum(c.action_logits[a] * (1.0 if k == 0 else 0.4) for k, c in enumerate(causes)) for a in actions])
    if "acdc" in actions:
        logits[actions.index("acdc")] += 1.5 * bad_share
    p = np.exp(logits - logits.max())
    action = actions[int(rng.choice(len(actions), p=p / p.sum()))]
    if rng.random() < label_noise:
        action = actions[int(rng.integers(len(actions)))]
    return action


def _add(errors: dict[str, dict[str, int]], code: int, site: str, count: int) -> None:
    per_site = errors.setdefault(str(code), {})
    per_site[site] = per_site.get(site, 0) + count


def write_simulated_workflows(cfg: Any) -> Path:
    """Simulate cfg.n_workflows workflows and write them to cfg.out, with the config beside it."""
    from cmsdl.io import write_config, write_json

    if cfg.get("snapshots") is not None:
        return write_simulated_snapshots(cfg)
    doc = simulate_workflows(cfg.n_workflows, cfg.seed, cfg.label_noise, tuple(cfg.actions))
    out = Path(cfg.out)
    write_json(out, doc, indent=None)
    write_config(out.with_name(out.stem + ".config.yaml"), cfg)
    actions = Counter(wf["action"] for wf in doc["workflows"])
    print(f"wrote {len(doc['workflows'])} workflows to {out} (actions: "
          + ", ".join(f"{a} {n}" for a, n in actions.most_common()) + ")")
    return out


def write_simulated_snapshots(cfg: Any) -> Path:
    """Write cfg.snapshots weekly documents workflows-YYYY-MM-DD.json into the directory cfg.out."""
    from cmsdl.io import write_config, write_json

    docs = simulate_snapshots(cfg.snapshots, cfg.n_workflows, cfg.seed, cfg.label_noise, tuple(cfg.actions),
                              cfg.start_date, cfg.carry_over, cfg.drift)
    out = Path(cfg.out)
    for doc in docs:
        write_json(out / f"workflows-{doc['date']}.json", doc, indent=None)
    write_config(out / "simulate.config.yaml", cfg)
    print(f"wrote {len(docs)} weekly snapshots of {cfg.n_workflows} workflows to {out}/ "
          f"({docs[0]['date']} to {docs[-1]['date']}, carry-over {cfg.carry_over:.0%})")
    return out
