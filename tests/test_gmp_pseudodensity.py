"""Pseudodensity sets: reading, writing, mappings, and fitting Gaussians to radial tables."""

import numpy as np
import pytest
import torch
from ase import Atoms

from cemt import (ElementPseudodensity, FeatureScaler, GMPFeaturizer, PseudodensitySet,
                  fit_pseudodensity, read_gpsp, write_gpsp)

from _gmp_data import GPSP, requires_gpsp


@requires_gpsp
def test_reference_carbon_block_and_electron_counts():
    pset = read_gpsp(GPSP)
    c = pset["C"]
    assert c.Z == 6 and c.n_primitives == 3
    np.testing.assert_allclose(c.B, [-2.322849011981058, 2.1623778487278305, 0.30665285931421504])
    np.testing.assert_allclose(c.beta, [17.575593605099275, 2.887120665118505, 0.9942081328898342])
    assert c.electrons == pytest.approx(4.0, abs=0.01)  # valence electrons of C
    # the published Al fit integrates to 2.92 of 3 valence electrons (a property of the data)
    assert pset.by_number(13).electrons == pytest.approx(2.924, abs=0.001)


@requires_gpsp
def test_write_read_roundtrip(tmp_path):
    pset = read_gpsp(GPSP)
    sub = {s: pset[s] for s in ("H", "C", "Al")}
    write_gpsp(sub, tmp_path / "sub.gpsp", comment="subset\nfor a test")
    back = read_gpsp(tmp_path / "sub.gpsp")
    assert list(back) == ["H", "C", "Al"]
    for s in sub:
        np.testing.assert_array_equal(back[s].B, sub[s].B)
        np.testing.assert_array_equal(back[s].beta, sub[s].beta)


def test_mapping_forms_are_equivalent():
    el = ElementPseudodensity("C", 6, [1.0, 0.5], [3.0, 0.8])
    forms = [{"C": el}, {"C": ([1.0, 0.5], [3.0, 0.8])}, {"C": {"B": [1.0, 0.5], "beta": [3.0, 0.8]}},
             PseudodensitySet([el])]
    atoms = Atoms("C2", positions=[[0, 0, 0], [1.3, 0.1, 0]])
    pts = np.array([[0.4, 0.3, -0.2]])
    res = [GMPFeaturizer([-1, 0, 2], [0.6], f).features(atoms, pts) for f in forms]
    for r in res[1:]:
        assert torch.equal(r, res[0])


def _synthetic(r):
    B = np.array([0.9, 0.25, 0.03])
    beta = np.array([6.0, 1.4, 0.35])
    return (B * np.exp(-beta * r[:, None] ** 2)).sum(1), float(np.sum(B * (np.pi / beta) ** 1.5))


def test_fit_recovers_synthetic_density_and_conserves_electrons():
    r = np.linspace(0.0, 8.0, 801)
    rho, n_exact = _synthetic(r)
    fit = fit_pseudodensity(r, rho, 3, symbol="Si")
    assert fit.symbol == "Si" and fit.Z == 14
    assert np.all(fit.B > 0) and np.all(fit.beta > 0)
    n_table = np.sum(0.5 * np.diff(r) * (4 * np.pi * r**2 * rho)[1:]
                     + 0.5 * np.diff(r) * (4 * np.pi * r**2 * rho)[:-1])
    assert fit.electrons == pytest.approx(n_table, rel=1e-12)  # integral preserved exactly
    assert n_table == pytest.approx(n_exact, rel=1e-5)
    radial_err = np.abs(4 * np.pi * r**2 * (fit.density(r) - rho)).max()
    assert radial_err < 1e-4 * np.abs(4 * np.pi * r**2 * rho).max()


@pytest.mark.parametrize("n", [2, 4, 6])
def test_fit_other_sizes_positive_and_conserving(n):
    r = np.linspace(0.0, 8.0, 401)
    rho, _ = _synthetic(r)
    fit = fit_pseudodensity(r, rho, n, electrons=4.0)
    assert fit.n_primitives == n
    assert np.all(fit.B > 0) and np.all(fit.beta > 0)
    assert fit.electrons == pytest.approx(4.0, rel=1e-12)


def test_fit_rejects_bad_input():
    r = np.linspace(0, 5, 50)
    with pytest.raises(Exception, match="n_primitives must be an integer from 2 to 6"):
        fit_pseudodensity(r, np.exp(-r**2), 7)
    with pytest.raises(Exception, match="strictly increasing"):
        fit_pseudodensity(r[::-1], np.exp(-r**2), 3)


def test_feature_scaler_fit_transform_save_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1, 0.0]) \
        + torch.tensor([2.0, -1.0, 3.0, 7.0])
    s = FeatureScaler().fit(x)
    y = s.transform(x)
    assert torch.allclose(y[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y[:, :3].std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    assert torch.all(y[:, 3] == 0)  # constant column: centred, not divided by ~0
    assert torch.allclose(s.inverse_transform(y), x)
    # batch-wise fitting gives the same moments
    s2 = FeatureScaler()
    for chunk in x.split(77):
        s2.partial_fit(chunk)
    assert torch.allclose(s2.mean, s.mean) and torch.allclose(s2.std, s.std)
    torch.save(s.state_dict(), tmp_path / "scaler.pt")
    s3 = FeatureScaler().load_state_dict(torch.load(tmp_path / "scaler.pt"))
    assert torch.equal(s3.transform(x[:5].float()), s.transform(x[:5].float()))
    assert s3.transform(x[:5].float()).dtype == torch.float32
