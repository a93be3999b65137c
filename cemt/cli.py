"""The ``cemt`` command: ``cemt train CONFIG.yaml`` and ``cemt evaluate MODEL DATA.h5``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

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
    return p


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
    except (CemtError, fedft.FedftError) as exc:
        print(f"cemt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
