"""Finite-element orbital-free DFT (Thomas-Fermi + λ·von Weizsäcker + LDA) on tetrahedral meshes.

Public API speaks ASE units (Å, eV, e); the solver works in atomic units (bohr, Hartree).

>>> from ase.build import bulk
>>> from fedft import compute
>>> result = compute(bulk("Al", "fcc", a=4.05, cubic=True), {"Al": "erf:3:0.529"}, 1.0,
...                  preset="fast")  # doctest: +SKIP
"""

from ._calculator import FedftCalculator
from ._compute import DiscretisationCache, compute
from ._dataset import (
    FIELD_UNITS,
    CheckReport,
    Dataset,
    Record,
    check_dataset,
    dataset_info,
    read_dataset,
    structure_key,
)
from ._errors import (
    ConvergenceError,
    DatasetError,
    DatasetLockedError,
    DatasetMismatchError,
    FedftError,
    MeshTooCoarseError,
    MissingPseudopotentialError,
    PseudopotentialError,
    SettingsError,
    OutputError,
    StructureError,
    StructureFileError,
)
from ._export import cube_grid, export_cube, export_xdmf
from ._ewald import ewald, point_ion_energy
from ._fields import GAUGES
from ._labelling import LabelSummary, label
from ._pseudo import ErfPseudo, TabulatedPseudo, load_pseudo, read_psp8
from ._result import COMPONENTS, Result
from ._settings import PRESETS, Settings, resolve_settings
from ._structures import interstitials, rattled, read_structures, strained, vacancies
from ._units import BOHR, FORCE, HARTREE
from ._version import __version__
from ._xc import lda_xc

__all__ = [
    "FedftCalculator", "DiscretisationCache", "compute", "ConvergenceError", "FedftError",
    "MeshTooCoarseError", "MissingPseudopotentialError", "PseudopotentialError",
    "SettingsError", "StructureError", "ewald", "point_ion_energy", "GAUGES", "ErfPseudo",
    "TabulatedPseudo",
    "load_pseudo", "read_psp8", "COMPONENTS", "Result", "PRESETS", "Settings",
    "resolve_settings", "BOHR", "FORCE", "HARTREE", "__version__", "lda_xc",
    # datasets
    "Dataset", "Record", "read_dataset", "check_dataset", "CheckReport", "dataset_info",
    "structure_key", "FIELD_UNITS", "label", "LabelSummary", "export_xdmf", "export_cube",
    "cube_grid", "rattled", "strained", "vacancies", "interstitials", "read_structures",
    "DatasetError", "DatasetMismatchError", "DatasetLockedError", "OutputError",
    "StructureFileError",
]
