"""Accuracy of a trained model on a dataset (``BACKGROUND.md`` §6 metrics)."""

from __future__ import annotations

import logging

import numpy as np

from ._data import load_records

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


def evaluate(model, path, progress: bool = False, select=None) -> dict:
    """Energy, force and field errors of ``model`` on every structure of a dataset.

    The dataset is checked against the model's ``data_spec`` and elements first. Energies and
    forces come from :meth:`CemtModel.energy_forces` (autograd through the featurizer); the grid
    model uses each record's mesh nodes and quadrature weights as reference points.

    Parameters
    ----------
    model : CemtModel
    path : str or Path
        fedft dataset.
    progress : bool
        Show a tqdm bar.
    select : str or slice, optional
        Positions of the structures to evaluate (``"80:100"``); default all.

    Returns
    -------
    dict
        ``n_structures``; ``energy_mae_mev_atom`` (mean over structures of |ΔE|/N, meV/atom);
        ``force_mae_mev_A`` (mean over all components, meV/Å); for the grid model
        ``density_nmae_pct`` and ``energy_density_nmae_pct`` (per structure
        100 ∫|Δf| / ∫|f| with the quadrature weights, averaged over structures), else None;
        ``per_structure``: list of dicts with the same quantities per structure (key,
        energy_error_mev_atom, force_mae_mev_A, ...).
    """
    from tqdm import tqdm

    grid = model.kind == "grid"
    _, records = load_records(path, model.data_spec, fields=grid, select=select)
    for rec in records:
        model.check_elements(rec.atoms.numbers)
    rows = []
    for rec in tqdm(records, desc="evaluate", disable=not progress, leave=False):
        pts = rec.points if grid else None
        w = rec.weights if grid else None
        energy, forces = model.energy_forces(rec.atoms, pts, w)
        n = len(rec.atoms)
        row = {"key": rec.key, "n_atoms": n,
               "energy_error_mev_atom": 1000 * (energy - rec.energy) / n,
               "force_abs_sum": float(np.abs(forces - rec.forces).sum()),
               "force_count": int(np.size(rec.forces))}
        if grid:
            eps, rho = model.predict_fields(rec.atoms, rec.points)
            ref_e, ref_r = rec.fields["energy_density"], rec.fields["rho"]
            row["density_nmae_pct"] = 100 * float(np.dot(w, np.abs(rho - ref_r))
                                                  / np.dot(w, np.abs(ref_r)))
            row["energy_density_nmae_pct"] = 100 * float(np.dot(w, np.abs(eps - ref_e))
                                                         / np.dot(w, np.abs(ref_e)))
        row["force_mae_mev_A"] = 1000 * row["force_abs_sum"] / row["force_count"]
        rows.append(row)
    out = {"n_structures": len(rows),
           "energy_mae_mev_atom": float(np.mean([abs(r["energy_error_mev_atom"]) for r in rows])),
           "force_mae_mev_A": 1000 * sum(r["force_abs_sum"] for r in rows)
           / sum(r["force_count"] for r in rows),
           "density_nmae_pct": float(np.mean([r["density_nmae_pct"] for r in rows]))
           if grid else None,
           "energy_density_nmae_pct": float(np.mean([r["energy_density_nmae_pct"]
                                                     for r in rows])) if grid else None,
           "per_structure": rows}
    logger.info("evaluated %d structures: %s", len(rows),
                {k: v for k, v in out.items() if k != "per_structure"})
    return out
