"""Build the project's own GMP pseudodensity set from fedft free-atom densities.

One atom in a 10 Å periodic box is solved with fedft (TF + λ·vW + LDA), its valence density is
spherically averaged and fitted with Gaussians (cemt.fit_pseudodensity), and the set is written
in the .gpsp format. The shipped file ``cemt/data/fedft-erf.gpsp`` was made with the defaults:

    python examples/make_pseudodensities.py --out cemt/data/fedft-erf.gpsp
"""

import argparse
from pathlib import Path

import numpy as np

import cemt
import fedft

#: The project's own pseudopotentials: analytic erf ions (spec rc in Å), λ = 1.
DEFAULT = {"Al": "erf:3:0.529177"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fedft-erf.gpsp"))
    parser.add_argument("--box", type=float, default=10.0, help="box edge (Å)")
    parser.add_argument("--preset", default="fast", choices=sorted(fedft.PRESETS))
    parser.add_argument("--primitives", type=int, default=4)
    parser.add_argument("--kinetic-lambda", type=float, default=1.0)
    args = parser.parse_args(argv)
    pset = cemt.fedft_pseudodensities(DEFAULT, args.kinetic_lambda, n_primitives=args.primitives,
                                      box=args.box, preset=args.preset)
    for symbol, el in pset.items():
        electrons = float(np.sum(el.B * (np.pi / el.beta) ** 1.5))
        print(f"{symbol}: {el.n_primitives} Gaussians, {electrons:.4f} electrons")
    comment = (f"GMP pseudodensities fitted to fedft free-atom densities\n"
               f"pseudopotentials: {DEFAULT}; TF+{args.kinetic_lambda:g}vW+LDA; box "
               f"{args.box} Å; preset {args.preset}; fedft {fedft.__version__}\n"
               f"B in e/Å^3, beta in 1/Å^2")
    cemt.write_gpsp(pset, args.out, comment=comment)
    print(f"wrote {args.out}")
    return pset


if __name__ == "__main__":
    main()
