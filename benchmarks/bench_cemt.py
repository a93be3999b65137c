"""Benchmark of cemt models (not a test).

1. Training throughput: reference points per second through one optimisation step (forward,
   forces from the cached Jacobians, backward) for the grid model (fields + energies + forces,
   every mesh node of a 4-atom fcc Al cell) and the atom model (energies + forces).
2. Energy + forces of a 32-atom fcc Al cell (2x2x2 conventional cells, rattled) with the grid
   model through the ASE calculator (``get_potential_energy()`` then ``get_forces()``; default
   evaluation spacing unless ``--spacing``), against the fedft ground state of the same cell at
   the given presets (default: ``fast``, the preset of the training labels; target: >= 100x
   faster; ``fedft.compute``, energy and forces: its nodal fields are computed only when
   first used), in the same run and process: both sides get the same threads (torch's and BLAS's
   follow ``OMP_NUM_THREADS``, default all cores).

The speed of a network does not depend on its trained weights, so ``--model`` is optional: by
default an untrained grid model with the training defaults is built.

Usage::

    [OMP_NUM_THREADS=1] python benchmarks/bench_cemt.py [--model run/model.pt]
        [--presets fast accurate] [--spacing 0.15] [--repeats 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from ase.build import bulk

import cemt
import fedft

GNH = Path(__file__).resolve().parents[2] / "shared" / "data" / "Al_goodwin.psp8"


def _model(kind: str, path=None):
    if path is not None and kind == "grid":
        return cemt.load_model(path)
    cfg = cemt.default_config()
    f = cfg["features"]
    from cemt._config import default_pseudodensity

    feats = cemt.feature_settings(f["orders"], f["sigmas"], default_pseudodensity(), ["Al"],
                                  f["overlap_threshold"], f["norm"])
    torch.manual_seed(0)
    model = cemt.build_model({"kind": kind, "features": feats, "widths": cfg["model"]["widths"],
                              "dtype": cfg["model"]["dtype"], "quadrature": "trapezoid"})
    model.scaler.fit(torch.rand(16, model.n_features))
    model.set_normalisation(-3.5, 8.0, 0.18)
    return model


def training_throughput(model, preset: str, repeats: int) -> dict:
    """Points per second of one training step on one 4-atom structure (labels from fedft)."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=1)
    res = fedft.compute(atoms, {"Al": str(GNH)}, 0.2, preset=preset)
    grid = model.kind == "grid"
    t0 = time.perf_counter()
    t = model.structure_tensors(atoms, res.points if grid else None,
                                res.weights if grid else None, jacobian=True)
    featurize = time.perf_counter() - t0
    opt = torch.optim.Adam(model.network.parameters(), lr=1e-4)
    target_f = torch.as_tensor(res.forces, dtype=model.torch_dtype)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        e, f, eps, rho = model.energy_forces_from_tensors(t["features"], t["weights"],
                                                          t["jacobian"], t["dweights"],
                                                          create_graph=True)
        loss = (e - res.energy) ** 2 + ((f - target_f) ** 2).sum()
        if grid:
            loss = loss + (eps ** 2).mean() + (rho ** 2).mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    n = int(t["features"].shape[0])
    return {"kind": model.kind, "points": n, "featurize_s": featurize, "step_s": step,
            "points_per_s": n / step}


def energy_forces_32(model, presets, repeats: int, spacing: float) -> dict:
    atoms = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=3)
    calc = cemt.CemtCalculator(model, spacing=spacing)
    times = []
    for _ in range(repeats + 1):
        a = atoms.copy()
        a.calc = calc
        calc.reset()
        t0 = time.perf_counter()
        a.get_potential_energy()
        a.get_forces()
        times.append(time.perf_counter() - t0)
    nodes, _, _ = calc._mesh(atoms.cell.array)
    t_model = statistics.median(times[1:])
    out = {"atoms": len(atoms), "spacing": spacing, "model_nodes": len(nodes),
           "model_s": t_model, "model_first_call_s": times[0], "fedft": {}}
    for preset in presets:
        t0 = time.perf_counter()
        fedft.compute(atoms, {"Al": str(GNH)}, 0.2, preset=preset)
        t_fedft = time.perf_counter() - t0
        out["fedft"][preset] = {"seconds": t_fedft, "speedup": t_fedft / t_model}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="trained grid model (default: untrained, same speed)")
    p.add_argument("--presets", nargs="+", default=["fast"],
                   help="fedft presets to compare with (default: fast, the preset of the "
                        "training labels)")
    p.add_argument("--spacing", type=float, default=cemt.DEFAULT_SPACING,
                   help="evaluation spacing of the grid model, Å (default: the calculator's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0]}}
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '(unset)')} (the fedft solves run in this process)")
    for kind in ("grid", "atom"):
        r = training_throughput(_model(kind, args.model), args.presets[0], args.repeats)
        out[f"train_{kind}"] = r
        print(f"training throughput, {kind} model: {r['points_per_s']:,.0f} points/s "
              f"({r['points']} points, step {r['step_s'] * 1e3:.1f} ms, featurize "
              f"{r['featurize_s']:.2f} s incl. Jacobian)")
    r = energy_forces_32(_model("grid", args.model), args.presets, args.repeats, args.spacing)
    out["energy_forces_32"] = r
    print(f"32-atom Al, energy + forces: grid model {r['model_s']:.3f} s, median of "
          f"{args.repeats} ({r['model_nodes']} nodes at {r['spacing']} Å; first call "
          f"{r['model_first_call_s']:.2f} s)")
    for preset, f in r["fedft"].items():
        print(f"  fedft ({preset}) {f['seconds']:.1f} s: grid model {f['speedup']:.0f}x faster "
              "(target >= 100x)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
