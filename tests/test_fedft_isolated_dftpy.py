"""Isolated fedft against DFTpy in a periodic box (issue 7): a neutral cluster centred in a
cubic box converges to the isolated energy as the box grows (DFTpy's G=0 pseudopotential
term N_e/Ω Σα and the Ewald background cancel to O(1/Ω) for a neutral cell; the image
interaction of a neutral cluster decays as p²/L³ + O(L⁻⁵), tiny for a nearly non-polar one),
so a converged box is an independent reference for fedft's open-boundary electrostatics and
plain Coulomb ions.

Measured for this Al dimer (erf Al, rc = 1 bohr, TF + 1·vW, LDA; DFTpy 400 eV, which is
converged to 2e-8 Ha/atom against 600 eV):

* DFTpy box 28 → 32 bohr: E/atom changes 4.3e-6 Ha, forces 6.7e-6 Ha/bohr (a rattled copy:
  32 → 36 → 40 bohr changes < 4e-7 Ha/atom).
* fedft − DFTpy (E per atom, max |ΔF|), measured on the final open-boundary form:

  ========================================  =======  ============  ===========
  fedft settings (accurate preset + ...)     DOFs     ΔE (Ha/atom)  ΔF (Ha/bohr)
  ========================================  =======  ============  ===========
  (preset: spacing 0.45, grading_rate 0.3)   101,695  +9.9e-4       2.7e-4
  grading_rate 0.15                          237,177  +3.5e-4       7.3e-5
  grading_rate 0.1                           426,213  +2.4e-4       4.1e-5
  spacing 0.35, grading_rate 0.2             214,775  +2.8e-4       7.4e-5
  spacing 0.35, grading_rate 0.15            321,489  +1.8e-4       4.2e-5
  compensation_width 3 bohr (default 2)      101,695  +7.1e-4       2.8e-4
  compensation_width 4 bohr                  101,695  +6.5e-4       3.1e-4
  grading_rate 0.15, compensation_width 4    237,177  +2.2e-4       7.2e-5
  grading_start 2 bohr (0.45 up to 2 bohr)   265,677  +1.5e-4       3.8e-5
  grading_start 3 bohr                       378,885  +1.2e-4
  ========================================  =======  ============  ===========

  The difference is fedft's discretisation error of the graded mesh: positive (the density
  is variational), falling with both the size at the nuclei and the growth rate (the
  accurate preset leaves ~0.8-1.2 bohr elements in the bond and surface regions), not the
  quadrature (intorder 7 moves it by 2e-6) or the vacuum. Part of it (~30 %) is the mesh's
  potential of the ions' 2-bohr compensation Gaussians on those coarse elements: wider
  Gaussians lower it at no cost in DOFs. Keeping the preset's 0.45 bohr up to 2 bohr from
  the nuclei (``grading_start``) removes most of the rest with the fewest DOFs; what is left
  (+1.2e-4 at 3 bohr) is the 0.45-bohr elements' own error (spacing 0.35, h_max 2.5
  and grading_start 3: +4.6e-5).

  The table was measured with the compensation Gaussians' own energy taken from the mesh.
  fedft now takes it exact (``fedft._groundstate._with_compensation_self_energy``), which
  removes its discretisation error (always positive): accurate preset sizes from the nuclei
  +6.5e-4 Ha/atom; spacing 0.35 + rate 0.15 +1.22e-4, 1.25e-5 Ha/bohr; grading_start 0.5,
  1, 1.5, 2 bohr +3.5e-4, +2.1e-4, +1.49e-4 (212,795 DOFs), +1.18e-4 (1.44e-5 Ha/bohr).
  The accurate preset now keeps 1.5 bohr (``fedft.PRESETS``); the test runs it as it is
  (~13 s) and the ``FINE`` sizes graded from the nuclei (~24 s).
"""

import numpy as np
import pytest
from ase import Atoms
from conftest import BOHR, ERF_AL
from dftpy_reference import dftpy_reference

import fedft
from fedft import FORCE, HARTREE

DFTPY_ECUT = 400.0  # eV
#: finer sizes graded from the nuclei (module docstring: +1.22e-4 Ha/atom, 1.25e-5 Ha/bohr)
FINE = {"spacing": 0.35, "grading_rate": 0.15, "grading_start": 0.0}
#: the accurate preset as it is (its sizes kept up to 1.5 bohr from the nuclei)
PRESET = {}
#: the issue's targets
ENERGY_TOL = 2e-4
FORCE_TOL = 2e-4

def _dimer():
    """Al2 at 2.7 Å, slightly off-axis so that the forces have three components (Å)."""
    return Atoms("Al2", positions=[[-1.35, 0.1, -0.05], [1.35, -0.1, 0.05]])


def _in_box(atoms, box_bohr):
    boxed = atoms.copy()
    boxed.cell = np.eye(3) * box_bohr * BOHR
    boxed.pbc = True
    boxed.positions += 0.5 * box_bohr * BOHR - atoms.positions.mean(axis=0)
    return boxed


@pytest.fixture(scope="module")
def dftpy_dimer():
    """DFTpy in 28 and 32 bohr boxes (the larger is the reference)."""
    return [dftpy_reference(_in_box(_dimer(), box), {"Al": ("erf", 3, 1.0)}, 1.0,
                            ecut_ev=DFTPY_ECUT, tol=1e-9, forces=True) for box in (28.0, 32.0)]


def test_dftpy_box_is_converged(dftpy_dimer):
    small, big = dftpy_dimer
    d_e = abs(big["energy_per_atom"] - small["energy_per_atom"])
    d_f = np.abs(big["forces"] - small["forces"]).max()
    print(f"DFTpy box 28 -> 32 bohr: dE/atom {d_e:.1e} Ha, max dF {d_f:.1e} Ha/bohr")
    assert d_e < 2e-5 and d_f < 2e-5


@pytest.mark.parametrize("settings, force_tol", [(FINE, 2e-5), (PRESET, FORCE_TOL)],
                         ids=["fine", "accurate_preset"])
def test_isolated_dimer_matches_dftpy_in_a_box(dftpy_dimer, settings, force_tol):
    ref = dftpy_dimer[-1]
    atoms = _dimer()
    atoms.pbc = False  # no cell: fedft builds the open domain (the preset's vacuum, 20 bohr)
    r = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="accurate", **settings)
    d_e = r.energy / HARTREE / len(atoms) - ref["energy_per_atom"]
    d_f = np.abs(r.forces / FORCE - ref["forces"]).max()
    print(f"fedft {settings} ({r.mesh.n_dofs} DOFs) - DFTpy: dE/atom {d_e:+.2e} Ha, "
          f"max |dF| {d_f:.2e} Ha/bohr (max |F| {np.abs(ref['forces']).max():.3f})")
    assert 0.0 < d_e < ENERGY_TOL
    # the issue's target; FINE: the compensation Gaussians' exact self-energy
    # (fedft._groundstate) gives 1.1-1.3e-5 Ha/bohr, the mesh's 4.3e-5 (preset: 2.4e-5)
    assert d_f < force_tol


def test_tight_preset_is_at_least_as_fine_as_the_setting_checked_here():
    """The tight preset's promise for isolated clusters (2e-4 Ha/atom of DFTpy) rests on
    being at least as fine everywhere as ``FINE`` (measured at the tight preset itself: Al2
    +8.2e-5 Ha/atom graded from the nuclei, +3.1e-5 with its ``grading_start`` of 1 bohr)."""
    tight, accurate = fedft.PRESETS["tight"], fedft.PRESETS["accurate"]
    assert tight.spacing <= FINE["spacing"] and tight.grading_rate <= FINE["grading_rate"]
    assert tight.grading_start >= FINE["grading_start"]
    assert tight.vacuum >= accurate.vacuum and tight.tol_energy <= accurate.tol_energy
