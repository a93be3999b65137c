"""A fixed reference energy density for grid models: one radial profile per element.

The DFT energy density of a pseudopotential solid has a deep, narrow peak on every nucleus
(in fedft's screened electrostatic form, each ion's interaction with its surroundings, tens of
eV/Å³); most of it moves rigidly with its atom. A grid model learns the residual on top of

    ε_ref(r) = Σ_I Σ_k B_k(Z_I) exp(-β_k |r - R_I - L|²)      (eV/Å³, all periodic images)

with the amplitudes ``B_k`` fitted by linear least squares to the training fields on a fixed
ladder of exponents. Because each term is a rigid function of ``r - R_I``, its integral is a
constant per atom, ``Σ_k B_k (π/β_k)^{3/2}``, which the model adds analytically
(:meth:`cemt.GridModel.reference_terms`): the reference carries no force and no egg-box; the network spends its capacity on how the
field depends on the environment, not on reproducing the peaks. ``ε_ref`` is the order −1
(model density) GMP feature of a pseudodensity with these primitives, so it comes with the
FFT path, periodic images and exact derivatives.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ._errors import DataError
from ._gmp import GMPFeaturizer

__all__ = ["REFERENCE_WIDTHS", "fit_reference", "reference_featurizer", "evaluate_reference"]

logger = logging.getLogger(__name__)

#: Gaussian widths s (Å) of the reference primitives exp(-r²/s²).
REFERENCE_WIDTHS = (0.2, 0.3, 0.45, 0.65, 0.9)


def reference_featurizer(reference: dict, dtype) -> GMPFeaturizer:
    """The order −1 featurizer that evaluates ``ε_ref`` (eV/Å³) from ``{symbol: {"B", "beta"}}``."""
    # amplitudes are O(10) eV/Å³: a 1e-6 threshold keeps the FFT lattice sums exact to ~1e-12
    # eV/Å³ while bounding the frequency box
    return GMPFeaturizer([-1], [], reference, dtype=dtype, overlap_threshold=1e-6)


def fit_reference(records, max_structures: int = 8, widths=REFERENCE_WIDTHS,
                  field: str = "energy_density") -> dict:
    """Fit the per-element reference profile to the energy density of training records.

    Parameters
    ----------
    records : list of fedft.Record
        With ``points``, ``weights`` and ``fields[field]`` (eV/Å³).
    max_structures : int
        Use at most this many records (the profile is an average; more add little).
    widths : sequence of float
        Widths s (Å) of the primitives ``exp(-r²/s²)``.
    field : str

    Returns
    -------
    dict
        ``{symbol: {"B": [...], "beta": [...]}}`` (B in eV/Å³, beta in 1/Å²).

    Raises
    ------
    DataError
        No record has the field.
    """
    use = [r for r in records if field in r.fields][:max_structures]
    if not use:
        raise DataError(f"no training structure has the field {field!r} to fit the reference "
                        "energy density to")
    symbols = sorted({s for r in use for s in r.atoms.get_chemical_symbols()})
    beta = [1.0 / s**2 for s in widths]
    rows, rhs, wts = [], [], []
    for rec in use:
        cols = []
        for sym in symbols:
            for b in beta:
                # one unit primitive on the atoms of this element only
                table = {s: {"B": [1.0 if s == sym else 0.0], "beta": [b]} for s in symbols}
                cols.append(evaluate_reference(table, rec.atoms, rec.points))
        a = np.column_stack(cols + [np.ones(len(rec.points))])  # + a free constant
        rows.append(a)
        rhs.append(np.asarray(rec.fields[field], dtype=np.float64))
        wts.append(np.sqrt(np.asarray(rec.weights, dtype=np.float64)))
    a = np.vstack(rows) * np.concatenate(wts)[:, None]
    y = np.concatenate(rhs) * np.concatenate(wts)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    out, k = {}, 0
    for sym in symbols:
        out[sym] = {"B": [float(c) for c in coef[k:k + len(beta)]],
                    "beta": [float(b) for b in beta]}
        k += len(beta)
    resid = y - a @ coef
    logger.info("reference energy density fitted on %d structures: weighted RMS of the field "
                "%.4g, of the residual %.4g eV/Å³", len(use),
                float(np.sqrt(np.mean(y**2))), float(np.sqrt(np.mean(resid**2))))
    return out


def evaluate_reference(reference: dict, atoms, points) -> np.ndarray:
    """``ε_ref`` (eV/Å³) at ``points`` (Å), shape (P,); by FFT when the points are a uniform
    grid of a periodic cell."""
    from ._gmp_fft import match_grid

    feat = reference_featurizer(reference, torch.float64)
    match = match_grid(points, atoms.cell.array) if np.all(atoms.pbc) else None
    if match is None:
        return feat.features(atoms, points)[:, 0].numpy()
    grid = feat.features_grid(atoms, match.shape, shift=match.shift)[:, 0].numpy()
    return grid[match.index]
