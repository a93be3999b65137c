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
