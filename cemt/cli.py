"""The ``cemt`` command: ``cemt train CONFIG.yaml``, ``cemt evaluate MODEL DATA.h5``,
``cemt curve ...``, ``cemt compare MODEL DATA.h5 -o REPORT_DIR`` and
``cemt pipeline [CONFIG.yaml] [-o DIR]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cemt", description="Chemical Environment Modeling Theory: train and evaluate "
        "models on GMP features of reference points (mesh nodes, atoms, bonds).")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser(
        "train", help="train a model from a YAML configuration",
        description="Train a model. Every configuration key, its default and meaning: "
        "`cemt train --template`. Outputs go to the configured output directory: config.yaml "
        "(resolved), metrics.csv, metrics.jsonl, checkpoint.pt, model.pt. Launch with "
        "`torchrun --nproc_per_node N -m cemt.cli train CONFIG.yaml` for data-parallel "
        "training.")
    t.add_argument("config", nargs="?", help="YAML configuration file")
    t.add_argument("--template", action="store_true",
                   help="print a configuration documenting every key with its default, and exit")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    e = sub.add_parser(
        "evaluate", help="errors of a trained model on a dataset",
        description="Energy MAE (meV/atom), force MAE (meV/Å), density NMAE (%%) and "
        "energy-density NMAE (%%, grid model) of a model on a fedft dataset.")
    e.add_argument("model", help="model file (model.pt of a training run)")
    e.add_argument("data", help="fedft dataset (HDF5)")
    e.add_argument("--select", metavar="START:STOP",
                   help="evaluate only these dataset positions (e.g. 80:100 for a held-out "
                        "test set); default all")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser(
        "curve", help="learning curves: test errors against the training-set size",
        description="Train one model per series and training-set size N (the first N "
        "structures of each configuration's data.train, a fixed budget of optimisation steps, "
        "no validation split) and evaluate each on held-out structures. Writes "
        "OUTPUT/<series>/n<N>/ (ordinary training runs), curve.csv, curve.json and curve.png, "
        "and prints the N at which each series first reaches 5 and 2 meV/atom.")
    c.add_argument("series", nargs="+", metavar="NAME=CONFIG.yaml",
                   help="a series: its name and training configuration")
    c.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20, 40, 80],
                   help="training-set sizes (default: 2 5 10 20 40 80)")
    c.add_argument("--test", required=True, help="dataset to evaluate on")
    c.add_argument("--select", metavar="START:STOP",
                   help="positions of the test structures in --test (e.g. 80:100)")
    c.add_argument("--steps", type=int, default=1500,
                   help="optimisation steps per run (default 1500)")
    c.add_argument("--max-epochs", type=int, default=500,
                   help="at most this many epochs per run (default 500)")
    c.add_argument("-o", "--output", default="cemt-curve", help="output directory")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    r = sub.add_parser(
        "compare", help="report where and how a model departs from the DFT labels",
        description="Write a report directory: metrics.csv/.md (per structure and overall: "
        "energy error, force MAE and max error, and for the grid model density and "
        "energy-density NMAE and max errors), parity plots and error histograms, slice "
        "pictures (DFT | model | difference of rho and the energy density) and XDMF field "
        "files for ParaView for the first --slices structures (grid model), summary.json and "
        "report.html. The report is built beside REPORT_DIR and renamed into place at the end; "
        "an existing REPORT_DIR is replaced only if it is empty or an earlier cemt compare "
        "report.")
    r.add_argument("model", help="model file (model.pt of a training run)")
    r.add_argument("data", help="fedft dataset (HDF5)")
    r.add_argument("-o", "--output", required=True, metavar="REPORT_DIR",
                   help="report directory (its parent must exist)")
    r.add_argument("--select", metavar="START:STOP",
                   help="compare only these dataset positions (as in cemt evaluate); "
                        "default all")
    r.add_argument("--slices", type=int, default=3, metavar="N",
                   help="structures that get slice pictures and XDMF field files "
                        "(grid model; default 3)")
    r.add_argument("--curve", metavar="PATH",
                   help="curve.json written by cemt curve (or its directory): add the "
                        "learning curve to the report")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = sub.add_parser(
        "pipeline", help="label a dataset, train the grid and atom models, compare them",
        description="The main job in one command: label structures with fedft into "
        "DIR/dataset.h5 (the last n_test of them held out), train the grid-centred model and "
        "the atom-centred baseline (DIR/grid, DIR/atom), compare both with DFT on the held-out "
        "structures (DIR/report-grid, DIR/report-atom) and write DIR/report.html and "
        "DIR/summary.json. Without CONFIG it runs the built-in example (32 strained and "
        "rattled 4-atom fcc Al cells, 6 held out, erf pseudopotential, about 5 minutes on 2 "
        "cores). Every "
        "configuration key: `cemt pipeline --template`. A rerun with the same configuration "
        "resumes: finished labels, trainings and reports are reused.")
    q.add_argument("config", nargs="?", help="YAML configuration (default: the built-in "
                   "example)")
    q.add_argument("-o", "--output", metavar="DIR",
                   help="output directory (default: the configuration's output, "
                        "./cemt-pipeline for the built-in example)")
    q.add_argument("--template", action="store_true",
                   help="print the default configuration documenting every key, and exit")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _pipeline(args) -> None:
    from ._pipeline import headline_table, pipeline

    cfg, base = None, None
    if args.config:
        from ._config import read_yaml
        cfg, base = read_yaml(args.config)
    s = pipeline(cfg, output=args.output, progress=not args.no_progress, base_dir=base)
    d = s["dataset"]
    print(f"dataset: {Path(s['output']) / d['path']} ({d['n_train']} training, "
          f"{d['n_test']} test structures)")
    print(f"test errors (model - DFT on dataset positions {d['test_select']}):")
    print(headline_table(s))
    print(f"report: {Path(s['output']) / s['report']}")


def _curve(args) -> None:
    from ._config import read_yaml
    from ._curves import first_reaching, learning_curve
    from ._errors import ConfigError

    series, base_dirs = {}, {}
    for item in args.series:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"series must be NAME=CONFIG.yaml, got {item!r}")
        series[name], base_dirs[name] = read_yaml(path)  # paths relative to the file
    rows = learning_curve(series, args.sizes, args.test, args.output, args.select,
                          steps=args.steps, max_epochs=args.max_epochs,
                          progress=not args.no_progress, base_dirs=base_dirs)
    print(f"{'series':<16}{'N':>5}{'E MAE meV/atom':>16}{'F MAE meV/Å':>14}"
          f"{'rho NMAE %':>12}{'eps NMAE %':>12}")
    for r in rows:
        print(f"{r['series']:<16}{r['n_train']:>5}{r['energy_mae_mev_atom']:>16.3f}"
              f"{r['force_mae_mev_A']:>14.2f}{_num(r['density_nmae_pct']):>12}"
              f"{_num(r['energy_density_nmae_pct']):>12}")
    for name in series:
        sel = [r for r in rows if r["series"] == name]
        reach = {t: first_reaching(sel, t) for t in (5.0, 2.0)}
        print(f"{name}: first N at <= 5 meV/atom: {reach[5.0]}; at <= 2 meV/atom: {reach[2.0]}")
    print(f"wrote {Path(args.output) / 'curve.csv'} and {Path(args.output) / 'curve.png'}")


def _num(v):
    return "n/a" if v is None else f"{v:.2f}"


def _fmt(v, unit):
    return "n/a" if v is None else f"{v:.4g} {unit}"


def main(argv=None) -> int:
    """Entry point of the ``cemt`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        _parser().print_help()
        return 2
    import fedft

    from ._errors import CemtError

    try:
        if args.command == "train":
            from ._config import default_config_text, load_config
            if args.template:
                print(default_config_text(), end="")
                return 0
            if not args.config:
                print("cemt train: give a CONFIG.yaml (or --template)", file=sys.stderr)
                return 2
            from ._train import train
            cfg = load_config(args.config)
            if args.no_progress:
                cfg["training"]["progress"] = False
            summary = train(cfg)
            print(f"trained {summary['epochs']} epochs, best loss {summary['best']:.6g}; "
                  f"model: {summary['model']}")
        elif args.command == "evaluate":
            from ._evaluate import evaluate
            from ._train import load_model
            model = load_model(args.model)
            m = evaluate(model, args.data, progress=not args.no_progress,
                         select=args.select)
            if args.json:
                print(json.dumps({k: v for k, v in m.items() if k != "per_structure"}))
            else:
                print(f"structures:           {m['n_structures']}")
                print(f"energy MAE:           {_fmt(m['energy_mae_mev_atom'], 'meV/atom')}")
                print(f"force MAE:            {_fmt(m['force_mae_mev_A'], 'meV/Å')}")
                print(f"density NMAE:         {_fmt(m['density_nmae_pct'], '%')}")
                print(f"energy-density NMAE:  {_fmt(m['energy_density_nmae_pct'], '%')}")
        elif args.command == "pipeline":
            if args.template:
                from ._pipeline import pipeline_config_text
                print(pipeline_config_text(), end="")
                return 0
            _pipeline(args)
        elif args.command == "curve":
            _curve(args)
        elif args.command == "compare":
            from ._compare import compare
            s = compare(args.model, args.data, args.output, select=args.select,
                        max_slices=args.slices, curve=args.curve,
                        progress=not args.no_progress)
            m = s["overall"]
            print(f"structures:           {m['n_structures']}")
            print(f"energy MAE:           {_fmt(m['energy_mae_mev_atom'], 'meV/atom')}")
            print(f"force MAE:            {_fmt(m['force_mae_mev_A'], 'meV/Å')}")
            print(f"density NMAE:         {_fmt(m['density_nmae_pct'], '%')}")
            print(f"energy-density NMAE:  {_fmt(m['energy_density_nmae_pct'], '%')}")
            print(f"report: {Path(s['output']) / 'report.html'}")
    except (CemtError, fedft.FedftError) as exc:
        print(f"cemt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker_exit(status: int) -> None:
    """End a ``torchrun`` worker (``WORLD_SIZE`` > 1) with ``os._exit`` once its output is
    flushed: every result is written and the process group destroyed by then, and the C++
    teardown of torch's gloo backend at interpreter exit aborts now and then ("terminate
    called without an active exception", SIGABRT, ~1 in 100 two-process trainings on 2
    cores), which torchrun reports as a failed run."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(status)


def run() -> None:
    """The ``cemt`` console script and ``python -m cemt.cli``: :func:`main`, then exit with its
    status (torchrun workers through :func:`_worker_exit`)."""
    status = main()
    _worker_exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
