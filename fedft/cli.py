"""The ``fedft`` command line.

``fedft run STRUCTURE --pseudo SYMBOL=SPEC [--pseudo ...] --kinetic-lambda L [--preset NAME]
[--json PATH] [--fields PATH.xdmf]``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ._errors import ConvergenceError, FedftError
from ._settings import PRESETS
from ._version import __version__

EXIT_INPUT = 2
EXIT_NOT_CONVERGED = 3


def _pseudo_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"expected SYMBOL=SPEC (e.g. Al=Al.psp8 or Al=erf:3:0.529), got {text!r}")
    sym, spec = text.split("=", 1)
    if not sym.strip() or not spec.strip():
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SPEC, got {text!r}")
    return sym.strip(), spec.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedft", description="Finite-element orbital-free DFT (TF + λ·vW + LDA).")
    parser.add_argument("--version", action="version", version=f"fedft {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="ground state of one periodic structure",
        description="Compute the ground state of one periodic structure; print the energy and "
                    "forces and optionally write a JSON summary and the fields for ParaView.")
    run.add_argument("structure", help="structure file (any format ase.io.read accepts)")
    run.add_argument("--pseudo", action="append", type=_pseudo_arg, required=True,
                     metavar="SYMBOL=SPEC",
                     help="pseudopotential of an element: a .psp8/.recpot/.upf file or "
                          "erf:Z:RC (RC in Å); repeat for each element")
    run.add_argument("--kinetic-lambda", type=float, required=True, metavar="L",
                     help="λ of the von Weizsäcker term (TF + λ·vW)")
    run.add_argument("--preset", default="accurate", choices=sorted(PRESETS),
                     help="accuracy preset (default: accurate)")
    run.add_argument("--gauge", default="gradient", choices=["gradient", "laplacian"],
                     help="gauge of the von Weizsäcker energy density (default: gradient)")
    run.add_argument("--json", type=Path, metavar="PATH", help="write a JSON summary here")
    run.add_argument("--fields", type=Path, metavar="PATH.xdmf",
                     help="write mesh and fields (.xdmf or .vtu) for ParaView")
    run.add_argument("--index", default=-1, type=int,
                     help="which image of a multi-image structure file (default: last)")
    return parser


def _read_structure(path: str, index: int):
    from ase.io import read

    if not Path(path).is_file():
        raise FedftError(f"structure file {path} does not exist")
    try:
        return read(path, index=index)
    except Exception as exc:  # ase raises many kinds
        raise FedftError(f"cannot read structure {path}: {exc}") from exc


def _check_output(path: Path | None, suffixes: tuple) -> None:
    if path is None:
        return
    if path.suffix not in suffixes:
        raise FedftError(f"{path}: expected a file ending in {' or '.join(suffixes)}")
    if not path.parent.resolve().is_dir():
        raise FedftError(f"output directory {path.parent} does not exist")


def cmd_run(args) -> int:
    from tqdm import tqdm

    from ._compute import compute
    from ._result import write_json_atomic
    from ._units import HARTREE

    _check_output(args.json, (".json",))
    _check_output(args.fields, (".xdmf", ".vtu"))
    atoms = _read_structure(args.structure, args.index)
    pseudos = dict(args.pseudo)
    bar = tqdm(desc="minimising", unit="it", file=sys.stderr, leave=False,
               disable=None, bar_format="{desc}: {n} it [{elapsed}] {postfix}")

    def progress(entry):
        bar.update(1)
        bar.set_postfix_str(f"E={entry['energy'] * HARTREE:.6f} eV "
                            f"dE={entry['delta_energy'] * HARTREE:.1e} eV")

    try:
        result = compute(atoms, pseudos, args.kinetic_lambda, preset=args.preset,
                         gauge=args.gauge, progress=progress)
    except ConvergenceError as exc:
        bar.close()
        print(f"fedft: not converged: {exc}", file=sys.stderr)
        if args.json:
            write_json_atomic(args.json, {"converged": False, "error": str(exc),
                                          "history": exc.history})
        return EXIT_NOT_CONVERGED
    bar.close()
    n = len(result.atoms)
    print(f"energy      {result.energy:.8f} eV  ({result.energy / n:.8f} eV/atom)")
    for name in ("tf", "vw", "xc", "hartree", "electron_ion", "ewald"):
        print(f"  {name:<14}{result.components[name]:.8f} eV")
    print(f"converged   True in {len(result.history) - 1} iterations, "
          f"{result.mesh.n_dofs} DOFs, {sum(result.timings.values()):.1f} s")
    print("forces (eV/Å)")
    for sym, f in zip(result.atoms.get_chemical_symbols(), result.forces):
        print(f"  {sym:<3}{f[0]: .6f} {f[1]: .6f} {f[2]: .6f}")
    print(f"max |F|     {np.abs(result.forces).max():.6f} eV/Å")
    if args.json:
        result.write_json(args.json)
        print(f"summary     {args.json}")
    if args.fields:
        result.write_fields(args.fields)
        print(f"fields      {args.fields}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return cmd_run(args)
    except FedftError as exc:
        print(f"fedft: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
