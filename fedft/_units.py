"""Unit conversions at the boundary of :mod:`fedft` (ASE units outside, atomic units inside)."""

from ase import units as _u

#: Å per bohr.
BOHR = _u.Bohr
#: eV per hartree.
HARTREE = _u.Hartree
#: eV/Å per Ha/bohr.
FORCE = HARTREE / BOHR
