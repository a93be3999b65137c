"""Forces by autograd: gradients w.r.t. atom positions vs central finite differences.

A small overlap threshold keeps the cutoff discontinuities (size ~ threshold) far below the
finite-difference tolerance.
"""

import numpy as np
import pytest
import torch
from ase import Atoms

from cemt import GMPFeaturizer, atom_centred_points, bond_centred_points

from _gmp_data import GPSP, requires_gpsp

pytestmark = requires_gpsp

ORDERS = [-1, 0, 1, 2, 3, 4]
SIGMAS = [0.35, 0.8, 1.4]


def _structure(kind, rng):
    if kind == "periodic":
        cell = np.array([[3.9, 0.0, 0.0], [1.0, 3.6, 0.0], [-0.7, 0.5, 4.0]])
        return Atoms("COH", cell=cell, pbc=True, scaled_positions=rng.uniform(size=(3, 3)))
    return Atoms("CON", positions=[[0, 0, 0], [1.2, 0.2, -0.1], [-0.4, 1.1, 0.5]]
                 + rng.normal(scale=0.05, size=(3, 3)))


def _energy_fn(feat, atoms, mode, weights, fixed_points=None):
    cell, pbc, numbers = atoms.cell.array, atoms.pbc, atoms.numbers

    def energy(pos):
        if mode == "fixed":
            pts = torch.as_tensor(fixed_points)
        elif mode == "atoms":
            pts = atom_centred_points(pos)
        else:
            pts, _, _ = bond_centred_points(pos, cell, pbc, cutoff=2.6)
        f = feat.features_torch(pos, numbers, cell, pbc, points=pts)
        return (torch.sin(3.0 * f) * weights[: f.shape[0]]).sum() + (f**2).sum() * 0.1
    return energy


def _check(energy, pos0, h=1e-5):
    pos = torch.tensor(pos0, requires_grad=True)
    e = energy(pos)
    grad, = torch.autograd.grad(e, pos)
    fd = np.zeros_like(pos0)
    with torch.no_grad():
        for idx in np.ndindex(*pos0.shape):
            p, m = pos0.copy(), pos0.copy()
            p[idx] += h
            m[idx] -= h
            fd[idx] = (energy(torch.tensor(p)).item() - energy(torch.tensor(m)).item()) / (2 * h)
    g = grad.numpy()
    assert np.abs(g - fd).max() <= 1e-6 * np.abs(fd).max(), (g, fd)
    assert np.abs(fd).max() > 1e-3  # the test is not vacuous


@pytest.mark.parametrize("kind", ["periodic", "isolated"])
@pytest.mark.parametrize("mode", ["fixed", "atoms", "bonds"])
def test_autograd_forces_match_finite_differences(kind, mode):
    rng = np.random.default_rng({"fixed": 1, "atoms": 2, "bonds": 3}[mode] + (10 if kind == "periodic" else 0))
    atoms = _structure(kind, rng)
    feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP, overlap_threshold=1e-16)
    weights = torch.as_tensor(rng.normal(size=(64, feat.n_features)))
    pts = rng.uniform(atoms.positions.min(0) - 1, atoms.positions.max(0) + 1, size=(6, 3))
    if mode == "bonds":
        n_b = bond_centred_points(atoms.positions, atoms.cell.array, atoms.pbc, 2.6)[0].shape[0]
        assert n_b >= 2
    _check(_energy_fn(feat, atoms, mode, weights, pts), atoms.positions.copy())


def test_checkpointed_chunks_give_same_gradients():
    rng = np.random.default_rng(5)
    atoms = _structure("periodic", rng)
    pts = rng.uniform(size=(40, 3)) @ atoms.cell.array
    w = torch.as_tensor(rng.normal(size=(40, 16)))
    grads = []
    for kw in ({}, dict(max_pairs_per_chunk=4096, chunk_size=5)):
        feat = GMPFeaturizer(ORDERS, SIGMAS, GPSP, **kw)
        pos = torch.tensor(atoms.positions, requires_grad=True)
        f = feat.features_torch(pos, atoms.numbers, atoms.cell.array, atoms.pbc, points=pts)
        grads.append(torch.autograd.grad((f * w).sum(), pos)[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-11, atol=1e-13)


def test_fft_grid_gradients_match_finite_differences():
    rng = np.random.default_rng(6)
    atoms = _structure("periodic", rng)
    feat = GMPFeaturizer([-1, 0, 2, 3], [0.5, 1.2], GPSP)
    w = torch.as_tensor(rng.normal(size=(5 * 6 * 7, feat.n_features)))

    def energy(pos):
        f = feat.features_grid_torch(pos, atoms.numbers, atoms.cell.array, atoms.pbc, (5, 6, 7))
        return (torch.tanh(f) * w).sum()
    _check(energy, atoms.positions.copy())


def test_zero_norm_feature_has_finite_gradient():
    """G_l = 0 at a symmetric centre (sqrt at 0) must not produce NaN forces."""
    atoms = Atoms("C", cell=np.eye(3) * 3.0, pbc=True)
    feat = GMPFeaturizer([1, 2], [0.6], GPSP)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    f = feat.features_torch(pos, atoms.numbers, atoms.cell.array, True)
    g, = torch.autograd.grad(f.sum(), pos)
    assert torch.isfinite(g).all()


def _tiny_case():
    atoms = Atoms("CO", cell=np.diag([3.1, 3.4, 3.7]), pbc=[True, True, False],
                  positions=[[0.3, 0.2, 0.1], [1.4, 1.9, 0.9]])
    pts = np.array([[0.9, 0.4, 0.6], [2.2, 2.9, -0.4], [1.5, 1.1, 1.3]])
    return atoms, pts


def test_direct_backward_gradcheck():
    """The hand-written backward of the direct sums (atoms and moving points) vs numerical
    derivatives, in float64 on a tiny case with several chunks."""
    atoms, pts0 = _tiny_case()
    feat = GMPFeaturizer([-1, 0, 1, 2, 3], [0.4, 0.9, 1.3], GPSP, overlap_threshold=1e-16,
                         max_pairs_per_chunk=1024, chunk_size=2)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    pts = torch.tensor(pts0, requires_grad=True)

    def f(p, q):
        return feat.features_torch(p, atoms.numbers, atoms.cell.array, atoms.pbc, points=q)
    assert torch.autograd.gradcheck(f, (pos, pts), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_direct_double_backward_gradgradcheck():
    """create_graph=True through the direct backward (e.g. training on forces)."""
    atoms, pts0 = _tiny_case()
    feat = GMPFeaturizer([-1, 0, 2], [0.5, 1.1], GPSP, overlap_threshold=1e-16)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    pts = torch.tensor(pts0, requires_grad=True)

    def f(p, q):
        return feat.features_torch(p, atoms.numbers, atoms.cell.array, atoms.pbc, points=q)
    assert torch.autograd.gradgradcheck(f, (pos, pts), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("norm", ["sqrt", "square"])
def test_fft_grid_jacobian_matches_finite_differences(norm):
    """The analytic batched Jacobian of the FFT path equals central differences of the
    features, column 3a + x for coordinate x of atom a."""
    rng = np.random.default_rng(7)
    atoms = _structure("periodic", rng)
    feat = GMPFeaturizer([-1, 0, 1, 2, 3], [0.5, 1.2], GPSP, norm=norm)
    shape = (5, 6, 7)
    pos = atoms.positions.copy()
    g, jac = feat.features_grid_jacobian(pos, atoms.numbers, atoms.cell.array, atoms.pbc, shape)
    assert jac.shape == (5 * 6 * 7, feat.n_features, 3 * len(atoms))
    assert torch.allclose(g, feat.features_grid(atoms, shape), rtol=1e-12, atol=1e-14)
    h = 1e-5
    for k in range(3 * len(atoms)):
        plus, minus = pos.copy(), pos.copy()
        plus.flat[k] += h
        minus.flat[k] -= h
        fd = (feat.features_grid_torch(plus, atoms.numbers, atoms.cell.array, atoms.pbc, shape)
              - feat.features_grid_torch(minus, atoms.numbers, atoms.cell.array, atoms.pbc,
                                         shape)) / (2 * h)
        scale = float(jac[:, :, k].abs().max())
        assert float((fd - jac[:, :, k]).abs().max()) < 1e-6 * max(scale, 1.0), k


def test_match_grid_recognises_mesh_nodes_and_rejects_others():
    """P1 and P2 nodes of a periodic mesh are complete uniform grids; the index maps each
    node to its row of grid_points. Missing, extra and shifted points are not grids."""
    from meshes import periodic_mesh

    from cemt import grid_points, match_grid

    cell = np.array([[4.0, 0.0, 0.0], [0.8, 3.7, 0.0], [0.3, 0.5, 4.4]])
    for order in (1, 2):
        nodes = periodic_mesh(cell, (3, 4, 5), order=order).dof_positions
        shape, index, shift = match_grid(nodes, cell)
        assert shape == tuple(order * n for n in (3, 4, 5)) and np.allclose(shift, 0)
        assert np.allclose(grid_points(cell, shape)[index], nodes, atol=1e-10)
        # a rigidly shifted copy (the calculator's random shifts) is the same grid, offset
        offset = np.array([0.13, -0.31, 0.07])
        m = match_grid(nodes + offset, cell)
        assert m.shape == shape
        back = grid_points(cell, shape, m.shift)[m.index] - (nodes + offset)
        frac = np.linalg.solve(cell.T, back.T).T
        assert np.allclose(frac, np.rint(frac), atol=1e-9)  # equal up to lattice vectors
    pts = grid_points(cell, (4, 4, 4))
    assert match_grid(pts, cell).shape == (4, 4, 4)
    assert match_grid(pts[1:], cell) is None
    assert match_grid(np.vstack([pts, pts[:1]]), cell) is None
    assert match_grid(np.vstack([pts, pts + 0.01]), cell) is None


def test_square_norm_is_the_square_of_the_sqrt_norm_and_smooth():
    """norm="square" gives G_l² (direct and FFT paths); at a nucleus, where the l >= 1
    multipoles vanish, its gradient along a line through the atom is continuous (no cusp)."""
    rng = np.random.default_rng(8)
    atoms = _structure("periodic", rng)
    kw = dict(orders=[-1, 0, 1, 2], sigmas=[0.5, 1.2], pseudodensity=GPSP)
    f_sqrt, f_sq = GMPFeaturizer(**kw), GMPFeaturizer(**kw, norm="square")
    pts = rng.random((20, 3)) @ atoms.cell.array
    a, b = f_sqrt.features(atoms, pts), f_sq.features(atoms, pts)
    assert torch.allclose(b[:, 0], a[:, 0])  # order -1 unchanged
    assert torch.allclose(b[:, 1:], a[:, 1:] ** 2, rtol=1e-10, atol=1e-14)
    ga, gb = f_sqrt.features_grid(atoms, (5, 6, 7)), f_sq.features_grid(atoms, (5, 6, 7))
    assert torch.allclose(gb[:, 1:], ga[:, 1:] ** 2, rtol=1e-10, atol=1e-14)
    # a lone atom: every l >= 1 multipole vanishes at the nucleus; the one-sided difference
    # quotient of G_1 there is a constant (cusp) for sqrt and vanishes like h for square
    atom = Atoms("Al", positions=[[0.0, 0.0, 0.0]])
    line = np.outer([0.0, 1e-3, 2e-3], [1.0, 0.0, 0.0])
    for feat in (f_sqrt, f_sq):
        g = feat.features(atom, line)[:, 3].numpy()  # l = 1, smallest sigma
        q1, q2 = (g[1] - g[0]) / 1e-3, (g[2] - g[0]) / 2e-3
        if feat.norm == "sqrt":
            assert q1 > 1e-3 and q2 == pytest.approx(q1, rel=1e-3)
        else:
            assert q2 == pytest.approx(2 * q1, rel=1e-3)
    with pytest.raises(Exception, match="norm must be one of"):
        GMPFeaturizer(**kw, norm="abs")
