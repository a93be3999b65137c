"""Pseudodensities computed by the project itself: free-atom valence densities from ``fedft``
(one atom in a large periodic box), spherically averaged and fitted with Gaussians.

Lengths in Å, densities in e/Å³ (ASE units, as everywhere in the public API).
"""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms

from ._errors import PseudodensityError
from ._pseudodensity import ElementPseudodensity, PseudodensitySet, fit_pseudodensity

log = logging.getLogger(__name__)


def _sphere_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (Fibonacci lattice), (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * k
    s = np.sqrt(1.0 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


def free_atom_density(symbol: str, pseudopotential, kinetic_lambda: float, box: float = 10.0,
                      preset: str = "fast", n_radii: int = 160, n_directions: int = 194,
                      **settings):
    """Spherically averaged valence density of one free atom computed with ``fedft``.

    The atom sits at the centre of a cubic periodic box; the density is averaged over
    ``n_directions`` directions on ``n_radii`` radii up to half the box edge.

    Parameters
    ----------
    symbol : str
        Chemical symbol.
    pseudopotential : str
        ``fedft`` pseudopotential spec (``erf:Z:RC`` with RC in Å, or a file path).
    kinetic_lambda : float
        λ of TF + λ·vW.
    box : float
        Edge of the cubic box (Å); images are ``box`` apart.
    preset : str
        ``fedft`` preset.

    Returns
    -------
    r : (n_radii,) Å
    rho : (n_radii,) e/Å³
    result : fedft.Result
    """
    import fedft
    from meshes import PointLocator

    atoms = Atoms(symbol, positions=[[box / 2] * 3], cell=[box] * 3, pbc=True)
    result = fedft.compute(atoms, {symbol: pseudopotential}, kinetic_lambda, preset=preset,
                           **settings)
    r = np.linspace(0.0, box / 2, n_radii)
    dirs = _sphere_directions(n_directions)
    pts = atoms.positions[0] + r[:, None, None] * dirs[None, :, :]  # (n_radii, n_dirs, 3) Å
    locator = PointLocator(result.mesh)  # the mesh is in bohr
    rho = locator.interpolate(result.fields["rho"], pts.reshape(-1, 3) / fedft.BOHR)
    rho = np.maximum(rho.reshape(n_radii, n_directions).mean(axis=1), 0.0)
    return r, rho, result


def fedft_pseudodensities(pseudopotentials: dict, kinetic_lambda: float,
                          n_primitives: int = 4, **kwargs) -> PseudodensitySet:
    """A pseudodensity set made from ``fedft`` free-atom densities.

    Parameters
    ----------
    pseudopotentials : dict
        Chemical symbol -> ``fedft`` pseudopotential spec.
    kinetic_lambda : float
    n_primitives : int
        Gaussians per element (2-6).
    **kwargs
        Passed to :func:`free_atom_density`.
    """
    elements = {}
    for symbol, spec in pseudopotentials.items():
        r, rho, result = free_atom_density(symbol, spec, kinetic_lambda, **kwargs)
        if not np.all(np.isfinite(rho)) or rho.max() <= 0:
            raise PseudodensityError(f"free-atom density of {symbol} is empty or not finite")
        fit = fit_pseudodensity(r, rho, n_primitives, symbol=symbol,
                                electrons=result.n_electrons)
        elements[symbol] = fit
        log.info("%s: %d Gaussians fitted to the fedft free-atom density (%d electrons)",
                 symbol, n_primitives, result.n_electrons)
    return PseudodensitySet(elements.values(), source="fedft free atoms")


__all__ = ["free_atom_density", "fedft_pseudodensities", "ElementPseudodensity"]
