"""Forces of grid models from the FFT features' adjoint (vector-Jacobian product): equal to
autograd through the FFT pipeline and to the analytic Jacobian, and −dE/dR by central finite
differences (float64), for one and two elements, shifted, permuted, aliased (folded) grids and
smooth sigmas on coarse grids; the 2l+1 invariant harmonics reproduce the Cartesian
invariants."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from _cemt_helpers import tiny_model
from conftest import NC_SR_GPSP

import cemt
from cemt._gmp_fft import fft_grid_features
from cemt._harmonics import invariant_basis, maxwell_table

SHIFT = np.array([0.031, -0.017, 0.052])


def _structure(two_elements: bool):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.1, seed=7)
    if two_elements:
        atoms.numbers[[1, 2]] = 14  # Si
    return atoms


def _features(elements, norm="square", threshold=1e-13):
    return cemt.feature_settings([-1, 0, 1, 2, 3], [0.5, 1.0, 2.0], NC_SR_GPSP, elements,
                                 overlap_threshold=threshold, norm=norm)


@pytest.mark.parametrize("l", range(7))
def test_invariant_basis_reproduces_weighted_cartesian_sum(l):
    exps, coeffs, weights = maxwell_table(l)
    basis = invariant_basis(l)
    assert basis.shape == (2 * l + 1, len(exps))
    m = np.random.default_rng(l).normal(size=(len(exps), 7))  # any monomial moments
    cart = (weights[:, None] * (coeffs @ m) ** 2).sum(0)
    np.testing.assert_allclose(((basis @ m) ** 2).sum(0), cart, rtol=1e-12)
    # every basis polynomial is a combination of the harmonics T_n (hence harmonic)
    sol, *_ = np.linalg.lstsq(coeffs.T, basis.T, rcond=None)
    np.testing.assert_allclose(coeffs.T @ sol, basis.T, atol=1e-10 * np.abs(basis).max())


def _coarse_groups(feat, atoms, shape):
    from cemt._gmp_fft import _plan

    struct, _ = feat._structure(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    return [g.shape for g in _plan(feat, struct, shape).groups if g.interp]


@pytest.mark.parametrize("norm", ["square", "sqrt"])
def test_coarse_grid_features_equal_direct_sums(norm):
    """Smooth sigmas are evaluated on a coarse grid and Fourier-interpolated: still the exact
    lattice sums (float64), compared with the real-space direct sums at grid points."""
    atoms = _structure(True)
    feat = cemt.GMPFeaturizer([-1, 0, 1, 2, 3], [0.5, 1.0, 1.5, 2.0], NC_SR_GPSP, norm=norm,
                              overlap_threshold=1e-13)
    shape = (28, 29, 30)
    assert len(_coarse_groups(feat, atoms, shape)) == 2
    got = feat.features_grid(atoms, shape, shift=SHIFT).numpy()
    rows = np.random.default_rng(1).choice(np.prod(shape), size=40, replace=False)
    pts = cemt.grid_points(atoms.cell.array, shape, shift=SHIFT)[rows]
    ref = feat.features(atoms, pts).numpy()
    scale = np.abs(ref).max(0)
    np.testing.assert_allclose(got[rows] / scale, ref / scale, rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm", ["square", "sqrt"])
@pytest.mark.parametrize("two_elements", [False, True])
@pytest.mark.parametrize("shape", [(9, 10, 11), (16, 15, 14), (21, 22, 23)])
def test_vjp_equals_autograd_and_jacobian(norm, two_elements, shape):
    atoms = _structure(two_elements)
    feat = cemt.GMPFeaturizer([-1, 0, 1, 2, 3], [0.5, 1.0, 2.0], NC_SR_GPSP, norm=norm,
                              overlap_threshold=1e-13)
    struct, pos = feat._structure(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    adj = feat.features_grid_adjoint(atoms.positions, atoms.numbers, atoms.cell.array,
                                     atoms.pbc, shape, shift=SHIFT)
    p = pos.clone().requires_grad_(True)
    g = fft_grid_features(feat, struct, p, shape, SHIFT)
    # the same sums, rounded in another order (sqrt magnifies that near its zeros)
    torch.testing.assert_close(adj.features, g.detach(), rtol=0,
                               atol=1e-11 * float(g.detach().abs().max()))
    cot = torch.randn(g.shape, generator=torch.Generator().manual_seed(3), dtype=g.dtype)
    (ref,) = torch.autograd.grad((g * cot).sum(), p)
    got = adj.vjp(cot)
    assert got.shape == (len(atoms), 3)
    scale = float(ref.abs().max())
    assert scale > 1e-3
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=1e-11 * scale)
    _, jac = feat.features_grid_jacobian(atoms.positions, atoms.numbers, atoms.cell.array,
                                         atoms.pbc, shape, shift=SHIFT)
    via_jac = torch.einsum("pf,pfk->k", cot, jac).view(-1, 3)
    np.testing.assert_allclose(got.numpy(), via_jac.numpy(), rtol=0, atol=1e-11 * scale)


def test_folded_and_coarse_grids_are_exercised():
    """The small test grids alias frequencies (fold > 1) on some axis, the fine one not; the
    finest evaluates smooth sigmas on coarse grids."""
    from cemt._gmp_fft import _plan

    feat = cemt.GMPFeaturizer([-1, 0, 1, 2, 3], [0.5, 1.0, 2.0], NC_SR_GPSP,
                              overlap_threshold=1e-13)
    atoms = _structure(False)
    struct, _ = feat._structure(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    folds = [g.fold for g in _plan(feat, struct, (9, 10, 11)).groups]
    assert any(max(f) > 1 for f in folds)
    assert any(max(f) == 1 for f in [g.fold for g in _plan(feat, struct, (40, 40, 40)).groups])
    assert not _coarse_groups(feat, atoms, (9, 10, 11))
    assert _coarse_groups(feat, atoms, (21, 22, 23))


def _grid_nodes(atoms, shape, permute=False):
    pts = cemt.grid_points(atoms.cell.array, shape, shift=SHIFT)
    w = np.full(len(pts), atoms.get_volume() / len(pts))
    if permute:
        order = np.random.default_rng(0).permutation(len(pts))
        pts = pts[order]
    return pts, w


@pytest.mark.parametrize("two_elements", [False, True])
@pytest.mark.parametrize("permute", [False, True])
def test_grid_model_adjoint_forces_equal_autograd(two_elements, permute):
    atoms = _structure(two_elements)
    model = tiny_model("grid", _features(sorted(set(atoms.get_chemical_symbols()))))
    pts, w = _grid_nodes(atoms, (24, 23, 22), permute)
    assert model._grid_of(atoms, pts) is not None  # the FFT (and adjoint) path applies
    assert _coarse_groups(model.featurizer, atoms, (24, 23, 22))
    e_fast, f_fast = model.energy_forces(atoms, pts, w)
    e_auto, f_auto = model.energy_forces(atoms, pts, w, adjoint=False)
    assert e_fast == pytest.approx(e_auto, rel=1e-12)
    assert np.abs(f_auto).max() > 1e-3
    np.testing.assert_allclose(f_fast, f_auto, rtol=0, atol=1e-10 * np.abs(f_auto).max())


@pytest.mark.parametrize("two_elements", [False, True])
def test_grid_model_adjoint_forces_are_minus_energy_gradient(two_elements):
    atoms = _structure(two_elements)
    model = tiny_model("grid", _features(sorted(set(atoms.get_chemical_symbols()))))
    pts, w = _grid_nodes(atoms, (21, 22, 23))
    assert _coarse_groups(model.featurizer, atoms, (21, 22, 23))
    _, forces = model.energy_forces(atoms, pts, w)
    h = 1e-4
    for i, c in [(0, 0), (1, 2), (2, 1), (3, 0)]:
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, c] += sign * h
            e.append(model.energy_forces(moved, pts, w, forces=False)[0])
        fd = -(e[0] - e[1]) / (2 * h)
        assert forces[i, c] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_grid_model_adjoint_float32_close_to_float64():
    atoms = _structure(False)
    feats = _features(["Al"], threshold=1e-8)
    m64 = tiny_model("grid", feats)
    m32 = tiny_model("grid", feats, dtype="float32")
    pts, w = _grid_nodes(atoms, (20, 20, 20))
    e64, f64 = m64.energy_forces(atoms, pts, w)
    e32, f32 = m32.energy_forces(atoms, pts, w)
    assert e32 == pytest.approx(e64, rel=1e-5)
    np.testing.assert_allclose(f32, f64, rtol=0, atol=1e-4 * np.abs(f64).max())


def test_grid_model_adjoint_forces_rotate_with_the_structure():
    atoms = _structure(True)
    model = tiny_model("grid", _features(["Al", "Si"]))
    pts, w = _grid_nodes(atoms, (14, 15, 16))
    e0, f0 = model.energy_forces(atoms, pts, w)
    rot = atoms.copy()
    R = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    rot.positions = atoms.positions @ R.T
    assert model._grid_of(rot, pts @ R.T) is not None
    e1, f1 = model.energy_forces(rot, pts @ R.T, w)
    assert e1 == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f1, f0 @ R.T, rtol=0, atol=1e-9 * np.abs(f0).max())
