"""Ground state of fcc Al with fedft: energy, forces, fields for ParaView.

Run: ``python examples/al_single_point.py [--preset fast|accurate|tight] [--out DIR]``
"""

import argparse
from pathlib import Path

from ase.build import bulk

import fedft


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="accurate", choices=sorted(fedft.PRESETS))
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=0)
    # erf local pseudopotential Z = 3, rc = 1 bohr (0.529177 Å); TF + 1·vW + LDA
    result = fedft.compute(atoms, {"Al": "erf:3:0.529177"}, kinetic_lambda=1.0,
                           preset=args.preset)
    print(f"E = {result.energy:.6f} eV ({result.energy / len(atoms):.6f} eV/atom)")
    for name in fedft.COMPONENTS:
        print(f"  {name:<13}{result.components[name]:12.6f} eV")
    print(f"max |F| = {abs(result.forces).max():.4f} eV/Å")
    # the energy density integrates to the energy with the nodal weights
    print(f"∫ e dV = {result.weights @ result.energy_density():.6f} eV")
    args.out.mkdir(parents=True, exist_ok=True)
    result.write_json(args.out / "al.json")
    result.write_fields(args.out / "al.xdmf")
    print(f"wrote {args.out / 'al.json'} and {args.out / 'al.xdmf'} (open in ParaView)")
    return result


if __name__ == "__main__":
    main()
