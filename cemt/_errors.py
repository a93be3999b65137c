"""Exceptions raised by :mod:`cemt`.

Every exception derives from :class:`CemtError`, itself a :class:`ValueError`, so callers can
catch the whole family at once. Messages name the offending value and say what to change.
"""

from __future__ import annotations

__all__ = [
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
]


class CemtError(ValueError):
    """Base class of every error raised by :mod:`cemt`."""


class PseudodensityError(CemtError):
    """A pseudodensity (Gaussian model of an element's valence density) is invalid."""


class GpspFormatError(PseudodensityError):
    """A ``.gpsp`` pseudodensity file does not follow the format.

    The message gives the file name and the line number at which reading stopped.
    """


class MissingElementError(PseudodensityError):
    """The structure contains an element that the pseudodensity set does not define."""


class FeatureSettingsError(CemtError):
    """Featurizer settings (orders, widths, threshold, dtype, chunking) are invalid."""


class StructureError(CemtError):
    """Atoms, cell, periodicity or reference points are invalid (shape, non-finite values...)."""


class ConfigError(CemtError):
    """A training configuration is invalid: an unknown key, a value of the wrong type or out of
    range, or a combination the chosen model does not support.

    The message names the key by its full dotted path (e.g. ``training.lr``)."""


class DataError(CemtError):
    """Training or evaluation data are unusable: an empty dataset, non-finite values (NaN,
    inf), non-positive quadrature weights, fields that do not integrate to the energy."""


class DataMismatchError(DataError):
    """A dataset was made with other units, gauge, functional or pseudopotentials than a model
    expects, or a model/checkpoint was made with other feature settings than the
    configuration asks for."""


class UnknownElementError(CemtError):
    """A structure contains an element the model never saw in training."""


class ModelFileError(CemtError):
    """A model or checkpoint file is missing, damaged or not a cemt model file."""
