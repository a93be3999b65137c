"""Geometry shared by :mod:`fedft` and :mod:`cemt`: tetrahedral meshes of periodic cells and
isolated boxes (uniform or graded towards atoms), P1/P2 bases with periodic degrees of
freedom, nodal quadrature weights, mesh quality, point location and mesh/field files.

Lengths are in whatever unit the caller gives (``fedft`` passes bohr, ``cemt`` Å).
"""

from ._errors import DegenerateCellError, MeshError, MeshFileError, PointLocationError
from ._io import FieldFile, read_fields, write_fields
from ._locate import PointLocator, shape_functions
from ._graded import graded_axis, graded_mesh
from ._translation import (TranslationStructure, scaled_translation_structure,
                           translation_structure)
from ._quality import MeshQuality, MeshQualityError, check_mesh_quality, tetrahedron_quality
from ._tetmesh import (
    POSITIVE_TET_RULES,
    TetMesh,
    check_cell,
    divisions_for_spacing,
    fft_size,
    kuhn_box,
    kuhn_cube,
    mesh_from_spec,
    periodic_mesh,
    tensor_mesh,
)

__all__ = [
    "DegenerateCellError", "MeshError", "MeshFileError", "PointLocationError",
    "POSITIVE_TET_RULES", "TetMesh", "check_cell", "divisions_for_spacing", "fft_size", "kuhn_box",
    "kuhn_cube", "mesh_from_spec", "periodic_mesh", "tensor_mesh", "FieldFile", "read_fields",
    "write_fields", "PointLocator", "shape_functions", "MeshQuality", "MeshQualityError",
    "check_mesh_quality", "tetrahedron_quality", "graded_axis", "graded_mesh",
    "TranslationStructure", "translation_structure", "scaled_translation_structure",
]
