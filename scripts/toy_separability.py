"""How separable are the toy tracker's processes before any detector? A ceiling for the event-image classifiers.

Generates charged particles of each process with the same generator as `cmsdl simulate` and trains a
gradient-boosted classifier on generator-level features of the four highest-pT particles (pT, eta, phi relative
to the leading one), the number of charged particles and the number above 2 GeV. Three views, from most to
least information:

- `all`: everything above (an image never holds pT this precisely);
- `no pT values`: the particles still ranked by pT and counted above 2 GeV, but no pT value;
- `directions only`: ranked by pT, only eta/phi and the number of particles: roughly what `xy`/`rz` images at
  32-64 px show, where a 3 GeV muon and a 30 GeV pion are both straight lines (the `phi-rho` projection shows
  how much each track leans, i.e. 1/pT, and so holds more).

The generator-level particles are the hard scatter plus an underlying event of `--ue-mean` tracks; `cmsdl simulate`
also tops every event up to the same number of hits, which these features do not see.

With `--root`, it reads `cmsdl simulate` ROOT files instead and reports the "hit counts only" baseline: 5-fold
accuracy of gradient boosting on the total number of hits and on the hits per subdetector (no image, no track).

    python scripts/toy_separability.py --events 6000 --classes higgs jpsi qcd
    python scripts/toy_separability.py --root 'data/raw/*.root' --classes jpsi qcd
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import confusion_matrix

from cmsdl.errors import CmsdlError
from cmsdl.sim.processes import PROCESSES, Particles, concat, underlying_event
from cmsdl.tools.hit_counts import hit_count_baseline

LEADING = 4
VIEWS = {"all": None, "no pT values": ("eta", "dphi", "present", "n_charged", "n_above_2gev"),
         "directions only": ("eta", "dphi", "present", "n_charged")}


def event_features(p: Particles, n_events: int) -> dict[str, np.ndarray]:
    """Per-event generator-level features, each of shape (n_events, LEADING) or (n_events,)."""
    order = np.lexsort((-p["pt"], p["event"]))
    event, pt, eta, phi = p["event"][order], p["pt"][order], p["eta"][order], p["phi"][order]
    counts = np.bincount(event, minlength=n_events)
    rank = np.arange(len(event)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = {name: np.zeros((n_events, LEADING)) for name in ("pt", "eta", "dphi", "present")}
    lead_phi = np.zeros(n_events)
    lead_phi[event[rank == 0]] = phi[rank == 0]
    for k in range(LEADING):
        m = rank == k
        e = event[m]
        out["pt"][e, k], out["eta"][e, k], out["present"][e, k] = pt[m], eta[m], 1
        out["dphi"][e, k] = np.abs((phi[m] - lead_phi[e] + np.pi) % (2 * np.pi) - np.pi)
    out["n_charged"] = counts.astype(float)
    out["n_above_2gev"] = np.bincount(event, weights=pt > 2, minlength=n_events)
    return out


def feature_matrix(features: dict[str, np.ndarray], names: tuple[str, ...] | None) -> np.ndarray:
    """The named features (all when None) side by side, one row per event."""
    names = names or tuple(features)
    return np.column_stack([features[n].reshape(len(features[n]), -1) for n in names])


def generator_level(args: argparse.Namespace) -> None:
    """Gradient boosting on generator-level features of freshly generated events, one line per view."""
    rng = np.random.default_rng(args.seed)
    parts = []
    for process in args.classes:
        z0 = rng.normal(0, 5.0, args.events)
        hard = PROCESSES[process](rng, args.events, z0)
        parts.append(event_features(concat([hard, underlying_event(rng, args.events, args.ue_mean, z0)]), args.events))
    features = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    labels = np.repeat(np.arange(len(args.classes)), args.events)
    order = rng.permutation(len(labels))
    n_train = int(0.7 * len(labels))
    train, test = order[:n_train], order[n_train:]
    print(f"{' vs '.join(args.classes)}: {args.events} events each, 70/30 split, HistGradientBoosting")
    for view, names in VIEWS.items():
        x = feature_matrix(features, names)
        model = HistGradientBoostingClassifier(max_iter=300, random_state=args.seed).fit(x[train], labels[train])
        predicted = model.predict(x[test])
        matrix = confusion_matrix(labels[test], predicted).tolist()
        print(f"{view:16s} accuracy {np.mean(predicted == labels[test]):6.1%}  confusion {matrix}")


def hit_counts(args: argparse.Namespace) -> dict:
    """The hit-counts-only baseline on ROOT files, printed, and written as JSON with --json."""
    paths = sorted(glob.glob(args.root))
    result = hit_count_baseline(paths, args.classes, folds=5, seed=args.seed)
    print(f"{' vs '.join(args.classes)}: {result['events']} events from {len(paths)} files ({args.root}), "
          f"hit counts only, HistGradientBoosting, {result['folds']}-fold (majority class {result['majority_rate']:.1%})")
    for name in ("total hits", "hits per subdetector"):
        print(f"{name:20s} accuracy {result[name]['accuracy']:6.1%} ± {result[name]['std']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000, help="events per process")
    parser.add_argument("--classes", nargs="+", default=["higgs", "jpsi", "qcd"], choices=list(PROCESSES))
    parser.add_argument("--ue-mean", type=float, default=10.0, help="as `cmsdl simulate ue_mean=`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", help="glob of `cmsdl simulate` ROOT files: report the hit-counts-only baseline")
    parser.add_argument("--json", type=Path, help="with --root: also write the figures to this JSON file")
    args = parser.parse_args()
    if args.root:
        try:
            hit_counts(args)
        except CmsdlError as err:
            sys.exit(f"error: {err}")
    else:
        generator_level(args)


if __name__ == "__main__":
    main()
