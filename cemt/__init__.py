"""Chemical Environment Modeling Theory: models that predict local quantities at reference points
anywhere (atoms, bonds, mesh nodes), built on Gaussian multipole (GMP) features."""

from ._errors import (CemtError, FeatureSettingsError, GpspFormatError, MissingElementError,
                      PseudodensityError, StructureError)
from ._gmp import MAX_ORDER, GMPFeaturizer, atom_centred_points, bond_centred_points
from ._gmp_fft import grid_points
from ._scaler import FeatureScaler
from ._pseudodensity import (ElementPseudodensity, PseudodensitySet, fit_pseudodensity,
                             read_gpsp, write_gpsp)

__all__ = [
    "GMPFeaturizer",
    "FeatureScaler",
    "MAX_ORDER",
    "atom_centred_points",
    "bond_centred_points",
    "grid_points",
    "ElementPseudodensity",
    "PseudodensitySet",
    "read_gpsp",
    "write_gpsp",
    "fit_pseudodensity",
    "CemtError",
    "PseudodensityError",
    "GpspFormatError",
    "MissingElementError",
    "FeatureSettingsError",
    "StructureError",
]
