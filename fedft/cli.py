"""The ``fedft`` command line.

``fedft run STRUCTURE --pseudo SYMBOL=SPEC [--pseudo ...] --kinetic-lambda L [--preset NAME]
[--json PATH] [--fields PATH.xdmf]``

``fedft label INPUT -o OUT.h5 [--workers N] [--scheduler ADDRESS] [--preset NAME]
[--pseudo SYMBOL=SPEC ...] [--kinetic-lambda L] [--gauge G] [--set NAME=VALUE ...]``

``fedft dataset info|check|export PATH ...``

Exit codes: 0 success, 2 input error, 3 not converged / some structures failed / check failed.
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
EXIT_FAILED = 3


def _pseudo_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"expected SYMBOL=SPEC (e.g. Al=Al.psp8 or Al=erf:3:0.529), got {text!r}")
    sym, spec = text.split("=", 1)
    if not sym.strip() or not spec.strip():
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SPEC, got {text!r}")
    return sym.strip(), spec.strip()


def _setting_arg(text: str) -> tuple[str, object]:
    import ast

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. max_iter=100), got {text!r}")
    name, value = (t.strip() for t in text.split("=", 1))
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if value.isidentifier():  # a word, e.g. grading=all
            return name, value
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value must be a number, a word or None (e.g. spacing=0.5, "
            "grading=all)") from None


def _add_label(sub) -> None:
    p = sub.add_parser(
        "label", help="label many structures into one HDF5 dataset (parallel, resumable)",
        description="Compute the ground state of every structure of INPUT and store densities, "
                    "energy densities, energies and forces in OUT.h5. Rerunning skips the "
                    "structures already labelled (content-addressed), so the command is "
                    "idempotent and resumes after a crash. For an existing OUT.h5, omitted "
                    "--preset/--pseudo/--kinetic-lambda/--gauge default to the file's.")
    p.add_argument("input", help="structures: any file ase.io.read(..., index=':') accepts "
                                 "(extxyz, .traj, POSCAR, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.h5",
                   help="dataset file to create or extend")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: number of CPUs)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask distributed cluster through this scheduler (e.g. "
                        "tcp://host:8786); shards are written beside OUT.h5, which must be on "
                        "a file system the workers share")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="accuracy preset (default: the file's settings, else accurate)")
    p.add_argument("--pseudo", action="append", type=_pseudo_arg, metavar="SYMBOL=SPEC",
                   help="pseudopotential of an element (.psp8/.recpot/.upf path or erf:Z:RC, "
                        "RC in Å); repeat for each element")
    p.add_argument("--kinetic-lambda", type=float, metavar="L",
                   help="λ of the von Weizsäcker term (required for a new dataset)")
    p.add_argument("--gauge", choices=["gradient", "laplacian"],
                   help="gauge of the stored vW energy density (default: gradient)")
    p.add_argument("--set", action="append", type=_setting_arg, default=[],
                   metavar="NAME=VALUE", help="override a solver setting (e.g. max_iter=100, "
                                              "spacing=0.5 in bohr); repeatable")
    p.add_argument("--index", default=":", help="ase.io index of the images to label "
                                                "(default ':' = all)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the run summary here")


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="inspect, verify and export a labelled dataset",
                       description="Inspect, verify and export a dataset written by "
                                   "`fedft label`.")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    info = dsub.add_parser("info", help="summarise a dataset")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    check = dsub.add_parser(
        "check", help="verify a dataset (exit 3 if anything is wrong)",
        description="Verify every structure group is complete, arrays are finite, energy "
                    "densities integrate to the stored energies, and no structure is stored "
                    "twice. Exits 3 and lists the problems otherwise.")
    check.add_argument("path", type=Path)
    check.add_argument("--rtol", type=float, default=1e-8,
                       help="tolerance of the energy integrals (default 1e-8)")
    exp = dsub.add_parser(
        "export", help="write one structure's fields to XDMF (ParaView) and/or a cube file",
        description="Write one structure's mesh and fields to XDMF/VTU and/or one field to a "
                    "Gaussian cube file on a regular grid (bohr, atomic units).")
    exp.add_argument("path", type=Path)
    which = exp.add_mutually_exclusive_group()
    which.add_argument("--key", help="structure key (see `fedft dataset info`)")
    which.add_argument("--index", type=int, default=0,
                       help="position of the structure in the dataset (default 0)")
    exp.add_argument("--xdmf", type=Path, metavar="OUT.xdmf",
                     help="write the mesh and every field (.xdmf or .vtu)")
    exp.add_argument("--cube", type=Path, metavar="OUT.cube", help="write one field as cube")
    exp.add_argument("--field", default="rho", help="field of the cube file (default rho)")
    exp.add_argument("--grid", type=int, nargs=3, metavar=("NX", "NY", "NZ"),
                     help="cube grid points along each lattice vector (default: the mesh's "
                          "node lattice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedft", description="Finite-element orbital-free DFT (TF + λ·vW + LDA).")
    parser.add_argument("--version", action="version", version=f"fedft {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="ground state of one structure (periodic or isolated)",
        description="Compute the ground state of one structure, a periodic cell (pbc True) or "
                    "an isolated molecule or cluster (pbc False: open boundaries, in its cell "
                    "or in a box 'vacuum' bohr larger than the atoms, mesh graded towards the "
                    "nuclei); print the energy and forces (and charge and dipole of isolated "
                    "structures) and optionally write a JSON summary and the fields for "
                    "ParaView.")
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
    run.add_argument("--set", action="append", type=_setting_arg, default=[],
                     metavar="NAME=VALUE", help="override a solver setting (e.g. max_iter=100, "
                                                "spacing=0.5 in bohr); repeatable")
    run.add_argument("--index", default=-1, type=int,
                     help="which image of a multi-image structure file (default: last)")
    run.add_argument("--charge", type=float, metavar="Q",
                     help="net charge (e) of an isolated structure (default: the sum of the "
                          "file's initial charges, usually 0)")
    _add_label(sub)
    _add_dataset(sub)
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
        de = entry["delta_energy"]
        bar.set_postfix_str(f"E={entry['energy'] * HARTREE:.6f} eV"
                            + (f" dE={de * HARTREE:.1e} eV" if de is not None else ""))

    try:
        result = compute(atoms, pseudos, args.kinetic_lambda, preset=args.preset,
                         gauge=args.gauge, progress=progress, charge=args.charge,
                         **dict(args.set))
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
    print(f"chemical potential {result.chemical_potential:.6f} eV")
    if result.dipole is not None:
        print(f"isolated    charge {result.charge:g} e, dipole "
              f"{' '.join(f'{x:.6f}' for x in result.dipole)} e·Å (about the origin)")
    if args.json:
        result.write_json(args.json)
        print(f"summary     {args.json}")
    if args.fields:
        result.write_fields(args.fields)
        print(f"fields      {args.fields}")
    return 0


def _dask_executor(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise FedftError("--scheduler needs Dask distributed: pip install distributed") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise FedftError(f"cannot reach the Dask scheduler at {address} ({exc}); start one "
                         "with `dask scheduler` and workers with `dask worker ADDRESS`") from exc
    return client, client.get_executor()


def cmd_label(args) -> int:
    from tqdm import tqdm

    from ._labelling import label
    from ._result import write_json_atomic
    from ._structures import read_structures

    if args.json is not None:
        _check_output(args.json, (".json",))
    structures = read_structures(args.input, index=args.index)
    client = executor = None
    if args.scheduler:
        client, executor = _dask_executor(args.scheduler)
    bar = None
    n_failed = 0

    def progress(outcome, done, total):
        nonlocal bar, n_failed
        if bar is None:
            bar = tqdm(total=total, desc="labelling", unit="structure", file=sys.stderr,
                       disable=None, dynamic_ncols=True)
        if outcome is not None:
            n_failed += outcome["status"] != "ok"
            bar.set_postfix_str(f"failed={n_failed}", refresh=False)
            bar.update(1)

    try:
        summary = label(structures, args.output, pseudopotentials=dict(args.pseudo or []) or None,
                        kinetic_lambda=args.kinetic_lambda, preset=args.preset,
                        gauge=args.gauge, executor=executor, workers=args.workers,
                        progress=progress, **dict(args.set))
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    print(f"labelled    {args.output}: {summary.total} structures, {summary.computed} "
          f"computed, {summary.recovered} recovered from shards, {summary.skipped} already "
          f"present, {summary.duplicates} duplicate(s), {summary.failed} failed "
          f"({summary.seconds:.1f} s)")
    for key, reason in summary.failures.items():
        print(f"failed      {key}: {reason}")
    if args.json:
        write_json_atomic(args.json, summary.as_dict())
    return EXIT_FAILED if summary.failed else 0


def cmd_dataset(args) -> int:
    import json

    from ._dataset import Dataset, check_dataset, dataset_info

    if args.dataset_command == "info":
        info = dataset_info(args.path)
        if args.json:
            print(json.dumps(info, indent=1))
            return 0
        print(f"dataset     {info['path']} ({info['bytes'] / 1e6:.1f} MB)")
        print(f"structures  {info['structures']} labelled, {info['failed']} failed, "
              f"{info['runs']} run(s)")
        print(f"functional  {info['functional']}, gauge {info['gauge']}, "
              f"λ = {info['kinetic_lambda']:g}")
        print(f"settings    {info['settings']}")
        for sym, p in info["pseudopotentials"].items():
            print(f"pseudo      {sym}: {p['spec']} (sha256 {p['digest'][:12]})")
        if info["structures"]:
            print(f"formulas    {info['formulas']}")
            print(f"nodes       {info['nodes'][0]} .. {info['nodes'][1]} per structure")
            print(f"energy      {info['energy_per_atom'][0]:.6f} .. "
                  f"{info['energy_per_atom'][1]:.6f} eV/atom")
        print(f"code        {info['code_version']}")
        for key, f in info["failures"].items():
            print(f"failed      {key} (#{f['index']}, {f['formula']}): {f['reason']}")
        return 0
    if args.dataset_command == "check":
        report = check_dataset(args.path, rtol=args.rtol)
        for problem in report.problems:
            print(f"problem     {problem}")
        status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(f"check       {args.path}: {report.n_structures} structures, "
              f"{report.n_failed} recorded failures: {status}")
        return 0 if report.ok else EXIT_FAILED
    if args.dataset_command == "export":
        from ._export import export_cube, export_xdmf

        if args.xdmf is None and args.cube is None:
            raise FedftError("nothing to export: give --xdmf OUT.xdmf and/or --cube OUT.cube")
        with Dataset(args.path) as ds:
            item = args.key if args.key is not None else args.index
            try:
                record = ds.read(item)
            except (KeyError, IndexError) as exc:
                raise FedftError(str(exc).strip('"')) from None
        if args.field not in record.fields:
            raise FedftError(f"no field {args.field!r}; stored: {sorted(record.fields)}")
        if args.xdmf is not None:
            print(f"xdmf        {export_xdmf(record, args.xdmf)}")
        if args.cube is not None:
            print(f"cube        {export_cube(record, args.cube, args.field, args.grid)}")
        return 0
    return EXIT_INPUT


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "label":
            return cmd_label(args)
        if args.command == "dataset":
            return cmd_dataset(args)
    except FedftError as exc:
        print(f"fedft: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
