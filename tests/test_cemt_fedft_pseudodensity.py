"""The project's own GMP pseudodensities from fedft free-atom densities."""

import numpy as np

import cemt


def test_shipped_set_is_readable_and_conserves_electrons():
    pset = cemt.read_gpsp(cemt.FEDFT_GPSP)
    al = pset["Al"]
    assert al.Z == 13 and 2 <= al.n_primitives <= 6
    assert np.all(al.B > 0) and np.all(al.beta > 0)
    assert abs(np.sum(al.B * (np.pi / al.beta) ** 1.5) - 3.0) < 1e-6
    feat = cemt.GMPFeaturizer(orders=[-1, 0], sigmas=[0.5], pseudodensity=cemt.FEDFT_GPSP)
    from ase.build import bulk

    g = feat.features(bulk("Al", "fcc", a=4.05), np.zeros((1, 3)))
    assert g.shape == (1, 2) and np.all(np.isfinite(g.numpy()))


def test_free_atom_density_and_fit():
    r, rho, result = cemt.free_atom_density("Al", "erf:3:0.529177", 1.0, box=7.0,
                                            n_radii=120, n_directions=50)
    assert result.n_electrons == 3.0
    inside = np.trapezoid(4 * np.pi * r**2 * rho, r)
    assert 2.7 < inside <= 3.0 + 1e-6  # most of the charge within half the box
    assert rho[0] == rho.max()  # peaked at the nucleus for the attractive erf ion
    el = cemt.fit_pseudodensity(r, rho, 4, symbol="Al", electrons=3.0)
    model = sum(B * np.exp(-b * r**2) for B, b in zip(el.B, el.beta, strict=True))
    assert np.abs(model - rho).max() < 0.05 * rho.max()
