"""Train the grid-centred model and the atom-centred baseline on a dataset, then compare both
with DFT on held-out structures.

The two training configurations are ``examples/configs/grid_fields.yaml`` (fields + energies +
forces) and ``examples/configs/atom_ef.yaml`` (energies + forces); by default they train on
the first 80 structures of ``al_gnh.h5`` (``examples/build_dataset.py``) and the last
structures after those are the test set. Writes ``OUT/grid`` and ``OUT/atom`` (cemt train
runs, resumable) and ``OUT/report-grid`` and ``OUT/report-atom`` (cemt compare reports), and
prints the test errors of both models.

Run: ``python examples/train_and_compare.py [--data al_gnh.h5] [--out runs]``; smaller:
``--structures 20 --epochs 10``; any training key of both configurations:
``--set training.lr=0.003`` (YAML values, repeatable).
"""

import argparse
import copy
from pathlib import Path

import yaml

import cemt

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS = {"grid": "grid_fields.yaml", "atom": "atom_ef.yaml"}


def configs(data, out, structures=None, epochs=None, settings=()):
    """The two training configurations, resolved, with the command-line changes applied."""
    out_cfgs = {}
    for name, file in MODELS.items():
        path = CONFIGS / file
        cfg = yaml.safe_load(path.read_text())
        cfg["output"] = str(Path(out).absolute() / name)
        if data is not None:
            cfg["data"]["train"] = str(Path(data).absolute())
        if structures is not None:
            cfg["data"]["max_structures"] = structures
        tcfg = cfg.setdefault("training", {})
        if epochs is not None:  # the fields warm-up shrinks in proportion
            warmup = tcfg.get("fields_warmup", 0)
            tcfg["fields_warmup"] = warmup * epochs // tcfg.get("epochs", 100)
            tcfg["epochs"] = epochs
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"error: --set needs KEY=VALUE, got {item!r}")
            node = cfg
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        out_cfgs[name] = cemt.resolve_config(copy.deepcopy(cfg), base_dir=path.parent)
    return out_cfgs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="fedft dataset (default: the configurations' al_gnh.h5 at the "
                             "repository root)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="output directory")
    parser.add_argument("--structures", type=int, default=None,
                        help="train on the first N structures (default: the configurations' "
                             "80)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per model (default: the configurations' 200)")
    parser.add_argument("--test", default=None, metavar="START:STOP",
                        help="test structures (default: every structure after the training "
                             "ones)")
    parser.add_argument("--slices", type=int, default=3,
                        help="test structures with slice pictures in the grid report")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="override a training key of both models")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    cfgs = configs(args.data, args.out, args.structures, args.epochs, args.settings)
    if args.test is None and any(c["data"]["max_structures"] is None for c in cfgs.values()):
        raise SystemExit("error: the models train on every structure; give --structures N "
                         "or --test START:STOP for a held-out test set")
    results = {}
    for name, cfg in cfgs.items():
        cfg["training"]["progress"] = not args.no_progress
        print(f"training the {name} model: {cfg['training']['epochs']} epochs on "
              f"{cfg['data']['max_structures'] or 'all'} structures of {cfg['data']['train']}")
        summary = cemt.train(cfg)
        select = args.test or f"{cfg['data']['max_structures']}:"
        report = cemt.compare(summary["model"], cfg["data"]["train"],
                              args.out / f"report-{name}", select=select,
                              max_slices=args.slices if name == "grid" else 0,
                              progress=not args.no_progress)
        results[name] = report["overall"]
    print(f"\ntest errors on {select}:")
    print(f"{'model':<6}{'E MAE meV/atom':>16}{'F MAE meV/Å':>14}{'rho NMAE %':>12}"
          f"{'eps NMAE %':>12}")
    for name, m in results.items():
        print(f"{name:<6}" + "".join(
            f"{'n/a' if m[k] is None else format(m[k], '.4g'):>{w}}" for k, w in
            (("energy_mae_mev_atom", 16), ("force_mae_mev_A", 14), ("density_nmae_pct", 12),
             ("energy_density_nmae_pct", 12))))
    for name in results:
        print(f"report: {args.out / f'report-{name}' / 'report.html'}")
    return results


if __name__ == "__main__":
    main()
