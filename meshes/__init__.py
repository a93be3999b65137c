"""Geometry shared by :mod:`fedft` and :mod:`cemt`: tetrahedral meshes of periodic cells,
P1/P2 bases with periodic degrees of freedom, nodal quadrature weights, point location and
mesh/field files.

Lengths are in whatever unit the caller gives (``fedft`` passes bohr, ``cemt`` Å).
"""
