"""The error model of benchmarks/bench_element_order.py: Fourier evaluation on translated
grids, the Lagrange bases, the tetrahedron rule and the P_p interpolation error's rate."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_element_order import (PeriodicSpectrum, interpolation_error,  # noqa: E402
                                 lagrange_basis, tetrahedron_rule)

A = 7.0  # bohr


def _band_limited(n_grid=9, seed=0):
    """Values of a real random trigonometric polynomial on an odd grid (no Nyquist mode)."""
    return np.random.default_rng(seed).normal(size=(n_grid,) * 3)


def test_spectrum_on_translated_grid_matches_direct_sum():
    values = _band_limited()
    spec = PeriodicSpectrum(values, A)
    m = spec.freq
    offset = np.array([0.31, 1.7, -2.2])
    n = 4
    j = np.array(np.unravel_index(np.arange(n**3), (n,) * 3)).T
    x = A * j / n + offset
    phase = np.exp(2j * np.pi * np.einsum("pd,abcd->pabc", x, np.stack(
        np.meshgrid(m, m, m, indexing="ij"), axis=-1)) / A)
    direct = np.real(np.einsum("abc,pabc->p", spec.coeffs, phase))
    np.testing.assert_allclose(spec.on_grid(n, offset).ravel(), direct, atol=1e-12)
    d_direct = np.real(np.einsum("abc,pabc->p", spec.coeffs * (2j * np.pi * m[None, :, None]
                                                              / A), phase))
    np.testing.assert_allclose(spec.on_grid(n, offset, 1).ravel(), d_direct, atol=1e-11)
    # on its own grid, the spectrum gives back the values
    np.testing.assert_allclose(spec.on_grid(9, np.zeros(3)), values, atol=1e-12)


def test_tetrahedron_rule():
    points, weights = tetrahedron_rule(5)  # exact to degree 7
    np.testing.assert_allclose(weights.sum(), 1 / 6)
    # ∫ x^2 y^3 z^2 over the reference tetrahedron = 2! 3! 2! / (2+3+2+3)!
    np.testing.assert_allclose(weights @ (points[:, 0] ** 2 * points[:, 1] ** 3
                                          * points[:, 2] ** 2), 2 * 6 * 2 / 3628800)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_lagrange_basis(p):
    points, _ = tetrahedron_rule(4)
    values, gradients, nodes = lagrange_basis(p, points)
    assert values.shape[1] == (p + 1) * (p + 2) * (p + 3) // 6
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(gradients.sum(axis=1), 0.0, atol=1e-10)
    at_nodes, _, _ = lagrange_basis(p, nodes)
    np.testing.assert_allclose(at_nodes, np.eye(len(nodes)), atol=1e-10)


def test_interpolation_error_rate_and_constants():
    x = np.arange(9) / 9
    smooth = (np.cos(2 * np.pi * x)[:, None, None] * np.cos(2 * np.pi * x)[None, :, None]
              + 0.3 * np.sin(2 * np.pi * x)[None, None, :])
    spec = PeriodicSpectrum(smooth, A)
    for p in (1, 2, 3):
        coarse, fine = (interpolation_error(spec, n, p) for n in (6, 12))
        assert abs(np.log2(coarse / fine) - 2 * p) < 0.15, (p, coarse, fine)
    constant = PeriodicSpectrum(np.full((5, 5, 5), 0.7), A)
    assert interpolation_error(constant, 3, 2) < 1e-25
