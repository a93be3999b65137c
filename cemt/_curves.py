"""Learning curves: test errors against the number of training structures.

For each model series (one training configuration, e.g. the grid model on fields or the
atom-centred model on energies + forces) and each size N, a model is trained on the first N
structures of the configuration's ``data.train`` (dataset positions 0..N-1) with a fixed
optimisation budget and no validation split, then evaluated on a held-out selection. Each run
is an ordinary training run in ``OUTPUT/<series>/n<N>/`` (resumable); featurized structures are
shared between runs in memory.

Budget: ``epochs(N) = min(max_epochs, ceil(steps / ceil(N / batch_size)))``, i.e. about
``steps`` optimisation steps, but at most ``max_epochs`` passes over small sets.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from pathlib import Path

from ._config import resolve_config
from ._data import open_dataset, parse_select, tensor_cache
from ._errors import ConfigError

__all__ = ["learning_curve", "first_reaching", "plot_learning_curve", "CURVE_COLUMNS"]

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ["series", "kind", "labels", "n_train", "epochs", "seconds",
                 "energy_mae_mev_atom", "force_mae_mev_A", "density_nmae_pct",
                 "energy_density_nmae_pct"]


def _epochs(n: int, batch_size: int, steps: int, max_epochs: int) -> int:
    return int(min(max_epochs, math.ceil(steps / math.ceil(n / batch_size))))


def first_reaching(rows: list, threshold: float, key: str = "energy_mae_mev_atom"):
    """Smallest ``n_train`` whose ``key`` is at most ``threshold`` and stays so for every
    larger N in ``rows`` (one series); None if never."""
    ordered = sorted(rows, key=lambda r: r["n_train"])
    for i, row in enumerate(ordered):
        if all(r[key] is not None and r[key] <= threshold for r in ordered[i:]):
            return row["n_train"]
    return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_rows(out: Path, rows: list) -> None:
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CURVE_COLUMNS})
    _write_atomic(out / "curve.csv", buf.getvalue())
    _write_atomic(out / "curve.json", json.dumps(rows, indent=1))


def learning_curve(series: dict, sizes, test_data, output, test_select=None, steps: int = 1500,
                   max_epochs: int = 500, progress: bool = True,
                   base_dirs: dict | None = None) -> list:
    """Train one model per (series, N) and evaluate each on held-out data.

    Parameters
    ----------
    series : dict of str -> dict
        Series name -> user training configuration (as for ``cemt train``; ``output`` and
        ``data.max_structures`` are set here, ``data.validation_fraction`` is forced to 0).
    sizes : sequence of int
        Training-set sizes N (each at most the number of structures in ``data.train``).
    test_data : str or Path
        Dataset to evaluate on.
    output : str or Path
        Directory for the runs, ``curve.csv``, ``curve.json`` and ``curve.png``.
    test_select : str, optional
        Positions of the test structures in ``test_data`` (``"80:100"``).
    steps, max_epochs : int
        Optimisation budget (module notes).
    progress : bool
    base_dirs : dict of str -> Path, optional
        Per series, the directory its relative paths are taken from (its configuration
        file's); default the working directory.

    Returns
    -------
    list of dict
        One row per run with :data:`CURVE_COLUMNS`.
    """
    from tqdm import tqdm

    from ._evaluate import evaluate
    from ._train import load_model, train

    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"sizes must be positive integers, got {sizes}")
    if steps < 1 or max_epochs < 1:
        raise ConfigError("steps and max_epochs must be >= 1")
    parse_select(test_select)
    out = Path(output).resolve()  # the configurations resolve relative paths elsewhere
    out.mkdir(parents=True, exist_ok=True)
    resolved = {}
    for name, user in series.items():
        cfg = copy.deepcopy(user)
        cfg.setdefault("data", {})["validation_fraction"] = 0.0
        cfg["output"] = str(out / name)
        resolved[name] = resolve_config(cfg, base_dir=(base_dirs or {}).get(name))
        with open_dataset(resolved[name]["data"]["train"]) as ds:
            n_data = len(ds)
        if sizes[-1] > n_data:
            raise ConfigError(f"series {name}: the largest size {sizes[-1]} exceeds the "
                              f"{n_data} structures of {resolved[name]['data']['train']}")
    rows = []
    jobs = [(name, n) for name in resolved for n in sizes]
    bar = tqdm(jobs, desc="learning curve", disable=not progress)
    with tensor_cache():
        for name, n in bar:
            cfg = copy.deepcopy(resolved[name])
            tcfg = cfg["training"]
            cfg["data"]["max_structures"] = n
            cfg["output"] = str(out / name / f"n{n}")
            tcfg["epochs"] = _epochs(n, tcfg["batch_size"], steps, max_epochs)
            tcfg["early_stopping"] = None
            tcfg["progress"] = False
            bar.set_postfix(series=name, n=n, epochs=tcfg["epochs"])
            t0 = time.perf_counter()
            summary = train(cfg)
            model = load_model(summary["model"])
            m = evaluate(model, test_data, select=test_select)
            row = {"series": name, "kind": cfg["model"]["kind"],
                   "labels": "+".join(tcfg["labels"]), "n_train": n,
                   "epochs": tcfg["epochs"], "seconds": round(time.perf_counter() - t0, 1),
                   **{k: m[k] for k in CURVE_COLUMNS[6:]}}
            rows.append(row)
            logger.info("learning curve %s N=%d: %s", name, n, row)
            _write_rows(out, rows)
    plot_learning_curve(rows, out / "curve.png")
    return rows


def plot_learning_curve(rows: list, path) -> None:
    """Log-log plot of the test energy and force MAE against N, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in dict.fromkeys(r["series"] for r in rows):
        sel = sorted((r for r in rows if r["series"] == name), key=lambda r: r["n_train"])
        n = [r["n_train"] for r in sel]
        axes[0].loglog(n, [r["energy_mae_mev_atom"] for r in sel], "o-", label=name)
        axes[1].loglog(n, [r["force_mae_mev_A"] for r in sel], "o-", label=name)
    for ax, what in zip(axes, ("energy MAE (meV/atom)", "force MAE (meV/Å)")):
        ax.set_xlabel("training structures N")
        ax.set_ylabel(f"test {what}")
        ax.grid(True, which="both", alpha=0.3)
    for level in (5.0, 2.0):
        axes[0].axhline(level, color="grey", lw=0.8, ls=":")
    axes[0].legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
