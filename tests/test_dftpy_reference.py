"""The DFTpy reference harness reproduces the published fcc-Al numbers (BACKGROUND.md §3).

DFTpy is an independent plane-wave OF-DFT code used only as a reference in tests and
benchmarks. Runtime of this module: a few seconds (the psp8 radial transform dominates).
"""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

pytest.importorskip("dftpy")

from dftpy_reference import (  # noqa: E402  (tests/ is on sys.path under pytest)
    BOHR_IN_ANGSTROM,
    ErfLocalPseudo,
    dftpy_converged_energy,
    dftpy_reference,
    grid_shape,
)

REPO = Path(__file__).resolve().parents[1]
GNH_PSP8 = REPO.parent / "shared" / "data" / "Al_goodwin.psp8"

ERF_AL = {"Al": ("erf", 3.0, 1.0)}

# DFTpy 2.2 calls numpy.fft with s= but no axes= (NumPy 2 DeprecationWarning): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`axes` should not be `None`:DeprecationWarning")


def _fcc_al(a_angstrom):
    return bulk("Al", "fcc", a=a_angstrom, cubic=True)


def test_erf_pseudo_matches_analytic_form_on_fft_grid():
    """DFTpy's spline of our V(q) table equals -4 pi Z exp(-q^2 rc^2/4)/q^2 (and pi Z rc^2 at 0)."""
    from dftpy.functional import Functional
    from dftpy.grid import DirectGrid
    from dftpy.ions import Ions

    ions = Ions.from_ase(_fcc_al(4.05))
    grid = DirectGrid(lattice=ions.cell.array, nr=np.array([24, 24, 24]), full=False)
    pp = ErfLocalPseudo(3.0, 1.0)
    pseudo = Functional(type="PSEUDO", grid=grid, ions=ions, PP_list={"Al": pp}, PME=False)
    q = grid.get_reciprocal().q
    got = pseudo.vlines["Al"]
    want = pp.vq(q)
    assert got[0, 0, 0] == pytest.approx(np.pi * 3.0 * 1.0 ** 2, rel=1e-12)
    nz = q > 0
    assert np.max(np.abs(got[nz] - want[nz]) / np.abs(want[nz]).max()) < 1e-10


def test_erf_al_energy_matches_published():
    """BACKGROUND §3: erf Z=3 rc=1 bohr, TF+1vW, LDA, fcc a=4.05 Å -> -2.693024285 Ha/atom."""
    res = dftpy_reference(_fcc_al(4.05), ERF_AL, 1.0)
    assert res["natoms"] == 4 and res["nelec"] == pytest.approx(12.0)
    assert res["energy_per_atom"] == pytest.approx(-2.693024285, abs=1e-6)
    comps = res["components"]
    parts = ("tf", "vw", "xc", "hartree", "electron_ion", "ewald")
    assert res["energy"] == pytest.approx(sum(comps[k] for k in parts), abs=1e-10)
    assert comps["electrostatic"] == pytest.approx(
        comps["hartree"] + comps["electron_ion"] + comps["ewald"], abs=1e-12)
    # density integrates to N_e on the returned grid; perfect crystal -> zero forces
    dv = abs(np.linalg.det(res["cell"])) / np.prod(res["nr"])
    assert res["rho"].shape == res["nr"]
    assert res["rho"].sum() * dv == pytest.approx(12.0, rel=1e-10)
    assert np.abs(res["forces"]).max() < 1e-6


def test_gnh_al_energy_and_components_match_published():
    """BACKGROUND §3: GNH psp8, TF+0.2vW, fcc a=8.0 bohr."""
    assert GNH_PSP8.is_file(), f"GNH pseudopotential not found at {GNH_PSP8}"
    res = dftpy_reference(_fcc_al(8.0 * BOHR_IN_ANGSTROM), {"Al": str(GNH_PSP8)}, 0.2)
    assert np.allclose(res["cell"], 8.0 * np.eye(3), atol=1e-12)  # bohr in, bohr out
    assert res["energy_per_atom"] == pytest.approx(-2.21307903, abs=1e-6)
    published = {"tf": 0.7611516, "vw": 0.0647310, "xc": -0.7863510, "hartree": 0.0142998,
                 "electron_ion": 0.3120745, "ewald": -2.5789849}
    per_atom = res["components_per_atom"]
    for key, value in published.items():
        assert per_atom[key] == pytest.approx(value, abs=1e-5), key


def test_forces_are_energy_derivatives_on_rattled_cell():
    """Sum of forces ~ 0, and one component equals a central difference of E (4 atoms)."""
    atoms = _fcc_al(4.05)
    rng = np.random.default_rng(7)
    atoms.positions += rng.normal(scale=0.25, size=atoms.positions.shape)  # Å
    kw = dict(ecut_ev=600.0, tol=1e-12)
    res = dftpy_reference(atoms, ERF_AL, 1.0, **kw)
    f = res["forces"]
    assert np.abs(f).max() > 5e-3, "rattle too small to test anything"
    assert np.abs(f.sum(axis=0)).max() < 1e-6

    iatom, comp = 1, 0
    h_bohr = 2e-3
    energies = []
    for sign in (+1, -1):
        moved = atoms.copy()
        moved.positions[iatom, comp] += sign * h_bohr * BOHR_IN_ANGSTROM
        r = dftpy_reference(moved, ERF_AL, 1.0, forces=False, **kw)
        assert r["nr"] == res["nr"]
        energies.append(r["energy"])
    f_fd = -(energies[0] - energies[1]) / (2.0 * h_bohr)
    assert f[iatom, comp] == pytest.approx(f_fd, abs=1e-6)  # observed ~1e-8


def test_grid_shape_and_convergence_helper():
    cell = 4.05 / BOHR_IN_ANGSTROM * np.eye(3)
    nr = grid_shape(cell, spacing=0.5)
    assert all(n % 2 == 0 and cell[0, 0] / n <= 0.5 for n in nr)
    assert grid_shape(cell, ecut_ev=600.0) == (18, 18, 18)
    res = dftpy_converged_energy(_fcc_al(4.05), ERF_AL, 1.0, target=1e-7,
                                 ecuts_ev=(200, 400, 800, 1200))
    assert res["energy_per_atom"] == pytest.approx(-2.693024285, abs=1e-7)
    assert len(res["ecut_history"]) >= 2
