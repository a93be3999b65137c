"""Reciprocal-space ion sums (fedft._reciprocal, fedft._ions_reciprocal) against real-space
sums, analytic transforms, the neighbour-list ion fields and finite differences."""

import numpy as np
import pytest
from ase.build import bulk
from conftest import ERF_AL

import fedft
from fedft._discretisation import Discretisation
from fedft._groundstate import compensation_widths, prepare_system
from fedft._ions import image_atoms, ion_fields
from fedft._ions_reciprocal import ReciprocalIonFields, reciprocal_ion_fields, species_forms
from fedft._pseudo import ErfPseudo, SpeciesTable, gaussian_charge, short_range
from fedft._lattice import point_lattice
from fedft._reciprocal import ReciprocalSums, hankel_form_factor
from meshes import graded_mesh, periodic_mesh

FCC = np.array([[0.0, 3.8, 3.8], [3.8, 0.0, 3.8], [3.8, 3.8, 0.0]]) * 1.3


def _gaussians(s):
    return [lambda q, w=w: np.pi**1.5 * w**3 * np.exp(-(q * w) ** 2 / 4) for w in s]


@pytest.mark.parametrize("divisions", [(5, 6, 7), (5, 7, 6)], ids=["odd-last", "even-last"])
@pytest.mark.parametrize("points", ["quadrature", "dofs"])
def test_sums_match_real_space_sums(points, divisions):
    m = periodic_mesh(FCC, divisions=divisions, order=2)
    x = m.quad_points if points == "quadrature" else m.dof_positions
    lat = point_lattice(x @ np.linalg.inv(FCC), m.divisions)
    assert lat is not None and lat.offsets.shape[0] == (55 if points == "quadrature" else 8)
    rng = np.random.default_rng(0)
    pos = rng.random((3, 3)) @ FCC
    _check_against_real_space(lambda *args: ReciprocalSums(lat, *args), x, pos, rng)


def _check_against_real_space(make_sums, x, pos, rng, atol=1e-11):
    """Values, per-atom sums and their gradients of the sums ``make_sums(cell, frac, species,
    gcut)`` of two species of Gaussians at the points ``x`` (bohr) against real-space image
    sums (three atoms at ``pos`` in the cell FCC)."""
    species, s, c = np.array([0, 1, 0]), np.array([1.0, 1.5]), np.array([1.0, -2.0, 0.5])
    sums = make_sums(FCC, pos @ np.linalg.inv(FCC), species, 2 * np.sqrt(np.log(1e15)) / s.min())
    ip, ia = image_atoms(pos, FCC, 10.0)  # exp(−(10/1.5)²) ~ 5e-20
    diff = x[:, None, :] - ip[None]
    e = np.exp(-(np.linalg.norm(diff, axis=2) / s[species[ia]]) ** 2)  # (points, images)
    v = sums.values(_gaussians(s), c)
    assert np.abs(v - e @ c[ia]).max() < 1e-12
    a = rng.standard_normal(x.shape[0])
    per_atom = np.array([a @ e[:, ia == i].sum(1) for i in range(3)])
    assert np.allclose(sums.per_atom(a, _gaussians(s)), per_atom, rtol=0, atol=atol)
    grad = np.stack([np.einsum("p,pj,pjd->d", a, e[:, ia == i],
                               2 * diff[:, ia == i] / s[species[i]] ** 2) for i in range(3)])
    assert np.allclose(sums.per_atom(a, _gaussians(s), gradient=True), grad, rtol=0,
                       atol=10 * atol)


@pytest.mark.parametrize("points", ["quadrature", "dofs"])
def test_graded_sums_match_real_space_sums(points):
    """fedft._reciprocal_graded on a graded triclinic grid: the sites reproduce the points and
    the values, per-atom sums and their gradients are the real-space sums'."""
    from fedft._discretisation import _shared_points
    from fedft._reciprocal_graded import GradedSums, graded_sites

    rng = np.random.default_rng(3)
    pos = rng.random((3, 3)) @ FCC
    m = graded_mesh(FCC, pos[:1], 0.6, 0.6, 1.4, order=2)
    assert m.axes is not None and np.ptp(np.diff(m.node_axes()[0])) > 0.01  # really graded
    if points == "quadrature":  # the merged points, as the solver uses them
        rep, _ = _shared_points(m.quad_points)
        x = m.quad_points[rep]
    else:
        x = m.dof_positions
    sites = graded_sites(x @ np.linalg.inv(FCC), m.node_axes())
    assert sites is not None
    assert len(sites.coords) == 8 if points == "dofs" else 8 < len(sites.coords) < 80
    _check_against_real_space(lambda *args: GradedSums(sites, *args), x, pos, rng, atol=1e-10)
    # points off any tensor grid are refused
    assert graded_sites(rng.random((500, 3)), m.node_axes()) is None


def test_graded_crystal_forces_are_derivatives_of_the_energy(monkeypatch):
    """A crystal on a graded mesh takes the reciprocal ion sums (V_lr exact at the quadrature
    points, no mesh solve of the Gaussians): its forces are −dE/dR by central differences on
    the same mesh."""
    from fedft._groundstate import solve_ground_state

    calls = []
    forces = ReciprocalIonFields.forces
    monkeypatch.setattr(ReciprocalIonFields, "forces",
                        lambda self, rho: calls.append(1) or forces(self, rho))
    atoms, pseudos = _rattled_al()
    settings = fedft.resolve_settings("fast", grading="all", spacing=0.6, grading_rate=0.5,
                                      h_max=1.2, tol_energy=1e-12, tol_residual=1e-8)
    system = prepare_system(atoms, pseudos, settings)
    disc = Discretisation(graded_mesh(system.cell, system.positions, 0.6, 0.5, 1.2, order=2))
    assert disc.graded_cells  # operators and merged points from scaled sub-cells
    r0 = solve_ground_state(system, 1.0, settings, disc=disc)
    assert calls
    h = 2e-3  # bohr
    e = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[1, 1] += sign * h * 0.52917721067
        e.append(solve_ground_state(prepare_system(a, pseudos, settings), 1.0, settings,
                                    disc=disc, u0=r0.u).energy)
    fd = -(e[0] - e[1]) / (2 * h)
    assert abs(fd - r0.forces[1, 1]) < 2e-6 * max(1.0, abs(fd)), (fd, r0.forces[1, 1])


def test_graded_crystal_keeps_real_space_sums_for_a_hard_tabulated_core(gnh_psp8):
    """The uniform meshes' alias rule holds on graded grids too: GNH Al's tabulated core
    reaches far beyond the grid's wave vectors (there the reciprocal sums measured +4.8e-4
    Ha/atom in 3.0 s against the real-space +2.0e-4 in 1.4 s), erf Al's does not."""
    atoms = bulk("Al", "fcc", a=4.2, cubic=True)
    for pseudo, reciprocal in ((str(gnh_psp8), False), (ERF_AL, True)):
        settings = fedft.resolve_settings("fast", grading="all")
        system = prepare_system(atoms, {"Al": pseudo}, settings)
        disc = Discretisation(graded_mesh(system.cell, system.positions, 0.5, 0.3, 0.7,
                                          order=2))
        assert disc.graded_cells
        widths = compensation_widths(system, settings)
        shorts = [short_range(p, w) for p, w in zip(system.pseudos, widths)]
        ions = reciprocal_ion_fields(disc, system, widths, shorts)
        assert (ions is not None) == reciprocal, pseudo


def test_no_point_lattice_on_graded_meshes():
    g = graded_mesh(FCC, np.zeros((1, 3)), 0.5, 0.5, 1.2, order=2)
    assert point_lattice(g.quad_points @ np.linalg.inv(FCC), g.divisions) is None


def test_hankel_transform_of_a_gaussian():
    f = hankel_form_factor(lambda r: np.exp(-(r / 1.3) ** 2), 12.0, 12.0)
    q = np.linspace(0.0, 12.0, 997)
    exact = np.pi**1.5 * 1.3**3 * np.exp(-(q * 1.3) ** 2 / 4)
    assert np.abs(f(q) - exact).max() < 1e-10 * exact.max()


def test_erf_short_range_form_factor_is_the_transform_of_its_table():
    p = ErfPseudo(3.0, 1.0)
    table = short_range(p, 2.0)
    forms = species_forms(p, 2.0, table)
    r = np.arange(table.values.size) * table.step
    numeric = hankel_form_factor(lambda x: np.interp(x, r, table.values), table.cutoff, 12.0)
    q = np.linspace(0.0, 12.0, 601)
    assert np.abs(forms.v_short(q) - numeric(q)).max() < 1e-7 * np.abs(numeric(q)).max()


def test_fields_match_the_neighbour_sums():
    """Same g, V_sr, normalisation and self-energy density as the real-space ion fields (to
    their tables' interpolation), and V_sr + V_lr = the pseudopotential at the points."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.1, seed=1)
    system = prepare_system(atoms, {"Al": ERF_AL}, fedft.PRESETS["fast"])
    disc = Discretisation(periodic_mesh(system.cell, spacing=0.7))
    p, w = system.pseudos[0], 2.0
    rec = reciprocal_ion_fields(disc, system, np.array([w]), [short_range(p, w)])
    table = SpeciesTable.build(gaussian_charge(p.z, w), short_range(p, w))
    real = ion_fields(disc.xq, disc.wq, system.positions, system.cell, system.species, [table])
    at_q = disc.merged.expand  # the reciprocal sums are at the merged points
    for name in ("gauss", "v_short"):
        ref = getattr(real, name)
        assert np.abs(at_q(getattr(rec, name)) - ref).max() < 1e-7 * np.abs(ref).max(), name
    assert np.allclose(rec.gauss_norm, real.gauss_norm, rtol=1e-7)  # linear tables: 2e-8
    charges, widths = np.array([p.z]), np.array([w])
    corr = np.linspace(-0.1, 0.2, len(atoms))
    ref = real.self_density(charges, widths, per_atom=corr)
    assert np.abs(at_q(rec.self_density(charges, widths, per_atom=corr)) - ref).max() \
        < 1e-7 * np.abs(ref).max()
    # V_sr + V_lr is the pseudopotential: against another split, at width 4 bohr, of
    # −Z erf(r/rc)/r into a real-space part (images within 60 bohr) and wide Gaussians;
    # differences between points cancel the constant of the zero-mean convention
    from scipy.special import erf

    total = at_q(rec.v_local)  # one sum of both form factors, what the solve uses
    np.testing.assert_allclose(total, at_q(rec.v_short + rec.v_long), rtol=0,
                               atol=1e-12 * np.abs(total).max())
    ip, _ = image_atoms(system.positions, system.cell, 60.0)
    pick = np.random.default_rng(2).choice(disc.xq.shape[0], 6, replace=False)
    d = np.linalg.norm(disc.xq[pick, None, :] - ip[None], axis=2)
    short = (-p.z * (erf(d / p.rc) - erf(d / 4.0)) / d).sum(1)
    wide = ReciprocalSums(disc.point_lattices[0], system.cell,  # at the element points
                          system.positions @ np.linalg.inv(system.cell), system.species, 3.0)
    smooth = wide.values([lambda q: np.where(q > 0, -4 * np.pi * p.z * np.exp(
        -(q * 4.0) ** 2 / 4) / np.where(q > 0, q * q, 1.0), 0.0)], g0=[0.0])[pick]
    expected = short + smooth
    assert np.allclose(total[pick] - total[pick[0]], expected - expected[0], rtol=0, atol=1e-9)


def _binary_triclinic():
    """Al + Na (erf, rc 1 and 1.65 bohr) in a sheared two-atom cell."""
    from ase import Atoms

    atoms = Atoms("AlNa", scaled_positions=[[0.0, 0.0, 0.0], [0.45, 0.55, 0.5]],
                  cell=[[4.1, 0.0, 0.0], [0.9, 3.9, 0.0], [0.4, 0.6, 4.3]], pbc=True)
    atoms.rattle(0.05, seed=2)
    return atoms, {"Al": ERF_AL, "Na": "erf:1:0.873"}


def _rattled_al():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.08, seed=5)
    return atoms, {"Al": ERF_AL}


@pytest.mark.parametrize("system", [_rattled_al, _binary_triclinic],
                         ids=["fcc-Al", "triclinic-AlNa"])
def test_forces_are_derivatives_of_the_energy(monkeypatch, system):
    calls = []
    forces = ReciprocalIonFields.forces
    monkeypatch.setattr(ReciprocalIonFields, "forces",
                        lambda self, rho: calls.append(1) or forces(self, rho))
    atoms, pseudos = system()
    kw = dict(preset="fast", tol_energy=1e-12, tol_residual=1e-8)
    r0 = fedft.compute(atoms, pseudos, 1.0, **kw)
    assert calls  # the reciprocal-space path (the default on uniform periodic meshes)
    h = 1e-3  # Å
    i, k = 1, 1
    e = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[i, k] += sign * h
        e.append(fedft.compute(a, pseudos, 1.0, **kw).energy)
    fd = -(e[0] - e[1]) / (2 * h)
    assert abs(fd - r0.forces[i, k]) < 2e-5 * max(1.0, abs(fd)), (fd, r0.forces[i, k])
    # the same structure through the real-space path: the two agree to the mesh error of
    # its long-range potential (fast preset, fcc Al: 5.6e-4 vs 3.5e-4 Ha/atom = 5.7 meV/atom)
    ref = fedft.compute(atoms, pseudos, 1.0, reciprocal_ions=False, **kw)
    assert abs(ref.energy - r0.energy) < 1e-2 * len(atoms)  # eV; measured 5.7, 6.7 meV/atom


def test_energy_and_forces_do_not_depend_on_the_compensation_width():
    """V_sr + V_lr is exact at the quadrature points: the split is invisible to the energy."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=7)
    r = [fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast", compensation_width=w)
         for w in (1.5, 2.5)]
    assert abs(r[0].energy - r[1].energy) < 1e-12 * abs(r[0].energy)  # measured 6e-16
    assert np.abs(r[0].forces - r[1].forces).max() < 1e-10  # eV/Å; measured 1e-14
    mesh = [fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast", compensation_width=w,
                          reciprocal_ions=False).energy for w in (1.5, 2.5)]
    assert abs(mesh[0] - mesh[1]) > 1e-6 * abs(mesh[0])  # the mesh solve's error does


def test_mesh_path_forces_are_energy_derivatives():
    """The real-space path (ions from a mesh solve, with the compensation Gaussians' exact
    self-energy for erf ions): forces equal −dE/dR by central differences."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=7)
    kw = dict(preset="fast", reciprocal_ions=False, tol_energy=1e-11, tol_residual=1e-7)
    r0 = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, **kw)
    h = 1e-3  # Å
    e = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[1, 1] += sign * h
        e.append(fedft.compute(a, {"Al": ERF_AL}, 1.0, initial_guess=r0, **kw).energy)
    fd = -(e[0] - e[1]) / (2 * h)
    assert abs(fd - r0.forces[1, 1]) < 2e-5 * max(1.0, abs(fd)), (fd, r0.forces[1, 1])


def test_reciprocal_ions_setting_must_be_a_bool():
    with pytest.raises(fedft.SettingsError, match="reciprocal_ions must be True or False"):
        fedft.compute(bulk("Al", "fcc", a=4.05), {"Al": ERF_AL}, 1.0, reciprocal_ions="yes")


def test_chunks_of_atoms_change_nothing(monkeypatch):
    m = periodic_mesh(FCC, divisions=(5, 6, 7), order=2)
    lat = point_lattice(m.quad_points @ np.linalg.inv(FCC), m.divisions)
    frac = np.random.default_rng(0).random((7, 3))
    species = np.array([0, 1, 0, 1, 1, 0, 0])
    forms = _gaussians([1.0, 1.4])
    a = np.random.default_rng(1).standard_normal(m.quad_points.shape[0])
    c = np.linspace(0.5, 2.0, 7)

    def run(sums):  # unit and per-atom weights, per-atom sums and gradients
        return (sums.values(forms), sums.values(forms, c),
                sums.per_atom(a, forms, gradient=True))

    whole = run(ReciprocalSums(lat, FCC, frac, species, 8.0))
    sums = ReciprocalSums(lat, FCC, frac, species, 8.0)  # fresh: nothing cached unchunked
    monkeypatch.setattr(sums, "_atom_chunks", lambda: [slice(i, i + 2) for i in range(0, 7, 2)])
    chunked = run(sums)
    for x, y in zip(whole, chunked):
        assert np.allclose(x, y, rtol=0, atol=1e-13)


def test_a_hard_core_on_a_coarse_mesh_takes_the_real_space_sums(monkeypatch):
    """Form factors that need more than MAX_FOLDS aliases per axis get no reciprocal sums,
    decided from the cut alone (the grid of wave vectors is never built)."""
    import fedft._ions_reciprocal as ir
    from fedft._reciprocal import aliases

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    system = prepare_system(atoms, {"Al": ERF_AL}, fedft.PRESETS["fast"])
    disc = Discretisation(periodic_mesh(system.cell, spacing=0.7))
    p, w = system.pseudos[0], 2.0
    built = []
    monkeypatch.setattr(ir, "ReciprocalSums", lambda *a, **k: built.append(a) or
                        ReciprocalSums(*a, **k))
    assert reciprocal_ion_fields(disc, system, np.array([w]), [short_range(p, w)]) is not None
    assert len(built) == 1
    n = disc.sites.divisions
    gcut = species_forms(p, w, short_range(p, w)).gcut
    assert max(aliases(system.cell, n, gcut)) <= ir.MAX_FOLDS
    monkeypatch.setattr(ir, "MAX_FOLDS", max(aliases(system.cell, n, gcut)) - 1)
    assert reciprocal_ion_fields(disc, system, np.array([w]), [short_range(p, w)]) is None
    assert len(built) == 1
