"""Invariances of GMP features in float64 (to 1e-10)."""

import numpy as np
import torch
from ase import Atoms

from cemt import GMPFeaturizer

from _gmp_data import GPSP, requires_gpsp

pytestmark = requires_gpsp

ORDERS = [-1, 0, 1, 2, 3, 4]
SIGMAS = [0.3, 0.9, 1.6]


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _structures(rng):
    cell = np.array([[4.1, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.9, 0.8, 4.4]])
    periodic = Atoms("C2OH", cell=cell, pbc=True, scaled_positions=rng.uniform(size=(4, 3)))
    slab = Atoms("CO", cell=[[3.2, 0, 0], [0.8, 3.0, 0], [0, 0, 0]], pbc=[True, True, False],
                 positions=[[0.2, 0.3, 0.0], [1.0, 1.4, 1.1]])
    molecule = Atoms("CONH", positions=rng.normal(scale=0.9, size=(4, 3)))
    return {"periodic": periodic, "slab": slab, "molecule": molecule}


def _points(atoms, rng, n=12):
    lo, hi = atoms.positions.min(0) - 1.5, atoms.positions.max(0) + 1.5
    return rng.uniform(lo, hi, size=(n, 3))


def _assert_close(a, b):
    # relative 1e-10, with an absolute floor of 1e-12 for features that nearly cancel
    # (e.g. G_4 ~ 1e-3 summed from lattice terms of size ~1e2 in a small cell)
    scale = torch.clamp(b.abs(), min=1e-2)
    assert torch.all((a - b).abs() <= 1e-10 * scale), ((a - b).abs() / scale).max()


def test_rotation_and_translation_invariance():
    rng = np.random.default_rng(21)
    feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP)
    for name, atoms in _structures(rng).items():
        pts = _points(atoms, rng)
        ref = feat.features(atoms, pts)
        rot = _rotation(rng)
        shift = rng.normal(scale=3.0, size=3)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + shift
        moved.cell = atoms.cell.array @ rot.T
        _assert_close(feat.features(moved, pts @ rot.T + shift), ref)
        # translation alone of atoms and points together
        moved2 = atoms.copy()
        moved2.positions += shift
        _assert_close(feat.features(moved2, pts + shift), ref)


def test_periodic_images_of_points_and_atoms():
    rng = np.random.default_rng(22)
    feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP)
    atoms = _structures(rng)["periodic"]
    cell = atoms.cell.array
    pts = _points(atoms, rng)
    ref = feat.features(atoms, pts)
    n = rng.integers(-3, 4, size=(len(pts), 3))
    _assert_close(feat.features(atoms, pts + n @ cell), ref)
    # moving atoms by lattice vectors changes nothing either
    shifted = atoms.copy()
    shifted.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ cell
    _assert_close(feat.features(shifted, pts), ref)
    # slab: periodic in-plane only
    slab = _structures(rng)["slab"]
    p = _points(slab, rng)
    ref = feat.features(slab, p)
    _assert_close(feat.features(slab, p + np.array([2, -1, 0]) @ slab.cell.array), ref)


def test_permutation_of_atoms_and_changing_cell_representation():
    rng = np.random.default_rng(23)
    feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP)
    atoms = _structures(rng)["periodic"]
    pts = _points(atoms, rng)
    ref = feat.features(atoms, pts)
    perm = rng.permutation(len(atoms))
    _assert_close(feat.features(atoms[perm], pts), ref)
    # same lattice, different basis (unimodular change of cell vectors)
    u = np.array([[1, 1, 0], [0, 1, 0], [0, -1, 1]])
    other = atoms.copy()
    other.set_cell(u @ atoms.cell.array, scale_atoms=False)
    _assert_close(feat.features(other, pts), ref)


def test_images_of_atom_in_small_cell_and_far_points():
    """A one-atom cell much smaller than the cutoff: many images contribute."""
    atoms = Atoms("C", cell=[[1.6, 0, 0], [0.3, 1.5, 0], [0.2, 0.4, 1.7]], pbc=True)
    feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP)
    pts = np.array([[0.1, 0.2, 0.3]])
    far = pts + np.array([[7, -5, 11]]) @ atoms.cell.array
    _assert_close(feat.features(atoms, far), feat.features(atoms, pts))
