"""High-level entry point: one structure in, one :class:`~fedft.Result` out."""

from __future__ import annotations

import logging
import time

import numpy as np
from ase import Atoms

from ._discretisation import Discretisation
from ._errors import SettingsError
from ._groundstate import build_mesh, is_graded, prepare_system, solve_ground_state
from ._result import Result, build_result
from ._settings import Settings, resolve_settings
from ._threads import one_blas_thread

log = logging.getLogger(__name__)


class DiscretisationCache:
    """Keeps the operators (matrices, AMG hierarchies) of recently used meshes, so that
    structures with the same cell and settings reuse them."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: list = []

    @staticmethod
    def key(system, settings: Settings):
        """What the mesh depends on: the cell or box, its boundaries, the mesh settings and,
        for graded meshes, the atom positions."""
        key = (np.round(system.cell, 10).tobytes(), np.round(system.origin, 10).tobytes(),
               system.periodic, settings.order, settings.intorder, settings.spacing)
        if is_graded(system, settings):
            key += (settings.grading_rate, settings.h_max, settings.grading_start,
                    np.round(system.positions, 10).tobytes())
        return key

    def get(self, system, settings: Settings) -> Discretisation:
        key = self.key(system, settings)
        for k, disc in self._items:
            if k == key:
                return disc
        disc = Discretisation(build_mesh(system, settings))
        self._items = ([(key, disc)] + self._items)[: self.size]
        return disc


def check_lambda(kinetic_lambda) -> float:
    """Validate the von Weizsäcker coefficient λ."""
    try:
        lam = float(kinetic_lambda)
    except (TypeError, ValueError):
        raise SettingsError(f"kinetic_lambda must be a number, got {kinetic_lambda!r}") from None
    if not (np.isfinite(lam) and 0 < lam <= 10):
        raise SettingsError(f"kinetic_lambda must be in (0, 10], got {lam}; common values are "
                            "1 (single orbital), 1/9, 1/5")
    return lam


def compute(atoms: Atoms, pseudopotentials: dict, kinetic_lambda: float,
            preset: str | Settings = "accurate", gauge: str = "gradient",
            cache: DiscretisationCache | None = None, initial_guess=None, progress=None,
            charge: float | None = None, **overrides) -> Result:
    """Ground state of a periodic or isolated structure.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (``pbc=True``, Å; atoms outside the cell are wrapped), or isolated
        one (``pbc=False``): in its cell, which is then the domain with open boundaries, or,
        without a cell, in a box ``vacuum`` larger than the atoms on every side.
    pseudopotentials : dict
        Chemical symbol -> spec: ``"erf:Z:RC"`` (RC in Å), a ``.psp8``/``.recpot``/``.upf``
        path, or a pseudopotential object.
    kinetic_lambda : float
        λ of the von Weizsäcker term (TF + λ·vW).
    preset : str or Settings
        ``"fast"``, ``"accurate"`` (default) or ``"tight"``, or explicit settings.
    gauge : {"gradient", "laplacian"}
        Gauge of the von Weizsäcker energy density.
    cache : DiscretisationCache, optional
        Reuse meshes and operators across calls.
    initial_guess : Result, optional
        A previous result on the same mesh whose density starts the minimisation.
    progress : callable(dict), optional
        Called after each minimiser iteration.
    charge : float, optional
        Net charge Q (e) of an isolated structure (``N_e = Σ Z − Q``); default: the sum of
        ``atoms.get_initial_charges()``. Periodic cells must be neutral.
    **overrides
        Settings fields to override (e.g. ``spacing=0.3``, in bohr).

    Returns
    -------
    Result

    Raises
    ------
    FedftError subclasses on bad input; ConvergenceError if the solve does not converge.
    """
    lam = check_lambda(kinetic_lambda)
    settings = resolve_settings(preset, **overrides)
    system = prepare_system(atoms, pseudopotentials, settings, charge=charge)
    # every numerical step with one BLAS thread: the same bits whether structures are solved
    # one after the other or in threads of one process (fedft._threads)
    with one_blas_thread():
        t0 = time.perf_counter()
        disc = (cache or DiscretisationCache(size=1)).get(system, settings)
        t_assembly = time.perf_counter() - t0
        u0 = None
        if initial_guess is not None and (initial_guess.mesh is disc.mesh or (
                initial_guess.mesh.n_dofs == disc.mesh.n_dofs and np.allclose(
                    initial_guess.mesh.dof_positions, disc.mesh.dof_positions, atol=1e-8))):
            u0 = np.abs(initial_guess.nodal.sqrt_density)  # without computing its fields
        gs = solve_ground_state(system, lam, settings, disc=disc, u0=u0, progress=progress)
        gs.timings["assembly"] = t_assembly
    return build_result(gs, atoms, gauge=gauge)
