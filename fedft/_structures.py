"""Structures to label: perturbed bulk cells reproducible from a seed, and any ``ase.io`` file.

Every generator returns a list of new :class:`ase.Atoms` (Å) and records how each structure was
made in ``atoms.info["generator"]`` (name, parameters, seed and the position in the sequence),
so that a dataset can say where each of its structures came from and a run can be repeated
bit for bit from the seed. ``ase.io.write(path, structures, format="extxyz")`` keeps that
record.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms

from ._errors import StructureError, StructureFileError

log = logging.getLogger(__name__)


def _check_base(atoms) -> Atoms:
    if not isinstance(atoms, Atoms):
        raise StructureError(f"expected an ase.Atoms as the base structure, got "
                             f"{type(atoms).__name__}")
    if len(atoms) == 0:
        raise StructureError("the base structure has no atoms")
    if not all(atoms.pbc) or atoms.cell.rank != 3:
        raise StructureError("the base structure must be fully periodic with a 3D cell "
                             "(e.g. ase.build.bulk('Al', 'fcc', a=4.05))")
    return atoms


def _check_count(n) -> int:
    if int(n) != n or n < 1:
        raise StructureError(f"the number of structures must be a positive integer, got {n!r}")
    return int(n)


def _tag(atoms: Atoms, name: str, seed, k: int, **params) -> Atoms:
    atoms.info["generator"] = {"name": name, "seed": seed, "sample": k, **params}
    return atoms


def rattled(atoms: Atoms, n: int, stdev: float = 0.05, seed: int = 0,
            min_distance: float = 1.5) -> list[Atoms]:
    """Copies of ``atoms`` with every position displaced by a Gaussian.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic base structure (Å).
    n : int
        Number of structures.
    stdev : float
        Standard deviation of each Cartesian displacement (Å).
    seed : int
        Seed of the random generator; the same seed gives the same structures.
    min_distance : float
        Draws closer than this (Å) between any two atoms are redrawn (at most 100 times).

    Returns
    -------
    list of ase.Atoms
    """
    base = _check_base(atoms)
    n = _check_count(n)
    if not stdev >= 0:
        raise StructureError(f"stdev must be >= 0 Å, got {stdev}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        for _ in range(100):
            a = base.copy()
            a.positions = base.positions + rng.normal(0.0, stdev, size=base.positions.shape)
            if _min_distance(a) >= min_distance:
                break
        else:
            raise StructureError(f"could not rattle with stdev={stdev} Å while keeping atoms "
                                 f"{min_distance} Å apart; use a smaller stdev")
        out.append(_tag(a, "rattled", seed, k, stdev=stdev))
    return out


def strained(atoms: Atoms, n: int, max_strain: float = 0.03, stdev: float = 0.0,
             seed: int = 0) -> list[Atoms]:
    """Copies of ``atoms`` under random homogeneous strain (atoms move with the cell).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic base structure (Å).
    n : int
        Number of structures.
    max_strain : float
        Each component of the symmetric strain tensor ε is uniform in [-max_strain,
        max_strain] (dimensionless); the cell becomes ``cell @ (I + ε)``.
    stdev : float
        Optional Gaussian rattle (Å) applied after straining.
    seed : int
        Seed of the random generator.

    Returns
    -------
    list of ase.Atoms
    """
    base = _check_base(atoms)
    n = _check_count(n)
    if not 0 <= max_strain < 0.5:
        raise StructureError(f"max_strain must be in [0, 0.5), got {max_strain}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        a = base.copy()
        a.set_cell(np.asarray(base.cell) @ (np.eye(3) + eps), scale_atoms=True)
        if stdev > 0:
            a.positions = a.positions + rng.normal(0.0, stdev, size=a.positions.shape)
        out.append(_tag(a, "strained", seed, k, max_strain=max_strain, stdev=stdev,
                        strain=eps.tolist()))
    return out


def vacancies(atoms: Atoms, n: int, count: int = 1, stdev: float = 0.0,
              seed: int = 0) -> list[Atoms]:
    """Copies of ``atoms`` with ``count`` randomly chosen atoms removed.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic base structure with more than ``count`` atoms (a supercell).
    n : int
        Number of structures.
    count : int
        Vacancies per structure.
    stdev : float
        Optional Gaussian rattle (Å) of the remaining atoms.
    seed : int
        Seed of the random generator.

    Returns
    -------
    list of ase.Atoms
    """
    base = _check_base(atoms)
    n = _check_count(n)
    if not 0 < count < len(base):
        raise StructureError(f"count must be between 1 and {len(base) - 1} for a "
                             f"{len(base)}-atom cell, got {count}; use a larger supercell")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        removed = np.sort(rng.choice(len(base), size=count, replace=False))
        a = base.copy()
        del a[removed.tolist()]
        if stdev > 0:
            a.positions = a.positions + rng.normal(0.0, stdev, size=a.positions.shape)
        out.append(_tag(a, "vacancies", seed, k, count=count, stdev=stdev,
                        removed=removed.tolist()))
    return out


def interstitials(atoms: Atoms, n: int, symbol: str | None = None, count: int = 1,
                  min_distance: float = 1.6, seed: int = 0) -> list[Atoms]:
    """Copies of ``atoms`` with ``count`` atoms added at random points of the cell.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic base structure (Å).
    n : int
        Number of structures.
    symbol : str, optional
        Element of the added atoms (default: the first atom's).
    count : int
        Interstitials per structure.
    min_distance : float
        Smallest distance (Å) from an added atom to any other (periodic images included);
        candidate points are redrawn until it holds (at most 1000 draws per atom).
    seed : int
        Seed of the random generator.

    Returns
    -------
    list of ase.Atoms
    """
    base = _check_base(atoms)
    n = _check_count(n)
    if count < 1:
        raise StructureError(f"count must be >= 1, got {count}")
    symbol = symbol or base.get_chemical_symbols()[0]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = base.copy()
        for _ in range(count):
            for _ in range(1000):
                frac = rng.uniform(0.0, 1.0, size=3)
                trial = a.copy()
                trial.append(symbol)
                trial.positions[-1] = frac @ np.asarray(a.cell)
                if _min_distance(trial, only=len(trial) - 1) >= min_distance:
                    a = trial
                    break
            else:
                raise StructureError(f"no room for an interstitial {min_distance} Å from every "
                                     "atom; lower min_distance or use a larger cell")
        out.append(_tag(a, "interstitials", seed, k, symbol=symbol, count=count,
                        min_distance=min_distance))
    return out


def _min_distance(atoms: Atoms, only: int | None = None) -> float:
    """Smallest interatomic distance (Å) with periodic images (of atom ``only`` if given)."""
    from ase.geometry import get_distances

    pos = atoms.positions if only is None else atoms.positions[only:only + 1]
    _, d = get_distances(pos, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if only is None:
        d = d + np.diag(np.full(len(atoms), np.inf))
    else:
        d[0, only] = np.inf
    # a one-atom cell: the nearest image distance is the shortest lattice translation
    lattice = np.asarray(atoms.cell)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if (i, j, k) != (0, 0, 0)]) @ lattice
    self_image = float(np.linalg.norm(shifts, axis=1).min())
    return float(min(d.min() if d.size else np.inf, self_image))


def read_structures(path, index: str | int | slice = ":") -> list[Atoms]:
    """Read every structure (or those selected by ``index``) of any ``ase.io`` file.

    Parameters
    ----------
    path : str or Path
        Structure file or trajectory (extxyz, POSCAR, .traj, cif, ...).
    index : str, int or slice
        ``ase.io.read`` index (default ``":"``, all images).

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    StructureFileError
        If the file is missing, unreadable or holds no structure.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"structure file {path} does not exist; give a file that "
                                 "ase.io.read accepts (extxyz, POSCAR, .traj, cif, ...)")
    try:
        images = read(path, index=index)
    except Exception as exc:  # ase raises many kinds
        raise StructureFileError(f"cannot read structures from {path}: "
                                 f"{type(exc).__name__}: {exc}; check the file and its "
                                 "format (ase.io.read must accept it)") from exc
    if isinstance(images, Atoms):
        images = [images]
    images = list(images)
    if not images:
        raise StructureFileError(f"{path} holds no structure (index {index!r})")
    log.info("read %d structure(s) from %s", len(images), path)
    return images


__all__ = ["rattled", "strained", "vacancies", "interstitials", "read_structures"]
