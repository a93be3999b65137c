"""fedft against independent references: published figures, DFTpy run in the test, analytic
convergence rates, finite differences and exact invariances (issue 2 acceptance)."""

import numpy as np
import pytest
from ase.build import bulk
from conftest import BOHR, ERF_AL, GNH_PSP8
from dftpy_reference import dftpy_reference

import fedft
from fedft import FORCE, HARTREE

# BACKGROUND §3: GNH Al, TF + 0.2 vW, LDA, fcc a = 8 bohr (DFTpy, converged), Ha/atom
GNH_TOTAL = -2.21307903
GNH_PARTS = {"tf": 0.7611516, "vw": 0.0647310, "xc": -0.7863510,
             "electrostatic": 0.0142998 + 0.3120745 - 2.5789849}


def _gnh_cell():
    return bulk("Al", "fcc", a=8.0 * BOHR, cubic=True)


def _per_atom(result, key=None):
    value = result.energy if key is None else result.components[key]
    return value / HARTREE / len(result.atoms)


def test_gnh_al_default_preset_energy_and_components(gnh_psp8):
    r = fedft.compute(_gnh_cell(), {"Al": gnh_psp8}, 0.2)  # default preset: accurate
    err = _per_atom(r) - GNH_TOTAL
    print(f"GNH accurate: {r.mesh.n_dofs} DOFs, error {err:.2e} Ha/atom")
    assert abs(err) < 1e-4
    diffs = {key: _per_atom(r, key) - ref for key, ref in GNH_PARTS.items()}
    print("GNH accurate component errors (Ha/atom): "
          + ", ".join(f"{k} {v:+.2e}" for k, v in diffs.items()))
    for key, diff in diffs.items():
        assert abs(diff) < 2e-4, key


def test_gnh_al_tight_preset_energy(gnh_psp8):
    r = fedft.compute(_gnh_cell(), {"Al": gnh_psp8}, 0.2, preset="tight")
    err = _per_atom(r) - GNH_TOTAL
    print(f"GNH tight: {r.mesh.n_dofs} DOFs, error {err:.2e} Ha/atom")
    assert abs(err) < 2e-5


def test_erf_al_matches_dftpy(al_conventional):
    ref = dftpy_reference(al_conventional, {"Al": ("erf", 3, 1.0)}, 1.0)
    r = fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0)
    err = _per_atom(r) - ref["energy_per_atom"]
    print(f"erf Al accurate: {r.mesh.n_dofs} DOFs, error {err:.2e} Ha/atom")
    assert abs(err) < 1e-4
    assert abs(ref["energy_per_atom"] + 2.693024285) < 1e-6  # DFTpy itself is converged


def _energy_errors(atoms, order, divisions, reference):
    cell = np.asarray(atoms.cell) / BOHR
    length = np.linalg.norm(cell, axis=1).max()
    errs, hs = [], []
    for n in divisions:
        r = fedft.compute(atoms, {"Al": f"erf:3:{2.0 * BOHR!r}"}, 1.0, preset="tight",
                          order=order, intorder=2 if order == 1 else 5,
                          spacing=length / n * (1 + 1e-9))
        errs.append(abs(_per_atom(r) - reference))
        hs.append(length / n)
    return np.array(hs), np.array(errs)


@pytest.mark.parametrize("order,divisions,rate", [(2, (8, 12, 16), 4.0), (1, (16, 24, 32), 2.0)])
def test_energy_convergence_rate(al_primitive, order, divisions, rate):
    """Energy error vs mesh size against DFTpy (soft erf ion, rc = 2 bohr, triclinic cell)."""
    reference = dftpy_reference(al_primitive, {"Al": ("erf", 3, 2.0)}, 1.0)["energy_per_atom"]
    hs, errs = _energy_errors(al_primitive, order, divisions, reference)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    print(f"P{order}: h={hs} errors={errs} slope={slope:.2f}")
    assert abs(slope - rate) < 0.6


def test_forces_equal_finite_differences(al_conventional):
    atoms = al_conventional.copy()
    atoms.rattle(0.1, seed=7)
    opts = dict(preset="fast", tol_energy=1e-11, tol_residual=1e-7, poisson_rtol=1e-12)
    r = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, **opts)
    h = 0.005  # Å
    worst = 0.0
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(fedft.compute(moved, {"Al": ERF_AL}, 1.0, **opts).energy)
        fd = -(energies[0] - energies[1]) / (2 * h)
        worst = max(worst, abs(fd - r.forces[atom, axis]) / FORCE)
    print(f"|F_HF - F_FD| max {worst:.2e} Ha/bohr")
    assert worst < 1e-5


def _rattled(kind):
    if kind == "gnh":  # GNH Al, 4 atoms, 0.05 Å
        atoms = _gnh_cell()
        atoms.positions += np.random.default_rng(5).normal(0.0, 0.05, atoms.positions.shape)
        return atoms, {"Al": str(GNH_PSP8)}, {"Al": GNH_PSP8}, 0.2
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)  # erf Al, 32 atoms, 0.1 Å
    atoms.positions += np.random.default_rng(6).normal(0.0, 0.1, atoms.positions.shape)
    return atoms, {"Al": ("erf", 3, 1.0)}, {"Al": ERF_AL}, 1.0


@pytest.mark.parametrize("kind", ["gnh", "erf32"])
def test_forces_match_dftpy_on_rattled_cells(kind, gnh_psp8):
    atoms, dftpy_pseudo, pseudo, lam = _rattled(kind)
    ref = dftpy_reference(atoms, dftpy_pseudo, lam)
    r = fedft.compute(atoms, pseudo, lam)  # default preset
    diff = np.abs(r.forces / FORCE - ref["forces"]).max()
    net = np.abs(r.forces.sum(0) / FORCE).max()
    print(f"{kind}: max |F - F_DFTpy| = {diff:.2e} Ha/bohr (max |F| "
          f"{np.abs(ref['forces']).max():.2e}), net force {net:.1e} Ha/bohr, energy error "
          f"{_per_atom(r) - ref['energy_per_atom']:.2e} Ha/atom")
    assert diff < 2e-4
    assert net < 1e-5


def test_rigid_translation_egg_box_below_tolerance(al_conventional):
    base = fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0)
    amplitudes = []
    for shift in np.random.default_rng(8).uniform(-1.0, 1.0, (2, 3)):
        moved = al_conventional.copy()
        moved.positions += shift
        r = fedft.compute(moved, {"Al": ERF_AL}, 1.0)
        amplitudes.append(abs(_per_atom(r) - _per_atom(base)))
    print(f"egg-box amplitude (accurate preset): {max(amplitudes):.2e} Ha/atom")
    assert max(amplitudes) < 1e-4


def test_supercell_energy_per_atom_equals_unit_cell(al_primitive):
    cell = np.asarray(al_primitive.cell) / BOHR
    spacing = np.linalg.norm(cell, axis=1).max() / 8 * (1 + 1e-9)
    opts = dict(preset="fast", spacing=spacing, tol_energy=1e-11, tol_residual=1e-7,
                poisson_rtol=1e-12)
    unit = fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, **opts)
    sc = al_primitive.repeat(2)
    sc.rattle(0.0)
    big = fedft.compute(sc, {"Al": ERF_AL}, 1.0, **opts)
    assert big.mesh.divisions == tuple(2 * np.array(unit.mesh.divisions))
    diff = abs(_per_atom(big) - _per_atom(unit))
    print(f"2x2x2 supercell vs unit cell: {diff:.2e} Ha/atom")
    assert diff < 1e-6
