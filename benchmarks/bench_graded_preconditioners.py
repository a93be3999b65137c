"""Graded periodic meshes: the uniform twin's FFT inverse against fast diagonalisation.

Not a test. On graded periodic tensor grids :mod:`fedft._discretisation` preconditions the
Poisson solves (CG) and the minimiser by one of two approximate inverses: the exact FFT
inverse of the uniform mesh with the same sub-cells (the "twin") up to the grading ratios
:data:`fedft._discretisation.FFT_POISSON_MAX_GRADING` and
:data:`fedft._discretisation.FFT_MINIMISER_MAX_GRADING`, else fast diagonalisation
(:mod:`fedft._fastdiag`). This script measures both choices on fcc Al (erf Al Z = 3, rc = 1
bohr, TF + 1·vW, LDA, a = 4.05 Å; 32 atoms by default, ``--sizes 4 32``) over a ladder of
graded meshes (:data:`MESHES`) whose grading ratios
(:attr:`fedft._discretisation.Discretisation.grading_ratio`, the largest ratio of two
sub-cell intervals along one axis) span 1.04 to 4.3.

Each mesh is solved (``fedft.compute``, energy and forces, ``accurate`` preset tolerances,
``grading="all"``) in a fresh child process (``OMP_NUM_THREADS=1``, one child at a time)
with each choice:

* ``twin``: the twin's FFT inverse for both, by setting both module constants to ``inf``
  in the child before the solve;
* ``fastdiag``: fast diagonalisation for both (both constants ``0.0``);
* ``default``: the constants as they are.

The library is not changed: the constants are read when a :class:`Discretisation` is built
and when the minimiser asks for its preconditioner, both after the child has set them. The
child counts CG iterations by wrapping ``Functional.evaluate`` and ``Discretisation.poisson``.

Columns: grading ratio, DOFs, choice, the preconditioners in use (``prec``, Poisson /
minimiser: ``fft`` the twin, ``fd`` fast diagonalisation), minimiser iterations (``its``),
functional evaluations (``evals``, one Hartree solve each), the Poisson CG iterations of the
minimisation (``CG``: every evaluation, line-search trial points included; ``hist``: the sum
of ``result.history[i]["poisson_iterations"]``, which counts only the evaluation each
iteration accepted), ``CG`` per solve (``/solve``), the CG iterations of the final solve to
1e-13 that gives the reported potential (``final``, from the minimiser's last potential) and
of one solve for the converged density from zero to 1e-10 after the run (``cold``: the
preconditioner alone, the same problem for every choice), the wall time of ``fedft.compute``
(``solve s``, energy and forces) and of its ``minimise`` stage (``min s``), and the energy
(Ha/atom). Every choice must give the same energy: the spread is
printed per mesh, and the script exits with status 1 if it exceeds ``--energy-tol`` (1e-6
Ha/atom) or a run fails. The summary lists the ratios at which the twin needs fewer cold CG
iterations, fewer CG iterations per Hartree solve and fewer minimiser iterations than fast
diagonalisation, to compare with the two constants. Iteration counts are deterministic; the
times depend on the machine's load.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_graded_preconditioners.py [--sizes 32]
        [--meshes SPACING,RATE,H_MAX,START ...] [--energy-tol 1e-6]

``--meshes`` takes ``spacing,grading_rate,h_max,grading_start`` (bohr; the rate has no unit)
per graded mesh.

Measured 2026-12-07 at commit dfa1823 (``FFT_POISSON_MAX_GRADING`` 2.0) on this project's
2-core machine, one other single-threaded job beside it for part of the run; 209 s in all.
The iteration counts are deterministic (the twin's and fast diagonalisation's were the same in
all four runs of the session); the times vary by up to ~1.5 s per row::

    OMP_NUM_THREADS=1 python benchmarks/bench_graded_preconditioners.py

    32 atoms
    ratio   DOFs   choice   prec its evals   CG hist /solve final cold solve s min s       Ha/atom
    1.065 314432     twin fft/fft   9    20   15    7   0.50     5    7    7.96  6.21 -2.6929602016
    1.065 314432 fastdiag  fd/fd  20    35   83   33   2.37    28   36   10.52  8.65 -2.6929602016
    1.065 314432  default fft/fft   9    20   15    7   0.50     5    7    7.09  5.98 -2.6929602016
                 mesh (0.45, 0.3, 0.48, 1.5): energy spread 7.7e-12 Ha/atom
    1.037 238328     twin fft/fft  12    23   15    5   0.65     4    6    5.49  4.29 -2.6929309747
    1.037 238328 fastdiag  fd/fd  23    36   90   46   2.50    26   36    9.64  7.62 -2.6929309747
    1.037 238328  default fft/fft  12    23   15    5   0.65     4    6    6.76  5.37 -2.6929309747
                 mesh (0.45, 0.3, 0.5, 0.0): energy spread 6.7e-12 Ha/atom
    1.238 157464     twin fft/fft  10    18   22   12   1.22     8   11    3.13  2.25 -2.6928703942
    1.238 157464 fastdiag  fd/fd  23    37   82   45   2.22    30   38    5.74  4.64 -2.6928703943
    1.238 157464  default fft/fft  10    18   22   12   1.22     8   11    2.54  1.81 -2.6928703942
                 mesh (0.45, 0.3, 0.6, 0.0): energy spread 1.7e-11 Ha/atom
    1.649  97336     twin fft/fft  15    28   45   18   1.61    13   18    2.73  2.04 -2.6927521683
    1.649  97336 fastdiag  fd/fd  24    43   92   37   2.14    29   39    3.65  2.93 -2.6927521684
    1.649  97336  default fft/fft  15    28   45   18   1.61    13   18    2.62  1.94 -2.6927521683
                 mesh (0.45, 0.3, 0.8, 0.0): energy spread 3.4e-11 Ha/atom
    1.922  85184     twin fft/fft  11    20   39   16   1.95    14   21    2.01  1.35 -2.6927002440
    1.922  85184 fastdiag  fd/fd  22    37   87   37   2.35    29   39    2.80  2.16 -2.6927002441
    1.922  85184  default fft/fft  11    20   39   16   1.95    14   21    1.87  1.25 -2.6927002440
                 mesh (0.45, 0.3, 1.0, 0.0): energy spread 4.1e-11 Ha/atom
    2.121 157464     twin fft/fft  18    32   74   30   2.31    18   25    5.19  4.08 -2.6928695077
    2.121 157464 fastdiag  fd/fd  22    37   94   38   2.54    29   40    5.32  4.33 -2.6928695077
    2.121 157464  default fd/fft  19    35  106   40   3.03    30   40    6.28  4.96 -2.6928695077
                 mesh (0.35, 0.3, 0.8, 0.0): energy spread 3.4e-11 Ha/atom
    2.509  85184     twin fft/fft  17    28   72   36   2.57    21   28    2.95  2.18 -2.6926448537
    2.509  85184 fastdiag  fd/fd  22    39   89   31   2.28    30   41    3.15  2.46 -2.6926448537
    2.509  85184  default  fd/fd  22    39   89   31   2.28    30   41    3.64  2.78 -2.6926448537
                 mesh (0.35, 0.5, 1.0, 0.0): energy spread 3.0e-11 Ha/atom
    2.817  85184     twin fft/fft  18    28   85   48   3.04    22   32    2.86  2.18 -2.6926220639
    2.817  85184 fastdiag  fd/fd  23    40   87   31   2.17    32   41    3.25  2.54 -2.6926220639
    2.817  85184  default  fd/fd  23    40   87   31   2.17    32   41    3.21  2.52 -2.6926220639
                 mesh (0.35, 0.5, 1.2, 0.0): energy spread 1.5e-11 Ha/atom
    3.230  97336     twin fft/fft  25    39  136   77   3.49    27   39    4.66  3.74 -2.6926549809
    3.230  97336 fastdiag  fd/fd  27    44  101   41   2.30    30   43    4.29  3.45 -2.6926549809
    3.230  97336  default  fd/fd  27    44  101   41   2.30    30   43    4.28  3.40 -2.6926549809
                 mesh (0.3, 0.5, 1.2, 0.0): energy spread 3.1e-11 Ha/atom
    3.864  85184     twin fft/fft  26    38  143   86   3.76    31   43    4.76  3.81 -2.6925041355
    3.864  85184 fastdiag  fd/fd  24    36   87   41   2.42    32   43    3.31  2.60 -2.6925041355
    3.864  85184  default  fd/fd  24    36   87   41   2.42    32   43    3.65  2.71 -2.6925041355
                 mesh (0.2, 1.0, 1.0, 0.0): energy spread 1.4e-11 Ha/atom
    4.318 195112     twin fft/fft  33    55  242  121   4.40    40   57   13.74 11.88 -2.6928320011
    4.318 195112 fastdiag  fd/fd  24    40  100   38   2.50    30   44    7.79  6.27 -2.6928320011
    4.318 195112  default  fd/fd  24    40  100   38   2.50    30   44    8.45  6.64 -2.6928320011
                 mesh (0.2, 0.5, 1.0, 0.0): energy spread 2.4e-11 Ha/atom
    largest energy spread 4.1e-11 Ha/atom (allowed 1e-06); 0 failed runs; 209 s in all
    twin FFT inverse better than fast diagonalisation (grading ratios):
      Poisson, cold solve CG (FFT_POISSON_MAX_GRADING = 2.0):
        at 1.04, 1.07, 1.24, 1.65, 1.92, 2.12, 2.51, 2.82, 3.23; not at 3.86, 4.32
      Poisson, CG per Hartree solve of the minimisation (FFT_POISSON_MAX_GRADING = 2.0):
        at 1.04, 1.07, 1.24, 1.65, 1.92, 2.12; not at 2.51, 2.82, 3.23, 3.86, 4.32
      minimiser iterations (FFT_MINIMISER_MAX_GRADING = 2.5):
        at 1.04, 1.07, 1.24, 1.65, 1.92, 2.12, 2.51, 2.82, 3.23; not at 3.86, 4.32

All choices agree on the energy to 4e-11 Ha/atom. What the constants rest on:

* Minimiser (``FFT_MINIMISER_MAX_GRADING = 2.5``): the twin takes fewer iterations up to
  ratio 3.23 (9 against 20 at 1.07, 17 against 22 at 2.51, 25 against 27 at 3.23) and more
  from 3.86 (26 against 24; 33 against 24 at 4.32, twice the time). 2.5 sits below the
  crossing (3.2-3.9).
* Poisson (``FFT_POISSON_MAX_GRADING = 2.0``): the twin takes fewer CG iterations per
  Hartree solve of the minimisation up to ratio 2.12 (0.50 against 2.37 at 1.07, 1.61
  against 2.14 at 1.65, 2.31 against 2.54 at 2.12) and more from 2.51 (2.57 against 2.28),
  and fewer in the cold solve up to 3.23. Before dfa1823 the constant was 1.25 and the
  default between 1.25 and 2 paired fast diagonalisation for Poisson with the twin for the
  minimiser (run at 7998edd: 77 CG iterations in 26 solves at 1.65, 69 in 20 at 1.92,
  against the twin's 45 in 28 and 39 in 20); the default rows at 1.65 and 1.92 above are
  now the twin's.

The accurate preset's sizes with h_max 0.48 (ratio 1.07, first row) stopped with
``ConvergenceError`` before e146526 (a line search from a start whose Hartree solve was
looser than its trial points'; ``fedft._solver``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BOHR = 0.52917721067
HARTREE = 27.211386245988
PSEUDOS = {"Al": f"erf:3:{BOHR!r}"}  # erf Z = 3, rc = 1 bohr (given in Å)

#: Graded meshes (spacing, grading_rate, h_max, grading_start; bohr; the rate has no unit)
#: and their grading ratios at 32 atoms.
MESHES = [
    (0.45, 0.3, 0.48, 1.5),  # 1.07: the accurate preset's sizes with h_max 0.48
    (0.45, 0.3, 0.5, 0.0),  # 1.04
    (0.45, 0.3, 0.6, 0.0),  # 1.24
    (0.45, 0.3, 0.8, 0.0),  # 1.65
    (0.45, 0.3, 1.0, 0.0),  # 1.92
    (0.35, 0.3, 0.8, 0.0),  # 2.12
    (0.35, 0.5, 1.0, 0.0),  # 2.51
    (0.35, 0.5, 1.2, 0.0),  # 2.82
    (0.3, 0.5, 1.2, 0.0),  # 3.23
    (0.2, 1.0, 1.0, 0.0),  # 3.86
    (0.2, 0.5, 1.0, 0.0),  # 4.32
]

#: Module constants of ``fedft._discretisation`` set in the child for each choice.
CHOICES = {"twin": float("inf"), "fastdiag": 0.0, "default": None}


def _atoms(n_atoms: int):
    from ase.build import bulk

    reps = {4: 1, 32: 2, 108: 3}[n_atoms]
    return bulk("Al", "fcc", a=4.05, cubic=True).repeat(reps)


def _kind(prec) -> str:
    """``fft`` (the twin's FFT inverse) or ``fd`` (fast diagonalisation) for a
    preconditioner object."""
    from fedft._fastdiag import TensorPreconditioner
    from fedft._lattice import LatticeSolver

    if isinstance(prec, LatticeSolver):
        return "fft"
    return "fd" if isinstance(prec, TensorPreconditioner) else type(prec).__name__


def _child(n_atoms: int, mesh: tuple, choice: str) -> dict:
    """One solve with the preconditioners of ``choice`` (:data:`CHOICES`) forced."""
    import fedft
    import fedft._discretisation as module
    from fedft._discretisation import Discretisation
    from fedft._functional import Functional

    limit = CHOICES[choice]
    if limit is not None:  # read when the Discretisation and the preconditioner are built
        module.FFT_POISSON_MAX_GRADING = module.FFT_MINIMISER_MAX_GRADING = limit
    seen = {"disc": None, "solves": 0, "cg": 0, "final_cg": [], "load": None}
    evaluate, poisson = Functional.evaluate, Discretisation.poisson

    def counted_evaluate(self, *args, **kwargs):  # the minimiser's evaluations
        ev = evaluate(self, *args, **kwargs)
        seen["disc"] = self.disc
        seen["solves"] += 1
        seen["cg"] += ev.poisson_iterations
        return ev

    def counted_poisson(self, load, *args, **kwargs):  # the final solve (1e-13)
        v, its = poisson(self, load, *args, **kwargs)
        seen["final_cg"].append(its)
        seen["load"] = load
        return v, its

    Functional.evaluate, Discretisation.poisson = counted_evaluate, counted_poisson
    spacing, rate, h_max, start = mesh
    t0 = time.perf_counter()
    r = fedft.compute(_atoms(n_atoms), PSEUDOS, 1.0, preset="accurate", grading="all",
                      spacing=spacing, grading_rate=rate, h_max=h_max, grading_start=start)
    elapsed = time.perf_counter() - t0
    disc = seen["disc"]
    try:  # the preconditioner alone: the converged density's potential from zero to 1e-10
        cold = poisson(disc, seen["load"], None, rtol=1e-10)[1]
    except fedft.ConvergenceError:  # more than pcg's 500 iterations
        cold = None
    mass = fedft.PRESETS["accurate"].precond_mass  # the minimiser's (cached) preconditioner
    return {"ratio": disc.grading_ratio, "dofs": int(r.mesh.n_dofs),
            "poisson": _kind(disc._poisson_prec),
            "minimiser": _kind(disc.preconditioner(1.0, mass)),
            "iterations": len(r.history) - 1, "evaluations": r.history[-1]["evaluations"],
            "solves": seen["solves"], "cg": seen["cg"],
            "cg_history": int(sum(h["poisson_iterations"] for h in r.history)),
            "final_cg": seen["final_cg"], "cold_cg": cold, "time": elapsed,
            "minimise": r.timings["minimise"], "energy": r.energy / HARTREE / n_atoms}


def run(n_atoms: int, mesh: tuple, choice: str) -> dict:
    """One measurement in a fresh child process (one BLAS/OpenMP thread)."""
    cmd = [sys.executable, __file__, "--child", str(n_atoms), json.dumps(mesh), choice]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:  # the exception's class without its module, and the message
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        name, _, message = last.partition(": ")
        return {"failed": f"{name.rsplit('.', 1)[-1]}: {message}"[:72]}
    return json.loads(res.stdout.strip().splitlines()[-1])


HEADER = (f"{'ratio':>5} {'DOFs':>6} {'choice':>8} {'prec':>6} {'its':>3} {'evals':>5} "
          f"{'CG':>4} {'hist':>4} {'/solve':>6} {'final':>5} {'cold':>4} {'solve s':>7} "
          f"{'min s':>5} {'Ha/atom':>13}")


def row(choice: str, m: dict) -> str:
    """One printed line of the table."""
    if "failed" in m:
        return f"{'':>5} {'':>6} {choice:>8} failed: {m['failed']}"
    return (f"{m['ratio']:5.3f} {m['dofs']:6d} {choice:>8} "
            f"{m['poisson'] + '/' + m['minimiser']:>6} {m['iterations']:3d} "
            f"{m['evaluations']:5d} {m['cg']:4d} {m['cg_history']:4d} "
            f"{m['cg'] / m['solves']:6.2f} {sum(m['final_cg']):5d} {m['cold_cg'] or '>500':>4} "
            f"{m['time']:7.2f} {m['minimise']:5.2f} {m['energy']:13.10f}")


#: What the summary compares: name -> (the constant it bears on, measure of one run; smaller
#: is better).
MEASURES = {
    "Poisson, cold solve CG": ("FFT_POISSON_MAX_GRADING", lambda m: m["cold_cg"] or 1e9),
    "Poisson, CG per Hartree solve of the minimisation": (
        "FFT_POISSON_MAX_GRADING", lambda m: m["cg"] / m["solves"]),
    "minimiser iterations": ("FFT_MINIMISER_MAX_GRADING", lambda m: m["iterations"]),
}


def twin_wins(twin: dict, fast: dict) -> dict | None:
    """Measure name -> whether the twin did better than fast diagonalisation (None if either
    run failed)."""
    if "failed" in twin or "failed" in fast:
        return None
    return {name: f(twin) < f(fast) for name, (_, f) in MEASURES.items()}


def summary(wins: list) -> str:
    """Where the twin wins, per measure, from ``[(ratio, twin_wins(...)), ...]``."""
    import fedft._discretisation as module

    lines = ["twin FFT inverse better than fast diagonalisation (grading ratios):"]
    if any(w is None for _, w in wins):
        lines.append("  no comparison (a run failed) at "
                     + ", ".join(f"{r:.2f}" for r, w in wins if w is None))
    wins = sorted((r, w) for r, w in wins if w is not None)
    for name, (constant, _) in MEASURES.items():
        better = ", ".join(f"{r:.2f}" for r, w in wins if w[name]) or "none"
        worse = ", ".join(f"{r:.2f}" for r, w in wins if not w[name]) or "none"
        lines.append(f"  {name} ({constant} = {getattr(module, constant)}):\n"
                     f"    at {better}; not at {worse}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32], choices=[4, 32, 108])
    parser.add_argument("--meshes", nargs="+", default=[",".join(map(str, m)) for m in MESHES],
                        help="graded meshes: spacing,grading_rate,h_max,grading_start (bohr)")
    parser.add_argument("--energy-tol", type=float, default=1e-6,
                        help="largest allowed spread of the energies of one mesh (Ha/atom)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n, mesh, choice = args.child
        print(json.dumps(_child(int(n), tuple(json.loads(mesh)), choice)))
        return 0
    meshes = [tuple(float(x) for x in m.split(",")) for m in args.meshes]
    t0 = time.perf_counter()
    spreads, wins, failed = [], [], 0
    for n in args.sizes:
        print(f"{n} atoms\n{HEADER}", flush=True)
        for mesh in meshes:
            runs = {}
            for choice in CHOICES:
                runs[choice] = run(n, mesh, choice)
                print(row(choice, runs[choice]), flush=True)
            done = [m for m in runs.values() if "failed" not in m]
            failed += len(runs) - len(done)
            if not done:
                continue
            energies = [m["energy"] for m in done]
            spreads.append(max(energies) - min(energies))
            print(f"{'':>13}mesh {mesh}: energy spread {spreads[-1]:.1e} Ha/atom", flush=True)
            wins.append((done[0]["ratio"], twin_wins(runs["twin"], runs["fastdiag"])))
    spread = max(spreads, default=float("nan"))
    print(f"largest energy spread {spread:.1e} Ha/atom (allowed {args.energy_tol:g}); "
          f"{failed} failed runs; {time.perf_counter() - t0:.0f} s in all")
    print(summary(wins))
    return 0 if failed == 0 and spread <= args.energy_tol else 1


if __name__ == "__main__":
    sys.exit(main())
