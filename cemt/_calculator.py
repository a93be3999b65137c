"""ASE calculator for a trained cemt model.

:class:`CemtCalculator` wraps a :class:`~cemt.CemtModel` (or a model file written by
:func:`~cemt.save_model`) as an :class:`ase.calculators.calculator.Calculator` returning the
energy (eV) and forces (eV/Å) of any structure made of the model's elements.

* **Grid model.** The reference points are the nodes of a periodic nodal mesh of the cell
  (:func:`meshes.periodic_mesh` at ``spacing`` Å and ``order``), with the positive nodal
  quadrature weights :attr:`meshes.TetMesh.nodal_weights` (Å³, summing to the cell
  volume): ``E = Σ_i w_i ε(G(r_i))``. The nodes are fixed in space, so the energy changes a
  little when all atoms are translated rigidly relative to them (the *egg-box effect*). With
  ``shifts = k > 0`` the energy and forces are averaged over the mesh and ``k`` copies of it
  translated by fixed random offsets within one mesh sub-cube (drawn once from ``seed``), which
  averages the egg-box ripple out; the energy stays a smooth, deterministic function of the
  atomic positions, and the forces are still exactly ``−dE/dR``. The mesh is cached while the
  cell, ``spacing`` and ``order`` do not change. Grid models need a fully periodic cell.
  On a periodic cell the nodes form a uniform grid: features come from the FFT path and the
  grid model's trapezoid quadrature weighs every node ``V/N``, so the cost hardly depends on
  ``spacing``. Measured peak-to-peak egg-box (rigid translations of a 4-atom fcc Al cell, the
  grid model trained on the GNH dataset, ``benchmarks/bench_eggbox.py``): 0.28 meV/atom at
  0.3 Å (P1), 0.016 at 0.2 Å, 0.0018 at the default 0.15 Å. The amplitude depends on how sharp
  the model's field is: measure it for a new model before choosing ``spacing`` and ``shifts``.
* **Atom and bond models** need no mesh; ``spacing``, ``order`` and ``shifts`` are ignored.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ._errors import ConfigError, StructureError
from ._gmp_fft import grid_points
from ._models import CemtModel, GridModel

__all__ = ["DEFAULT_SPACING", "CemtCalculator"]

#: Default evaluation mesh spacing, Å: the largest sub-cube edge along each lattice vector of the
#: P1 evaluation mesh (see :func:`meshes.periodic_mesh`).
DEFAULT_SPACING = 0.15


class CemtCalculator(Calculator):
    """ASE calculator for a trained cemt model (grid-, atom- or bond-centred).

    Parameters
    ----------
    model : CemtModel or str or path-like
        The model, or a model file read with :func:`cemt.load_model`. The model is put in
        evaluation mode.
    spacing : float, default 0.3
        Evaluation mesh spacing for grid models, Å: the largest edge of the mesh's sub-cubes along
        each lattice vector (each axis gets ``ceil(|a_k| / spacing)`` divisions, at least 2).
        Ignored by atom and bond models.
    order : {1, 2}, default 1
        Order of the periodic mesh whose nodes (vertices, plus edge midpoints for 2) and nodal
        weights are the reference points. ``order=2`` at ``spacing`` has the node density of
        ``order=1`` at ``spacing / 2``.
    shifts : int, default 0
        Number of extra, randomly translated copies of the evaluation mesh (offsets uniform in
        one mesh sub-cube, fixed by ``seed``) over which energy and forces are averaged to reduce
        the egg-box effect; the cost grows as ``1 + shifts``. Grid models only.
    seed : int, default 0
        Seed of the random shifts.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator` (e.g. ``label``).

    Attributes
    ----------
    model : CemtModel
    results : dict
        ``energy`` and ``free_energy`` (eV, equal), ``forces`` (n_atoms, 3) eV/Å.

    Raises
    ------
    ConfigError
        ``spacing``, ``order``, ``shifts`` or ``seed`` out of range, or ``model`` not a model.
    ModelFileError
        ``model`` is a path that is not a readable cemt model file.

    Notes
    -----
    Errors raised while computing: :class:`~cemt.StructureError` for a grid model given a
    structure that is not periodic along all three axes (or has a degenerate cell),
    :class:`~cemt.UnknownElementError` for an element the model never saw.

    Examples
    --------
    >>> atoms.calc = CemtCalculator("run/model.pt", spacing=0.3, shifts=4)  # doctest: +SKIP
    >>> atoms.get_potential_energy(), atoms.get_forces()                    # doctest: +SKIP
    """

    implemented_properties: ClassVar[list] = ["energy", "free_energy", "forces"]
    default_parameters: ClassVar[dict] = {"spacing": DEFAULT_SPACING, "order": 1, "shifts": 0, "seed": 0}

    def __init__(self, model, spacing: float = DEFAULT_SPACING, order: int = 1,
                 shifts: int = 0, seed: int = 0, **kwargs) -> None:
        if isinstance(model, (str, Path)):
            from ._train import load_model
            model = load_model(model)
        if not isinstance(model, CemtModel):
            raise ConfigError(f"model must be a CemtModel or the path of a model file, got "
                              f"{type(model).__name__}")
        self.model = model.eval()
        self._mesh_cache = None
        super().__init__(spacing=spacing, order=order, shifts=shifts, seed=seed, **kwargs)

    # ------------------------------------------------------------------ parameters
    def set(self, **kwargs) -> dict:
        """Change parameters (checked; see the class docstring); drops results and the mesh
        cache when a value changes."""
        _check_parameters({**(getattr(self, "parameters", None) or {}), **kwargs})
        changed = super().set(**kwargs)
        if changed:
            self._mesh_cache = None
            self.reset()
        return changed

    @property
    def is_grid(self) -> bool:
        """Whether the model is grid-centred (uses the evaluation mesh)."""
        return isinstance(self.model, GridModel)

    # ------------------------------------------------------------------ evaluation points
    def reference_points(self, atoms=None) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation points and weights of a grid model for the structure's cell.

        Parameters
        ----------
        atoms : ase.Atoms, optional
            Defaults to the calculator's last structure.

        Returns
        -------
        points : numpy.ndarray, shape ((1 + shifts) · n_nodes, 3)
            Å: the mesh nodes followed by each shifted copy.
        weights : numpy.ndarray, shape ((1 + shifts) · n_nodes,)
            Å³: the nodal weights divided by ``1 + shifts`` (they sum to the cell volume).
        """
        atoms = self._atoms_or_last(atoms)
        self._check_structure(atoms)
        nodes, weights, offsets = self._mesh(atoms.cell.array)
        pts = (nodes[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
        w = np.tile(weights, len(offsets)) / len(offsets)
        return pts, w

    def _mesh(self, cell: np.ndarray):
        p = self.parameters
        key = (np.asarray(cell, dtype=np.float64).tobytes(), float(p["spacing"]), int(p["order"]),
               int(p["shifts"]), int(p["seed"]))
        if self._mesh_cache is not None and self._mesh_cache[0] == key:
            return self._mesh_cache[1]
        from meshes import MeshError, divisions_for_spacing, periodic_mesh
        try:
            if int(p["order"]) == 1:
                # the P1 nodes of the periodic Kuhn mesh are the uniform grid of its
                # divisions, each with the weight V/N: no need to build the mesh
                divisions = divisions_for_spacing(cell, float(p["spacing"]))
                nodes = grid_points(cell, divisions)
                weights = np.full(len(nodes), abs(np.linalg.det(cell)) / len(nodes))
            else:
                mesh = periodic_mesh(cell, spacing=float(p["spacing"]), order=int(p["order"]))
                divisions = mesh.divisions
                nodes = np.asarray(mesh.dof_positions, dtype=np.float64)
                weights = np.asarray(mesh.nodal_weights, dtype=np.float64)
        except MeshError as exc:
            raise StructureError(f"cannot mesh the cell for the grid model: {exc}") from None
        # offsets uniform in one sub-cube of the mesh (fractional 1/divisions of the cell)
        frac = np.random.default_rng(int(p["seed"])).random((int(p["shifts"]), 3))
        frac = frac / np.asarray(divisions, dtype=np.float64)
        offsets = np.vstack([np.zeros((1, 3)), frac @ np.asarray(cell, dtype=np.float64)])
        value = (nodes, weights, offsets)
        self._mesh_cache = (key, value)
        return value

    # ------------------------------------------------------------------ checks
    def _atoms_or_last(self, atoms):
        if atoms is None:
            atoms = self.atoms
        if atoms is None:
            raise StructureError("no structure given and none calculated before")
        return atoms

    def _check_structure(self, atoms) -> None:
        if len(atoms) == 0:
            raise StructureError("the structure has no atoms")
        self.model.check_elements(atoms.numbers)
        if self.is_grid and not np.all(atoms.pbc):
            raise StructureError(
                f"the grid model integrates over the periodic cell, but the structure has "
                f"pbc={atoms.pbc.tolist()}; give a periodic cell along all three axes (e.g. put "
                "a molecule or surface in a box with vacuum and set pbc=True)")

    # ------------------------------------------------------------------ ASE interface
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Compute energy (eV) and forces (eV/Å) together, whichever ``properties`` are asked
        (so ``get_potential_energy()`` followed by ``get_forces()`` is one evaluation; a grid
        model's forces cost about as much as its energy again, see
        :meth:`~cemt.GridModel.energy_forces`); see
        :meth:`ase.calculators.calculator.Calculator.calculate`."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_structure(atoms)
        if self.is_grid:
            # one evaluation per rigidly shifted copy of the nodes (each a uniform grid, so
            # the features come from the FFT path), averaged
            nodes, weights, offsets = self._mesh(atoms.cell.array)
            runs = [self.model.energy_forces(atoms, nodes + off if off.any() else nodes, weights)
                    for off in offsets]
            energy = float(np.mean([e for e, _ in runs]))
            forces = np.mean([f for _, f in runs], axis=0)
        else:
            energy, forces = self.model.energy_forces(atoms)
        self.results["energy"] = float(energy)
        self.results["free_energy"] = float(energy)
        self.results["forces"] = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)

    def predicted_fields(self, atoms=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The grid model's predicted fields at the (unshifted) evaluation mesh nodes.

        Parameters
        ----------
        atoms : ase.Atoms, optional
            Defaults to the calculator's last structure.

        Returns
        -------
        points : numpy.ndarray, shape (n_nodes, 3)
            Mesh nodes, Å.
        energy_density : numpy.ndarray, shape (n_nodes,)
            eV/Å³.
        density : numpy.ndarray, shape (n_nodes,)
            Electron density, e/Å³, >= 0.

        Raises
        ------
        ConfigError
            The model is not grid-centred (its point outputs are not fields).
        """
        if not self.is_grid:
            raise ConfigError(f"predicted fields need a grid model; this is a "
                              f"{self.model.kind!r} model")
        atoms = self._atoms_or_last(atoms)
        self._check_structure(atoms)
        nodes, _, _ = self._mesh(atoms.cell.array)
        eps, rho = self.model.predict_fields(atoms, nodes)
        return nodes.copy(), eps, rho


def _check_parameters(p: dict) -> None:
    spacing = p.get("spacing", DEFAULT_SPACING)
    if (isinstance(spacing, bool) or not isinstance(spacing, numbers.Real)
            or not math.isfinite(spacing) or spacing <= 0):
        raise ConfigError(f"spacing must be a finite distance > 0 Å, got {spacing!r}")
    order = p.get("order", 1)
    if isinstance(order, bool) or order not in (1, 2):
        raise ConfigError(f"order must be 1 or 2 (nodal points of a P1 or P2 mesh), got "
                          f"{order!r}")
    for name in ("shifts", "seed"):
        v = p.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
