"""Benchmark of GMP features (not a test).

Workload (issue 3): 32-atom fcc Al (a = 4.05 Å, 2x2x2 conventional cell), 64,000 grid points
(40^3), orders -1..4, sigma = 0.25..2.0 Å step 0.25 (41 features), NC-SR pseudodensities,
2 torch threads. Measures points/s for features alone and with gradients of a scalar function of
the features w.r.t. atom positions, and the peak resident memory of each measurement (each runs
in its own subprocess, so ``ru_maxrss`` is that measurement's peak; torch allocations are not
visible to tracemalloc).

Two evaluation paths:

* ``direct``: real-space sums over neighbour images at arbitrary points (``features``,
  ``features_torch``), what mesh nodes, atoms and bonds use;
* ``fft``: exact lattice sums on a uniform periodic grid (``features_grid``,
  ``features_grid_torch``).

Usage::

    PYTHONPATH=. python benchmarks/bench_gmp.py [--dtype float64|float32] [--repeat 3]
        [--direct-grad-points 8000] [--modes fft,fft_grad,direct,direct_grad] [--gpsp PATH]

Every mode is repeated ``--repeat`` times (best and median reported; the machine may be
shared). ``direct_grad`` uses a random subset of ``--direct-grad-points`` grid points.

Figures (2-core machine shared with another agent's heavy jobs, load 2.4-4.4: timings vary
by up to ~5x between runs, compare within a run; points/s, best of 3 (median), peak RSS):

=====================  =====================  =====================  ============
mode                   float64 run A          float64 run B          float32
=====================  =====================  =====================  ============
fft                    84,700 (84,000) 0.7 GB 18,400 (14,800) 0.7 GB
fft_grad               69,400 (46,200) 1.6 GB 12,300 (4,200) 1.7 GB
direct (64,000 pts)    3,110 (2,800) [1]      3,160 (3,100) 0.5 GB   4,050 (3,900) 0.4 GB
direct_grad (8,000)    810 (650) 0.6 GB       940 (660) 0.5 GB       1,330 (1,210) 0.4 GB
=====================  =====================  =====================  ============

[1] before candidate lists were built per chunk (peak 1.2 GB then). Before the hand-written
backward (same machine): direct ~1,600 points/s, direct_grad 56-158 points/s. Targets not yet
met on the direct path: >= 2e4 points/s features, >= 5e3 with gradients. fft vs direct
checksums agree to 1e-11 relative.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_GPSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "NC-SR.gpsp"
SHAPE = (40, 40, 40)


def _setup(args):
    import torch
    from ase.build import bulk

    from cemt import GMPFeaturizer, grid_points

    torch.set_num_threads(2)
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    feat = GMPFeaturizer(orders=[-1, 0, 1, 2, 3, 4], sigmas=np.arange(1, 9) * 0.25,
                         pseudodensity=args.gpsp, dtype=dtype)
    assert feat.n_features == 41
    points = grid_points(atoms.cell.array, SHAPE)
    return torch, atoms, feat, points


def run_one(args) -> dict:
    torch, atoms, feat, points = _setup(args)
    n = len(points)
    if args.mode.endswith("grad") and args.mode.startswith("direct"):
        sub = np.random.default_rng(0).choice(n, size=min(args.direct_grad_points, n), replace=False)
        points = points[np.sort(sub)]
        n = len(points)
    w = torch.randn(feat.n_features, dtype=feat.dtype, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        f = _measure(args, torch, atoms, feat, points, w)
        times.append(time.perf_counter() - t0)
    assert f.shape == (n, 41) and torch.isfinite(f).all()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    best, median = min(times), float(np.median(times))
    return {"mode": args.mode, "points": n, "seconds": best, "median_seconds": median,
            "points_per_s": n / best, "median_points_per_s": n / median,
            "peak_rss_mb": peak_mb, "checksum": float(f.double().sum())}


def _measure(args, torch, atoms, feat, points, w):
    if args.mode == "direct":
        f = feat.features(atoms, points)
    elif args.mode == "fft":
        f = feat.features_grid(atoms, SHAPE)
    else:
        pos = torch.tensor(atoms.positions, dtype=feat.dtype, requires_grad=True)
        if args.mode == "direct_grad":
            f = feat.features_torch(pos, atoms.numbers, atoms.cell.array, atoms.pbc, points=points)
        else:
            f = feat.features_grid_torch(pos, atoms.numbers, atoms.cell.array, atoms.pbc, SHAPE)
        energy = (torch.tanh(f) @ w).sum()
        grad, = torch.autograd.grad(energy, pos)
        assert torch.isfinite(grad).all()
    return f.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--gpsp", default=str(DEFAULT_GPSP))
    ap.add_argument("--direct-grad-points", type=int, default=8000,
                    help="subset of the grid for the (slow) direct path with gradients")
    ap.add_argument("--modes", default="fft,fft_grad,direct,direct_grad")
    ap.add_argument("--repeat", type=int, default=3,
                    help="repetitions per measurement (best and median are printed; the "
                         "machine may be shared)")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_one(args)))
        return
    print(f"GMP benchmark: fcc Al 32 atoms, {np.prod(SHAPE)} grid points, 41 features, "
          f"{args.dtype}, 2 torch threads")
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--dtype", args.dtype, "--gpsp",
               args.gpsp, "--direct-grad-points", str(args.direct_grad_points),
               "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results[mode] = r
        print(f"  {mode:12s} {r['points']:7d} points  best {r['seconds']:7.2f} s "
              f"{r['points_per_s']:8.0f} points/s  (median {r['median_points_per_s']:8.0f})  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB")
    if "fft" in results and "direct" in results:
        print(f"  fft vs direct checksum: {results['fft']['checksum']:.10g} vs "
              f"{results['direct']['checksum']:.10g}")
    print("targets: >= 2e4 points/s (features), >= 5e3 points/s (with gradients), peak < 2 GB")


if __name__ == "__main__":
    main()
