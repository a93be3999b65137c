"""Analytic checks of GMP features and of the harmonic tables."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from cemt import GMPFeaturizer, read_gpsp
from cemt._harmonics import maxwell_table, multi_indices

from _gmp_data import GPSP, requires_gpsp

pytestmark = requires_gpsp


def test_isolated_carbon_reference_value():
    feat = GMPFeaturizer([0], [0.5], GPSP)
    g0 = feat.features(Atoms("C"), np.zeros((1, 3)))[0, 0].item()
    assert abs(g0 - 0.657653592652) < 1e-10


@pytest.mark.parametrize("symbol", ["C", "Al", "O"])
def test_isolated_atom_at_centre_closed_form(symbol):
    sigmas = [0.25, 0.5, 1.0, 2.0]
    feat = GMPFeaturizer([-1, 0, 1, 2, 3, 4, 5], sigmas, GPSP)
    atoms = Atoms(symbol, positions=[[0.3, -1.2, 2.0]])
    f = feat.features(atoms).numpy()[0]
    el = read_gpsp(GPSP)[symbol]
    assert f[0] == pytest.approx(el.B.sum(), rel=1e-12)  # order -1: rho at the nucleus
    for i, s in enumerate(sigmas):
        alpha, A = 1 / (2 * s * s), (2 * math.pi * s * s) ** -1.5
        expected = abs(np.sum(A * el.B * (math.pi / (alpha + el.beta)) ** 1.5))
        assert f[1 + i] == pytest.approx(expected, rel=1e-12)
    assert np.all(f[1 + len(sigmas):] == 0.0)  # G_{l>=1} vanish at the centre


def test_columns_ordered_by_order_then_sigma():
    feat = GMPFeaturizer([2, -1, 0], [1.0, 0.5], GPSP)
    assert feat.feature_names == ["rho", "G0_s0.5", "G0_s1", "G2_s0.5", "G2_s1"]
    assert feat.n_features == 5
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.1, 0.3, 0.2]])
    p = np.array([[0.5, 0.4, -0.3]])
    f = feat.features(atoms, p).numpy()[0]
    single = GMPFeaturizer([2], [0.5], GPSP).features(atoms, p).numpy()[0, 0]
    assert f[3] == pytest.approx(single, rel=1e-13)


EXPLICIT = {  # BACKGROUND §4
    (1, 0, 0): lambda x, y, z, r2: x,
    (2, 0, 0): lambda x, y, z, r2: 3 * x * x - r2,
    (1, 1, 0): lambda x, y, z, r2: 3 * x * y,
    (3, 0, 0): lambda x, y, z, r2: 15 * x**3 - 9 * x * r2,
    (2, 1, 0): lambda x, y, z, r2: 15 * x * x * y - 3 * y * r2,
    (1, 1, 1): lambda x, y, z, r2: 15 * x * y * z,
    (4, 0, 0): lambda x, y, z, r2: 105 * x**4 - 90 * x * x * r2 + 9 * r2 * r2,
}


def _eval(l, row, p):
    exps, coeffs, _ = maxwell_table(l)
    return sum(c * p[0] ** e[0] * p[1] ** e[1] * p[2] ** e[2] for c, e in zip(coeffs[row], exps))


def test_harmonics_match_explicit_formulas_and_are_harmonic():
    rng = np.random.default_rng(0)
    p = rng.normal(size=3)
    for n, fn in EXPLICIT.items():
        l = sum(n)
        row = multi_indices(l).index(n)
        assert _eval(l, row, p) == pytest.approx(fn(*p, p @ p), rel=1e-12)
    # every T_n (l <= 6) is harmonic: finite-difference Laplacian of a polynomial of degree l
    h = 1e-3
    for l in range(7):
        for row in range(len(multi_indices(l))):
            lap = sum(_eval(l, row, p + h * e) + _eval(l, row, p - h * e) - 2 * _eval(l, row, p)
                      for e in np.eye(3)) / h**2
            scale = max(1.0, abs(_eval(l, row, p)))
            assert abs(lap) < 1e-4 * scale * (l + 1) ** 3


def test_order_norm_matches_point_source_identity():
    """sum_n l!/n! T_n(d)^2 = l! (2l-1)!! |d|^(2l) (used by the cutoff bound)."""
    d = np.array([0.3, -1.1, 0.7])
    for l in range(7):
        _, _, w = maxwell_table(l)
        total = sum(w[r] * _eval(l, r, d) ** 2 for r in range(len(w)))
        dfact = math.prod(range(2 * l - 1, 0, -2)) if l else 1
        assert total == pytest.approx(math.factorial(l) * dfact * (d @ d) ** l, rel=1e-12)


def test_float32_close_to_float64():
    rng = np.random.default_rng(4)
    atoms = Atoms("COH", cell=np.diag([4.0, 4.5, 5.0]) + 0.3, pbc=True,
                  scaled_positions=rng.uniform(size=(3, 3)))
    pts = rng.uniform(size=(20, 3)) @ atoms.cell.array
    f64 = GMPFeaturizer([-1, 0, 1, 2, 3, 4], [0.4, 1.0], GPSP).features(atoms, pts)
    f32 = GMPFeaturizer([-1, 0, 1, 2, 3, 4], [0.4, 1.0], GPSP, dtype=torch.float32) \
        .features(atoms, pts)
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    scale = f64.abs().max(dim=0).values
    assert torch.all((f32.double() - f64).abs() <= 2e-5 * scale)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(8)
    atoms = Atoms("CO", cell=[[3.0, 0.2, 0], [0, 3.3, 0.4], [0.5, 0, 3.1]], pbc=[True, True, False],
                  scaled_positions=rng.uniform(size=(2, 3)))
    pts = rng.uniform(-1, 4, size=(300, 3))
    ref = GMPFeaturizer([-1, 0, 2, 4], [0.5, 1.2], GPSP).features(atoms, pts)
    small = GMPFeaturizer([-1, 0, 2, 4], [0.5, 1.2], GPSP, max_pairs_per_chunk=2048,
                          chunk_size=7, block_size=0.6).features(atoms, pts)
    assert torch.allclose(ref, small, rtol=1e-12, atol=1e-15)


def test_fft_grid_agrees_with_direct_sum():
    rng = np.random.default_rng(9)
    cell = np.array([[3.8, 0.4, 0.0], [-0.5, 4.1, 0.3], [0.2, 0.6, 3.6]])
    atoms = Atoms("AlCO", cell=cell, pbc=True, scaled_positions=rng.uniform(size=(3, 3)))
    feat = GMPFeaturizer([-1, 0, 1, 2, 3, 4], [0.3, 0.9, 2.0], GPSP, overlap_threshold=1e-13)
    from cemt import grid_points
    shift = np.array([0.11, -0.2, 0.05])
    fft = feat.features_grid(atoms, (8, 9, 7), shift=shift)
    direct = feat.features(atoms, grid_points(cell, (8, 9, 7), shift))
    assert torch.allclose(fft, direct, rtol=1e-8, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine; the CPU path is covered by every other test")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(10)
    atoms = Atoms("CO", cell=np.eye(3) * 3.5, pbc=True, scaled_positions=rng.uniform(size=(2, 3)))
    pts = rng.uniform(size=(50, 3)) * 3.5
    cpu = GMPFeaturizer([-1, 0, 1, 2, 3, 4], [0.4, 1.0], GPSP).features(atoms, pts)
    gpu = GMPFeaturizer([-1, 0, 1, 2, 3, 4], [0.4, 1.0], GPSP, device="cuda").features(atoms, pts)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-10, atol=1e-14)
    fft = GMPFeaturizer([0, 2], [0.6], GPSP, device="cuda").features_grid(atoms, (6, 6, 6))
    assert fft.device.type == "cuda"
