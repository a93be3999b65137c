"""Relax and run molecular dynamics with a trained cemt model as an ASE calculator.

A rattled 4-atom fcc Al cell (conventional, a = 4.05 Å) gets ``cemt.CemtCalculator``, is
relaxed with ``ase.optimize.BFGS`` to ``--fmax`` (eV/Å), then runs ``--steps`` steps of
velocity-Verlet (NVE) or Langevin molecular dynamics from Maxwell-Boltzmann velocities. It
prints the relaxation, the MD energies and temperature every ``--every`` steps, and the drift
of the total energy (meaningful for NVE: a smooth, conservative model keeps it small).

Run: ``python examples/relax_and_md.py --model cemt-pipeline/grid/model.pt`` (any model.pt
of ``cemt train`` or ``cemt pipeline``).
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import cemt

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mb

    def thermalize_momenta(atoms, temperature_K, rng=None):
        _mb(atoms, temperature_K=temperature_K, rng=rng)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="trained model file")
    parser.add_argument("--fmax", type=float, default=0.05,
                        help="relaxation target, eV/Å (default 0.05)")
    parser.add_argument("--relax-steps", type=int, default=200,
                        help="at most this many BFGS steps (default 200)")
    parser.add_argument("--md", choices=("nve", "langevin"), default="nve",
                        help="velocity Verlet (nve, default) or Langevin dynamics")
    parser.add_argument("--steps", type=int, default=20, help="MD steps (default 20)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="initial (and Langevin) temperature, K (default 300)")
    parser.add_argument("--friction", type=float, default=0.02,
                        help="Langevin friction, 1/fs (default 0.02)")
    parser.add_argument("--every", type=int, default=5, help="print every N MD steps")
    parser.add_argument("--spacing", type=float, default=0.3,
                        help="grid models: evaluation mesh spacing, Å (default 0.3)")
    parser.add_argument("--shifts", type=int, default=0,
                        help="grid models: shifted mesh copies against the egg-box effect")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=args.seed)
    atoms.calc = cemt.CemtCalculator(args.model, spacing=args.spacing, shifts=args.shifts)
    n = len(atoms)
    print(f"model {args.model} ({atoms.calc.model.kind}); {atoms.get_chemical_formula()}, "
          f"{n} atoms")

    # --- relaxation
    e0 = atoms.get_potential_energy()
    f0 = np.linalg.norm(atoms.get_forces(), axis=1).max()
    opt = BFGS(atoms, logfile=None)
    converged = bool(opt.run(fmax=args.fmax, steps=args.relax_steps))
    e1 = atoms.get_potential_energy()
    f1 = np.linalg.norm(atoms.get_forces(), axis=1).max()
    print(f"relax: E {e0 / n:.6f} -> {e1 / n:.6f} eV/atom, max |F| {f0:.4f} -> {f1:.4f} eV/Å "
          f"in {opt.nsteps} BFGS steps ({'converged' if converged else 'NOT converged'} to "
          f"fmax {args.fmax} eV/Å)")

    # --- molecular dynamics
    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays at rest
    dt = args.timestep * units.fs
    if args.md == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        dyn = Langevin(atoms, timestep=dt, temperature_K=args.temperature,
                       friction=args.friction / units.fs, fixcm=False, rng=rng)
    rows = []

    def record():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        rows.append((dyn.nsteps, epot, ekin, epot + ekin, atoms.get_temperature()))
        if dyn.nsteps % args.every == 0 or dyn.nsteps == args.steps:
            print(f"step {dyn.nsteps:4d}  Epot {epot / n:10.5f}  Ekin {ekin / n:8.5f}  "
                  f"Etot {(epot + ekin) / n:10.5f} eV/atom  T {rows[-1][4]:7.1f} K")

    dyn.attach(record, interval=1)  # also called once before the first step
    dyn.run(args.steps)
    etot = np.array([r[3] for r in rows])
    drift = 1000 * (etot[-1] - etot[0]) / n
    spread = 1000 * (etot.max() - etot.min()) / n
    temps = np.array([r[4] for r in rows])
    what = "total-energy drift" if args.md == "nve" else \
        "total-energy change (the thermostat exchanges energy)"
    print(f"{args.md.upper()} {args.steps} steps of {args.timestep} fs: {what} "
          f"{drift:+.3f} meV/atom (range {spread:.3f} meV/atom), mean T {temps.mean():.1f} K")
    return {"relaxed": converged, "relax_steps": opt.nsteps, "energy_initial": e0,
            "energy_relaxed": e1, "fmax_initial": f0, "fmax_relaxed": f1,
            "md": np.array(rows), "drift_mev_atom": drift, "range_mev_atom": spread}


if __name__ == "__main__":
    main()
