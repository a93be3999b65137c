"""Chemical Environment Modeling Theory: models that predict local quantities at reference points
anywhere (atoms, bonds, mesh nodes), built on Gaussian multipole (GMP) features."""

from ._errors import (CemtError, ConfigError, DataError, DataMismatchError, FeatureSettingsError,
                      GpspFormatError, MissingElementError, ModelFileError, PseudodensityError,
                      StructureError, UnknownElementError)
from ._gmp import MAX_ORDER, GMPFeaturizer, atom_centred_points, bond_centred_points
from ._gmp_fft import GridFeatureAdjoint, GridMatch, grid_points, match_grid
from ._scaler import FeatureScaler
from ._models import (AtomModel, BondModel, CemtModel, GridModel, PointNetwork, build_model,
                      feature_settings)
from ._data import (StructureTensors, build_tensors, check_compatible, dataset_spec,
                    load_records, validate_record)
from ._config import default_config, default_config_text, load_config, resolve_config
from ._train import Trainer, load_model, save_model, train
from ._evaluate import evaluate
from ._compare import ReportError, compare
from ._curves import first_reaching, learning_curve, plot_learning_curve
from ._calculator import DEFAULT_SPACING, CemtCalculator
from ._pipeline import (PipelineError, load_pipeline_config, pipeline, pipeline_config_text,
                        resolve_pipeline_config)
from ._pseudodensity import (ElementPseudodensity, PseudodensitySet, fit_pseudodensity,
                             read_gpsp, write_gpsp)
from ._free_atom import fedft_pseudodensities, free_atom_density

#: The project's own pseudodensity set (fedft free-atom densities; see
#: examples/make_pseudodensities.py), usable as ``GMPFeaturizer(..., pseudodensity=FEDFT_GPSP)``.
from pathlib import Path as _Path

FEDFT_GPSP = _Path(__file__).resolve().parent / "data" / "fedft-erf.gpsp"

__all__ = [
    "GMPFeaturizer",
    "FeatureScaler",
    "MAX_ORDER",
    "atom_centred_points",
    "bond_centred_points",
    "grid_points",
    "match_grid",
    "GridMatch",
    "GridFeatureAdjoint",
    "ElementPseudodensity",
    "PseudodensitySet",
    "read_gpsp",
    "write_gpsp",
    "fit_pseudodensity",
    "free_atom_density",
    "fedft_pseudodensities",
    "FEDFT_GPSP",
    "CemtError",
    "PseudodensityError",
    "GpspFormatError",
    "MissingElementError",
    "FeatureSettingsError",
    "StructureError",
    "ConfigError",
    "DataError",
    "DataMismatchError",
    "UnknownElementError",
    "ModelFileError",
    # models, data, training
    "CemtModel",
    "GridModel",
    "AtomModel",
    "BondModel",
    "PointNetwork",
    "learning_curve",
    "first_reaching",
    "plot_learning_curve",
    "build_model",
    "feature_settings",
    "StructureTensors",
    "build_tensors",
    "check_compatible",
    "dataset_spec",
    "load_records",
    "validate_record",
    "default_config",
    "default_config_text",
    "load_config",
    "resolve_config",
    "Trainer",
    "train",
    "save_model",
    "load_model",
    "evaluate",
    "compare",
    "ReportError",
    "CemtCalculator",
    "DEFAULT_SPACING",
    "pipeline",
    "PipelineError",
    "resolve_pipeline_config",
    "load_pipeline_config",
    "pipeline_config_text",
]
