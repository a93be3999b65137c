"""Exceptions raised by :mod:`fedft` at its API and command-line boundary."""

from meshes import MeshError


class FedftError(ValueError):
    """Base class of every input error :mod:`fedft` raises."""


class PseudopotentialError(FedftError):
    """A pseudopotential file or spec is missing, unreadable or malformed."""


class MissingPseudopotentialError(FedftError):
    """An element of the structure has no pseudopotential."""


class StructureError(FedftError):
    """The structure cannot be computed as given (overlapping atoms, bad cell, ...)."""


class MeshTooCoarseError(FedftError):
    """The mesh cannot resolve the pseudopotential's core."""


class SettingsError(FedftError):
    """An unknown preset or an invalid solver setting."""


class StructureFileError(StructureError):
    """A structure file is missing, unreadable or empty."""


class DatasetError(FedftError):
    """A dataset file is missing, unreadable, not a fedft dataset, or fails its checks."""


class DatasetMismatchError(DatasetError):
    """An existing dataset was labelled with other settings, λ, gauge or pseudopotentials."""


class DatasetLockedError(DatasetError):
    """Another labelling run is writing the same dataset."""


class OutputError(FedftError):
    """An output file or directory cannot be written."""


class ConvergenceError(RuntimeError):
    """The ground-state (or Poisson) solve did not reach its tolerance.

    Attributes
    ----------
    history : list of dict
        Iteration history up to the failure.
    """

    def __init__(self, message, history=None):
        super().__init__(message)
        self.history = list(history or [])


__all__ = [
    "FedftError", "PseudopotentialError", "MissingPseudopotentialError", "StructureError",
    "MeshTooCoarseError", "SettingsError", "ConvergenceError", "MeshError", "StructureFileError",
    "DatasetError", "DatasetMismatchError", "DatasetLockedError", "OutputError",
]
