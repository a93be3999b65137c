"""Build the project's reference training set in one command.

Strained and rattled 4-atom fcc Al cells (conventional cell, a = 4.05 Å; every strain component
uniform in ±``max_strain``, then a Gaussian rattle of ``stdev`` Å; fixed seed), labelled with
fedft: GNH local pseudopotential (``../shared/data/Al_goodwin.psp8``), TF + 0.2·vW + LDA,
``fast`` preset. The dataset holds densities, energy densities, energies and forces of every
structure (see ``docs/dataset.md``); rerunning resumes where a killed run stopped.

Run: ``python examples/build_dataset.py [--n 100] [--seed 0] [--out al_gnh.h5]``
"""

import argparse
import sys
from pathlib import Path

from ase.build import bulk
from tqdm import tqdm

import fedft

GNH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "Al_goodwin.psp8"


def structures(n: int, seed: int, max_strain: float = 0.03, stdev: float = 0.08):
    """``n`` strained and rattled copies of conventional fcc Al (a = 4.05 Å)."""
    base = bulk("Al", "fcc", a=4.05, cubic=True)
    return fedft.strained(base, n, max_strain=max_strain, stdev=stdev, seed=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of structures (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-strain", type=float, default=0.03,
                        help="largest strain component (default 0.03)")
    parser.add_argument("--stdev", type=float, default=0.08,
                        help="rattle standard deviation, Å (default 0.08)")
    parser.add_argument("--preset", default="fast", choices=sorted(fedft.PRESETS))
    parser.add_argument("--pseudo", type=Path, default=GNH,
                        help="Al pseudopotential file (default: ../shared/data/Al_goodwin.psp8)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: number of CPUs)")
    parser.add_argument("--out", type=Path, default=Path("al_gnh.h5"))
    args = parser.parse_args(argv)

    if not args.pseudo.is_file():
        sys.exit(f"error: pseudopotential file {args.pseudo} not found; pass --pseudo PATH")
    bar = tqdm(desc="labelling", unit="structure")

    def progress(outcome, done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    summary = fedft.label(structures(args.n, args.seed, args.max_strain, args.stdev), args.out,
                          {"Al": str(args.pseudo)}, kinetic_lambda=0.2, preset=args.preset,
                          workers=args.workers, progress=progress)
    bar.close()
    print(summary)
    return summary


if __name__ == "__main__":
    main()
