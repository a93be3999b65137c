"""Training data for cemt models, read from fedft datasets (``fedft.read_dataset``).

A dataset is checked before anything is computed: units, gauge, functional and
pseudopotentials against what a model expects (:func:`check_compatible`), and every record for
non-finite values, non-positive quadrature weights and energy-density fields that do not
integrate to the total energy (:func:`validate_record`). Each structure is then turned into the
tensors a model trains on (:func:`build_tensors`): features of its reference points, their
weights, and (for force training) the Jacobians ``∂G/∂R``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._errors import DataError, DataMismatchError

__all__ = ["EXPECTED_UNITS", "StructureTensors", "open_dataset", "dataset_spec",
           "spec_differences", "check_compatible", "validate_record", "load_records",
           "build_tensors", "split_indices", "sample_points", "parse_select", "tensor_cache"]

logger = logging.getLogger(__name__)

#: Units cemt expects of a dataset (``Dataset.units``); all ASE units.
EXPECTED_UNITS = {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom",
                  "weights": "Angstrom^3", "rho": "e/Angstrom^3",
                  "energy_density": "eV/Angstrom^3"}

#: Fields read for training: total energy density (dataset gauge) and electron density.
TARGET_FIELDS = ("energy_density", "rho")


def open_dataset(path):
    """Open a fedft dataset, turning a missing or foreign file into :class:`DataError`.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    fedft.Dataset
    """
    import fedft

    try:
        return fedft.read_dataset(Path(path))
    except fedft.FedftError as exc:
        raise DataError(str(exc)) from None


def dataset_spec(ds) -> dict:
    """The identity of a dataset that a model must share: units, gauge, functional, λ and the
    pseudopotential digest of each element.

    Parameters
    ----------
    ds : fedft.Dataset

    Returns
    -------
    dict
    """
    return {"units": {k: ds.units.get(k) for k in EXPECTED_UNITS},
            "gauge": ds.gauge, "energy_density_form": ds.energy_density_form,
            "functional": ds.functional,
            "kinetic_lambda": float(ds.kinetic_lambda),
            "pseudopotentials": {s: p.get("digest") for s, p in
                                 sorted(ds.pseudopotentials.items())}}


def spec_differences(expected: dict, found: dict) -> list[str]:
    """Human-readable differences between two :func:`dataset_spec` dicts (elements only one
    side knows are not differences)."""
    diffs = []
    for name in sorted(set(expected["units"]) | set(found["units"])):
        a, b = expected["units"].get(name), found["units"].get(name)
        if a != b:
            diffs.append(f"unit of {name}: expected {a!r}, dataset has {b!r}")
    for name in ("gauge", "energy_density_form", "functional", "kinetic_lambda"):
        if expected.get(name) != found.get(name):
            diffs.append(f"{name}: expected {expected.get(name)!r}, dataset has "
                         f"{found.get(name)!r}")
    pa, pb = expected.get("pseudopotentials", {}), found.get("pseudopotentials", {})
    for sym in sorted(set(pa) & set(pb)):
        if pa[sym] != pb[sym]:
            diffs.append(f"pseudopotential of {sym}: expected sha256 {str(pa[sym])[:12]}, "
                         f"dataset has {str(pb[sym])[:12]}")
    return diffs


def check_compatible(expected: dict | None, ds) -> dict:
    """Raise :class:`DataMismatchError` unless ``ds`` matches ``expected``.

    Parameters
    ----------
    expected : dict or None
        A :func:`dataset_spec` (a model's ``data_spec``); None checks only the units against
        :data:`EXPECTED_UNITS`.
    ds : fedft.Dataset

    Returns
    -------
    dict
        The dataset's spec.
    """
    found = dataset_spec(ds)
    reference = expected if expected is not None else {"units": EXPECTED_UNITS}
    diffs = spec_differences({"gauge": found["gauge"], "functional": found["functional"],
                              "energy_density_form": found["energy_density_form"],
                              "kinetic_lambda": found["kinetic_lambda"], **reference}, found)
    if expected is None:
        diffs = [d for d in diffs if d.startswith("unit of")]
    if diffs:
        raise DataMismatchError(f"dataset {ds.path} does not match: " + "; ".join(diffs) +
                                ". Use data labelled with the same settings as the model")
    return found


def validate_record(rec, fields: bool = True, rtol: float = 1e-6) -> None:
    """Raise :class:`DataError` if a record cannot be trained on.

    Checks that positions, cell, energy and forces are finite; with ``fields``, that points,
    weights and the target fields are finite, weights > 0, and that ``Σ w ε`` equals the energy
    to ``rtol`` (relative, at least 1e-6 eV).

    Parameters
    ----------
    rec : fedft.Record
    fields : bool
    rtol : float
    """
    where = f"structure {rec.key} ({rec.atoms.get_chemical_formula()}, index {rec.index})"
    checks = {"positions": rec.atoms.positions, "cell": rec.atoms.cell.array,
              "energy": np.asarray(rec.energy), "forces": rec.forces}
    if fields:
        checks.update(points=rec.points, weights=rec.weights,
                      **{f"field {n}": rec.fields[n] for n in TARGET_FIELDS})
    for name, value in checks.items():
        value = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise DataError(f"{where}: {name} has {bad} non-finite value(s) (NaN or inf); "
                            "relabel or remove the structure")
    if np.asarray(rec.forces).shape != (len(rec.atoms), 3):
        raise DataError(f"{where}: forces have shape {np.shape(rec.forces)}, expected "
                        f"({len(rec.atoms)}, 3)")
    if fields:
        if np.any(rec.weights <= 0):
            raise DataError(f"{where}: {int(np.sum(rec.weights <= 0))} quadrature weights are "
                            "<= 0; the grid model needs positive nodal weights")
        integral = float(np.dot(rec.weights, rec.fields["energy_density"]))
        if abs(integral - rec.energy) > max(rtol * abs(rec.energy), 1e-6):
            raise DataError(f"{where}: the energy density integrates to {integral:.6f} eV but "
                            f"the energy is {rec.energy:.6f} eV")


def parse_select(text) -> slice | None:
    """``"START:STOP"`` (either side may be empty) -> ``slice``; None/"" -> None.

    Raises
    ------
    DataError
        Not of that form.
    """
    if text is None or isinstance(text, slice):
        return text
    text = str(text).strip()
    if not text:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise DataError(f"structure selection must be START:STOP (e.g. 80:100), got "
                        f"{text!r}") from None
    return slice(start, stop)


def load_records(path, expected: dict | None = None, fields: bool = True,
                 max_structures: int | None = None, select=None):
    """Open, check and read a dataset.

    Parameters
    ----------
    path : str or Path
    expected : dict, optional
        A model's ``data_spec`` to match (:func:`check_compatible`).
    fields : bool
        Read and check the target fields and the points.
    max_structures : int, optional
        Only the first ones (in the order they were added).
    select : slice or str, optional
        Positions in the dataset to read (``"80:100"`` or ``slice(80, 100)``), applied before
        ``max_structures``. A dataset built by one ``fedft.label`` run holds its structures
        in input order.

    Returns
    -------
    spec : dict
        The dataset's :func:`dataset_spec`.
    records : list of fedft.Record
    """
    with open_dataset(path) as ds:
        spec = check_compatible(expected, ds)
        positions = list(range(len(ds)))
        sel = parse_select(select)
        if sel is not None:
            positions = positions[sel]
        if max_structures is not None:
            positions = positions[:int(max_structures)]
        if not positions:
            raise DataError(f"dataset {path} holds no structures"
                            + (f" in the selection {select}" if sel is not None else ""))
        records = [ds.read(i, fields=TARGET_FIELDS if fields else [], mesh=False)
                   for i in positions]
    for rec in records:
        validate_record(rec, fields=fields)
    return spec, records


@dataclass
class StructureTensors:
    """Everything one training step needs of one structure (model dtype, no graph).

    Attributes
    ----------
    key : str
    n_atoms : int
    energy : float
        eV.
    forces : torch.Tensor (n_atoms, 3)
        eV/Å.
    features : torch.Tensor (P, F)
    weights : torch.Tensor (P,)
        Quadrature weights Å³ (grid), 1 (atoms) or bond cutoff factors.
    jacobian : torch.Tensor (P, F, 3 n_atoms) or None
    dweights : torch.Tensor (P, 3 n_atoms) or None
    energy_density, density : torch.Tensor (P,) or None
        Field targets at the points (grid model), eV/Å³ and e/Å³. With a reference energy
        density (:mod:`cemt._reference`) ``energy``, ``forces`` and ``energy_density`` are the
        labels minus the reference's share, which is kept in ``reference``.
    reference : torch.Tensor (P,) or None
        The reference energy density at the points, eV/Å³.
    """

    key: str
    n_atoms: int
    energy: float
    forces: torch.Tensor
    features: torch.Tensor
    weights: torch.Tensor
    jacobian: torch.Tensor | None = None
    dweights: torch.Tensor | None = None
    energy_density: torch.Tensor | None = None
    density: torch.Tensor | None = None
    reference: torch.Tensor | None = None

    @property
    def n_points(self) -> int:
        return int(self.features.shape[0])


#: Featurized structures kept by :func:`tensor_cache` (None: caching off).
_TENSOR_CACHE: dict | None = None


@contextlib.contextmanager
def tensor_cache():
    """Within this context :func:`build_tensors` keeps every featurized structure in memory
    and reuses it for the same structure, model kind, feature settings and dtype (the
    learning-curve driver trains many models on the same structures)."""
    global _TENSOR_CACHE
    outer = _TENSOR_CACHE
    _TENSOR_CACHE = {} if outer is None else outer
    try:
        yield
    finally:
        _TENSOR_CACHE = outer


def _cache_key(model, rec, jacobian: bool) -> str:
    import json
    return json.dumps([rec.key, model.kind, model.settings["features"], model.settings["dtype"],
                       model.settings.get("bond_cutoff"), bool(jacobian)], sort_keys=True)


def build_tensors(model, records, jacobian: bool, progress: bool = False) -> list:
    """Featurize records for ``model`` (its kinematics and dtype).

    Parameters
    ----------
    model : CemtModel
    records : list of fedft.Record
    jacobian : bool
        Compute ``∂G/∂R`` (needed when forces are in the loss).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    list of StructureTensors
    """
    from tqdm import tqdm

    for rec in records:
        model.check_elements(rec.atoms.numbers)
    out = []
    dtype = model.torch_dtype
    for rec in tqdm(records, desc="features", disable=not progress, leave=False):
        grid = model.kind == "grid"
        key = _cache_key(model, rec, jacobian) if _TENSOR_CACHE is not None else None
        if key is not None and key in _TENSOR_CACHE:
            t = _TENSOR_CACHE[key]
        else:
            t = model.structure_tensors(rec.atoms, rec.points if grid else None,
                                        rec.weights if grid else None, jacobian=jacobian)
            if key is not None:
                _TENSOR_CACHE[key] = t
        fields = {}
        energy, forces = float(rec.energy), np.asarray(rec.forces, dtype=np.float64)
        ref = model.reference_terms(rec.atoms, rec.points, rec.weights) if grid else None
        if ref is not None:  # the network learns the labels minus the fixed reference
            energy, forces = energy - ref["energy"], forces - ref["forces"]
            fields["reference"] = ref["field"].to(dtype)
        if grid and all(n in rec.fields for n in TARGET_FIELDS):
            eps = np.asarray(rec.fields["energy_density"], dtype=np.float64)
            if ref is not None:
                eps = eps - ref["field"].numpy()
            fields.update(energy_density=torch.as_tensor(eps, dtype=dtype),
                          density=torch.as_tensor(rec.fields["rho"], dtype=dtype))
        out.append(StructureTensors(
            key=rec.key, n_atoms=len(rec.atoms), energy=energy,
            forces=torch.as_tensor(forces, dtype=dtype),
            features=t["features"], weights=t["weights"], jacobian=t["jacobian"],
            dweights=t["dweights"], **fields))
    logger.info("featurized %d structures (%d points)", len(out), sum(s.n_points for s in out))
    return out


def split_indices(n: int, validation_fraction: float, seed: int):
    """Seeded random split of ``range(n)`` into training and validation indices.

    At least one structure stays in training; ``validation_fraction`` > 0 puts at least one
    into validation when ``n`` >= 2.

    Returns
    -------
    train, validation : list of int (sorted)
    """
    if n < 1:
        raise DataError("no structures to split")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def sample_points(n_total: int, n: int | None, generator: torch.Generator) -> torch.Tensor | None:
    """Indices of ``n`` distinct random points of ``n_total`` (None: all points)."""
    if n is None or n >= n_total:
        return None
    return torch.randperm(n_total, generator=generator)[:n]
