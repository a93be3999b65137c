"""Egg-box amplitude of a trained grid model (not a test).

Translates a structure rigidly along an irrational direction over ``--distance`` Å and reports
the peak-to-peak energy change (meV/atom) of :class:`cemt.CemtCalculator` at several
evaluation spacings and mesh orders, and the time per energy evaluation. The energy of a
translated structure is physically unchanged, so the spread is the quadrature's egg-box
effect (target: <= 0.5 meV/atom at the calculator's default spacing).

Usage::

    python benchmarks/bench_eggbox.py MODEL.pt [--data al_gnh.h5 --index 85]
        [--spacings 0.3 0.2 0.15] [--steps 11] [--json OUT.json]

Without ``--data`` the structure is a rattled 4-atom fcc Al cell (a = 4.05 Å).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

import cemt
import fedft


def eggbox(model, atoms, spacing: float, order: int, distance: float, steps: int) -> dict:
    calc = cemt.CemtCalculator(model, spacing=spacing, order=order)
    direction = np.array([1.0, 0.61, 0.37])
    direction /= np.linalg.norm(direction)
    energies, t0 = [], time.perf_counter()
    for s in np.linspace(0.0, distance, steps):
        moved = atoms.copy()
        moved.positions += s * direction
        moved.calc = calc
        energies.append(moved.get_potential_energy() / len(atoms))
    seconds = (time.perf_counter() - t0) / steps
    e = 1e3 * np.asarray(energies)
    return {"spacing": spacing, "order": order, "amplitude_mev_atom": float(np.ptp(e)),
            "seconds_per_energy": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", help="take the structure from this fedft dataset")
    p.add_argument("--index", type=int, default=0, help="dataset position (with --data)")
    p.add_argument("--spacings", type=float, nargs="+", default=[0.3, 0.2, 0.15])
    p.add_argument("--distance", type=float, default=0.5, help="translation length, Å")
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = cemt.load_model(args.model)
    if args.data:
        with fedft.read_dataset(args.data) as ds:
            atoms = ds.read(args.index, fields=[], mesh=False).atoms
    else:
        atoms = bulk("Al", "fcc", a=4.05, cubic=True)
        atoms.rattle(0.05, seed=4)
    rows = []
    for spacing in args.spacings:
        r = eggbox(model, atoms, spacing, 1, args.distance, args.steps)
        rows.append(r)
        default = "  (default)" if spacing == cemt.DEFAULT_SPACING else ""
        print(f"spacing {spacing:.3f} Å P1: egg-box {r['amplitude_mev_atom']:.4f} meV/atom, "
              f"{r['seconds_per_energy']:.3f} s per energy{default}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
