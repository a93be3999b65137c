"""Finite-element orbital-free DFT (Thomas-Fermi + λ·von Weizsäcker + LDA) on tetrahedral meshes.

Public API speaks ASE units (Å, eV, e); the solver works in atomic units (bohr, Hartree).

>>> from ase.build import bulk
>>> from fedft import compute
>>> result = compute(bulk("Al", "fcc", a=4.05, cubic=True), {"Al": "erf:3:0.529"}, 1.0,
...                  preset="fast")  # doctest: +SKIP
"""

from ._calculator import FedftCalculator
from ._compute import DiscretisationCache, compute
from ._errors import (
    ConvergenceError,
    FedftError,
    MeshTooCoarseError,
    MissingPseudopotentialError,
    PseudopotentialError,
    SettingsError,
    StructureError,
)
from ._ewald import ewald
from ._fields import GAUGES
from ._pseudo import ErfPseudo, TabulatedPseudo, load_pseudo, read_psp8
from ._result import COMPONENTS, Result
from ._settings import PRESETS, Settings, resolve_settings
from ._units import BOHR, FORCE, HARTREE
from ._version import __version__
from ._xc import lda_xc

__all__ = [
    "FedftCalculator", "DiscretisationCache", "compute", "ConvergenceError", "FedftError",
    "MeshTooCoarseError", "MissingPseudopotentialError", "PseudopotentialError",
    "SettingsError", "StructureError", "ewald", "GAUGES", "ErfPseudo", "TabulatedPseudo",
    "load_pseudo", "read_psp8", "COMPONENTS", "Result", "PRESETS", "Settings",
    "resolve_settings", "BOHR", "FORCE", "HARTREE", "__version__", "lda_xc",
]
