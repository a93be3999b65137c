"""Solver settings and presets (all lengths in bohr, energies in Ha)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ._errors import SettingsError


@dataclass(frozen=True)
class Settings:
    """Discretisation and convergence settings of one ground-state calculation.

    Attributes
    ----------
    order : int
        Polynomial order of the finite elements (1 or 2).
    spacing : float
        Largest sub-cube edge along each lattice vector (bohr); each sub-cube holds six
        tetrahedra, and P2 nodes are half this apart.
    intorder : int
        Quadrature order (positive-weight rules only).
    compensation_width : float or None
        Width (bohr) of the Gaussian compensation charges; ``None`` picks per species
        (see ``fedft._groundstate.ERF_COMPENSATION_WIDTH``).
    tol_energy : float
        Energy change per atom (Ha) of the last iteration at convergence.
    tol_residual : float
        Preconditioned residual norm per atom (Ha^½) at convergence.
    max_iter : int
        Iteration limit of the minimiser.
    poisson_rtol : float
        Relative residual of each Hartree solve inside the minimiser.
    precond_mass : float
        ``c`` in the minimiser's preconditioner ``λK + cM`` (Ha).
    min_distance : float
        Smallest allowed interatomic distance (bohr).
    """

    order: int = 2
    spacing: float = 0.45
    intorder: int = 5
    compensation_width: float | None = None
    tol_energy: float = 1e-9
    tol_residual: float = 1e-5
    max_iter: int = 400
    poisson_rtol: float = 1e-9
    precond_mass: float = 1.0
    min_distance: float = 0.5 / 0.52917721067

    def replace(self, **changes) -> "Settings":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; valid: "
                                f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Named presets; ``accurate`` is the default.
PRESETS = {
    "fast": Settings(spacing=0.7, tol_energy=1e-7, tol_residual=1e-4),
    "accurate": Settings(spacing=0.45, tol_energy=1e-9, tol_residual=1e-5),
    "tight": Settings(spacing=0.3, tol_energy=1e-11, tol_residual=1e-6),
}


def resolve_settings(preset: str | Settings = "accurate", **overrides) -> Settings:
    """Settings of a named preset (or given settings) with ``overrides`` applied."""
    if isinstance(preset, Settings):
        base = preset
    else:
        if preset not in PRESETS:
            raise SettingsError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[preset]
    return base.replace(**overrides) if overrides else base
