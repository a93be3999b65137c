"""Exceptions raised by :mod:`meshes`."""


class MeshError(ValueError):
    """Base class of every error :mod:`meshes` raises on bad input."""


class DegenerateCellError(MeshError):
    """The cell matrix is singular, nearly flat, or not finite."""


class PointLocationError(MeshError):
    """A point could not be located in the mesh (outside an open domain or not finite)."""


class MeshFileError(MeshError):
    """A mesh/field file is missing, unreadable or lacks what is needed to rebuild the mesh."""
