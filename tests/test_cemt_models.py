"""cemt models: forces are −dE/dR (finite differences, float64), rotate with the structure,
agree between the autograd path and the cached-Jacobian training path; unknown elements fail."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from _cemt_helpers import tiny_model as _model
from conftest import NC_SR_GPSP

import cemt

KINDS = ["grid", "atom", "bond"]


@pytest.fixture(scope="module")
def features():
    # a tight overlap threshold: the truncation steps of the features stay far below the
    # finite-difference resolution
    return cemt.feature_settings([-1, 0, 1, 2], [0.5, 1.0, 1.5], NC_SR_GPSP, ["Al"],
                                 overlap_threshold=1e-13)


def _structure():
    atoms = bulk("Al", "fcc", a=4.05) * (1, 1, 2)
    atoms.rattle(0.12, seed=3)
    return atoms


def _grid(atoms, n=150, seed=0):
    pts = np.random.default_rng(seed).random((n, 3)) @ atoms.cell.array
    return pts, np.full(n, atoms.get_volume() / n)


def _fd_force(model, atoms, pts, w, i, c, h=1e-4):
    """Central finite difference −dE/dR_ic of ``model.energy_forces`` (eV/Å)."""
    e = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[i, c] += sign * h
        e.append(model.energy_forces(moved, pts, w, forces=False)[0])
    return -(e[0] - e[1]) / (2 * h)


@pytest.mark.parametrize("kind", KINDS)
def test_forces_equal_minus_energy_gradient(kind, features):
    model = _model(kind, features)
    atoms = _structure()
    pts, w = _grid(atoms) if kind == "grid" else (None, None)
    _, forces = model.energy_forces(atoms, pts, w)
    assert np.abs(forces).max() > 1e-4  # a non-trivial check
    for i, c in [(0, 0), (1, 2), (1, 1)]:
        assert forces[i, c] == pytest.approx(_fd_force(model, atoms, pts, w, i, c),
                                             rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_training_path_matches_autograd(kind, features):
    model = _model(kind, features)
    atoms = _structure()
    pts, w = _grid(atoms, n=60) if kind == "grid" else (None, None)
    energy, forces = model.energy_forces(atoms, pts, w)
    t = model.structure_tensors(atoms, pts, w)
    e2, f2, _, _ = model.energy_forces_from_tensors(t["features"], t["weights"], t["jacobian"],
                                                   t["dweights"])
    assert float(e2.detach()) == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(f2.detach().numpy(), forces, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["atom", "bond", "grid"])
def test_rotating_structure_rotates_forces(kind, features):
    model = _model(kind, features)
    atoms = _structure()
    pts, w = _grid(atoms, n=80) if kind == "grid" else (None, None)
    e0, f0 = model.energy_forces(atoms, pts, w)
    rot = atoms.copy()
    R = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    rot.positions = atoms.positions @ R.T
    e1, f1 = model.energy_forces(rot, pts @ R.T if pts is not None else None, w)
    assert e1 == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f1, f0 @ R.T, atol=1e-10)


def test_density_head_non_negative_and_float32(features):
    model = _model("grid", features, dtype="float32")
    atoms = _structure()
    pts, _ = _grid(atoms, n=40)
    eps, rho = model.predict_fields(atoms, pts)
    assert eps.shape == rho.shape == (40,)
    assert np.all(rho >= 0) and np.all(np.isfinite(eps))
    assert next(model.network.parameters()).dtype == torch.float32


def test_unknown_element_is_rejected(features):
    model = _model("atom", features)
    atoms = _structure()
    atoms.numbers[0] = 12  # Mg: in NC-SR.gpsp, but not in the model
    with pytest.raises(cemt.UnknownElementError, match="Mg"):
        model.energy_forces(atoms)


def test_grid_model_on_mesh_nodes_uses_fft_path_consistently(features):
    """On the nodes of a periodic mesh the grid model featurizes by FFT (exact lattice sums,
    analytic Jacobian); energies, forces and training tensors agree with the direct sum and
    the forces are −dE/dR by finite differences."""
    from meshes import periodic_mesh

    model = _model("grid", features)
    atoms = _structure()
    mesh = periodic_mesh(atoms.cell.array, (4, 4, 7), order=2)
    pts = mesh.dof_positions
    w = np.full(len(pts), atoms.get_volume() / len(pts))
    assert cemt.match_grid(pts, atoms.cell.array) is not None
    t = model.structure_tensors(atoms, pts, w)
    direct = cemt.CemtModel.structure_tensors(model, atoms, pts, w)
    assert torch.allclose(t["features"], direct["features"], rtol=1e-7, atol=1e-9)
    assert torch.allclose(t["jacobian"], direct["jacobian"], rtol=1e-6, atol=1e-8)
    energy, forces = model.energy_forces(atoms, pts, w)
    e2, f2, _, _ = model.energy_forces_from_tensors(t["features"], t["weights"], t["jacobian"])
    assert float(e2) == pytest.approx(energy, rel=1e-10)
    assert np.allclose(f2.detach().numpy(), forces, rtol=1e-7, atol=1e-9)
    assert forces[1, 2] == pytest.approx(_fd_force(model, atoms, pts, w, 1, 2),
                                         rel=1e-5, abs=1e-8)


def test_grid_quadrature_trapezoid_on_mesh_grids(features):
    """On the P2 nodes of a periodic mesh the trapezoid quadrature weighs every node V/N
    (the nodal weights alternate between node types); other points keep their weights, and
    model files without the setting keep the nodal weights."""
    from meshes import periodic_mesh

    atoms = _structure()
    mesh = periodic_mesh(atoms.cell.array, (3, 3, 5), order=2)
    pts, w = mesh.dof_positions, mesh.nodal_weights
    assert np.ptp(w) > 0.1 * w.mean()
    trap = cemt.build_model({**_model("grid", features).config, "quadrature": "trapezoid"})
    assert trap.settings["quadrature"] == "trapezoid"
    _, wt = trap.points_and_weights(None, atoms, pts, w)
    assert np.allclose(wt.numpy(), atoms.get_volume() / len(pts))
    _, wr = trap.points_and_weights(None, atoms, pts[:-1], w[:-1])  # not a complete grid
    assert np.allclose(wr.numpy(), w[:-1])
    config = dict(trap.config)
    del config["quadrature"]
    old = cemt.build_model(config)
    assert old.settings["quadrature"] == "nodal"
    _, wn = old.points_and_weights(None, atoms, pts, w)
    assert np.allclose(wn.numpy(), w)
    with pytest.raises(cemt.ConfigError, match="quadrature"):
        cemt.GridModel(features, quadrature="gauss")


def test_reference_energy_density_fit_and_model(features):
    """fit_reference recovers a known radial reference from fields; a grid model with a
    reference adds it to its energy density, its forces stay −dE/dR, and the reference's own
    share of a structure's energy is a constant per atom with ~zero force."""
    from types import SimpleNamespace

    from meshes import periodic_mesh

    from cemt._reference import REFERENCE_WIDTHS, evaluate_reference, fit_reference

    atoms = _structure()
    mesh = periodic_mesh(atoms.cell.array, (7, 7, 13), order=2)
    pts, w = mesh.dof_positions, mesh.nodal_weights
    true = {"Al": {"B": [5.0, -40.0, -20.0, 3.0, 0.5],
                   "beta": [1 / s**2 for s in REFERENCE_WIDTHS]}}
    field = evaluate_reference(true, atoms, pts) - 0.7
    rec = SimpleNamespace(atoms=atoms, points=pts, weights=w, fields={"energy_density": field})
    fitted = fit_reference([rec])
    assert np.allclose(fitted["Al"]["B"], true["Al"]["B"], rtol=1e-6, atol=1e-6)

    tiny = _model("grid", features)
    model = cemt.build_model({**tiny.config, "quadrature": "trapezoid", "reference": fitted})
    plain = cemt.build_model({**tiny.config, "quadrature": "trapezoid"})
    for m in (model, plain):
        m.load_state_dict(tiny.state_dict())
        m.scaler.load_state_dict(tiny.scaler.state_dict())
    e_ref = model.reference_terms(atoms, pts, w)
    e, f = model.energy_forces(atoms, pts, w)
    e0, f0 = plain.energy_forces(atoms, pts, w)
    assert e == pytest.approx(e0 + e_ref["energy"], rel=1e-10)
    assert np.allclose(f, f0 + e_ref["forces"], atol=1e-8)
    assert np.abs(e_ref["forces"]).max() < 1e-4  # rigid peaks carry no force
    shifted = atoms.copy()
    shifted.positions += [0.11, -0.07, 0.05]
    assert model.reference_terms(shifted, pts, w)["energy"] == pytest.approx(
        e_ref["energy"], abs=1e-4 * len(atoms))
    eps, _ = model.predict_fields(atoms, pts)
    eps0, _ = plain.predict_fields(atoms, pts)
    assert np.allclose(eps - eps0, e_ref["field"].numpy(), atol=1e-5)
    assert f[1, 1] == pytest.approx(_fd_force(model, atoms, pts, w, 1, 1), rel=1e-5, abs=1e-7)
