"""fedft building blocks: XC, Ewald, pseudopotentials, energy-density bookkeeping, errors, CLI."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from conftest import BOHR, ERF_AL

import fedft
from fedft import HARTREE
from fedft._ewald import ewald
from fedft._ions import IonFields
from fedft._pseudo import ErfPseudo, RadialTable, SpeciesTable, gaussian_charge, short_range
from fedft.cli import main


# ----------------------------------------------------------------------------- XC
def test_lda_matches_dftpy_builtin_lda():
    from dftpy.field import DirectField
    from dftpy.functional.xc.semilocal_xc import LDA
    from dftpy.grid import DirectGrid

    rho = np.logspace(-6, 1, 400)  # spans both PZ81 branches (rs < 1 and rs >= 1)
    eps, v = fedft.lda_xc(rho)
    grid = DirectGrid(lattice=np.diag([400.0, 1.0, 1.0]), nr=[400, 1, 1])  # volume 1 per point
    for part in (slice(0, 200), slice(200, 400)):  # each branch's energy on its own
        dens = np.zeros(400)
        dens[part] = rho[part]
        ref = LDA(DirectField(grid, data=dens.reshape(400, 1, 1)), calcType={"E", "V"})
        assert np.isclose((rho * eps)[part].sum(), ref.energy, rtol=1e-12)
        assert np.allclose(v[part], np.asarray(ref.potential).ravel()[part], rtol=1e-12)


def test_lda_potential_is_derivative_of_energy_density():
    rho = np.logspace(-4, 0.5, 50)
    h = 1e-6 * rho
    e = lambda r: r * fedft.lda_xc(r)[0]  # noqa: E731
    fd = (e(rho + h) - e(rho - h)) / (2 * h)
    assert np.allclose(fedft.lda_xc(rho)[1], fd, rtol=1e-7)


def test_lda_vacuum_is_zero():
    eps, v = fedft.lda_xc(np.array([0.0, 1e-40]))
    assert np.all(eps == 0) and np.all(v == 0)


def test_lda_blocks_branches_and_vacuum_match_pointwise_values(rng):
    """Longer than a block, both correlation branches and vacuum mixed in one block, a block
    in one branch only, any shape: every point as when evaluated on its own."""
    from fedft._xc import _BLOCK

    rho = 10 ** rng.uniform(-6, 1, 2 * _BLOCK + 17)
    rho[rng.random(rho.size) < 0.1] = 0.0
    rho[:_BLOCK] = rng.uniform(0.5, 2.0, _BLOCK)  # rs < 1 only
    eps, v = fedft.lda_xc(rho.reshape(-1, 1))
    assert eps.shape == v.shape == (rho.size, 1)
    pick = rng.choice(rho.size, 300, replace=False)
    one = np.array([fedft.lda_xc(np.array([r])) for r in rho[pick]])[:, :, 0]
    np.testing.assert_allclose(eps[pick, 0], one[:, 0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(v[pick, 0], one[:, 1], rtol=1e-14, atol=0)
    assert np.all(eps[rho == 0] == 0) and np.all(v[rho == 0] == 0)


# ----------------------------------------------------------------------------- Ewald
def test_ewald_matches_reference_fcc_al():
    # BACKGROUND §3: Ewald energy of fcc Al (Z = 3) at a = 8 bohr is -2.5789849 Ha/atom
    a = bulk("Al", "fcc", a=8.0 * BOHR, cubic=True)
    e = ewald(a.positions / BOHR, np.full(4, 3.0), np.asarray(a.cell) / BOHR)
    assert abs(e.energy / 4 + 2.5789849) < 1e-7
    assert np.isclose(e.per_atom.sum(), e.energy)


def test_ewald_independent_of_splitting_and_forces_are_derivatives(rng):
    cell = np.array([[7.0, 0, 0], [1.5, 6.5, 0], [0.3, 1.1, 8.0]])
    pos = rng.uniform(0, 7, (5, 3))
    Z = rng.uniform(1, 3, 5)
    ref = ewald(pos, Z, cell)
    for eta in (0.4, 0.9):
        assert abs(ewald(pos, Z, cell, eta=eta).energy - ref.energy) < 1e-10
    h = 1e-5
    for k in range(3):
        p, m = pos.copy(), pos.copy()
        p[2, k] += h
        m[2, k] -= h
        fd = -(ewald(p, Z, cell).energy - ewald(m, Z, cell).energy) / (2 * h)
        assert abs(fd - ref.forces[2, k]) < 1e-7
    assert np.abs(ref.forces.sum(0)).max() < 1e-10


# ----------------------------------------------------------------------------- pseudos
def test_erf_spec_uses_angstrom():
    p = fedft.load_pseudo("erf:3:0.529177210903")
    assert isinstance(p, ErfPseudo) and p.z == 3 and abs(p.rc - 1.0) < 1e-9


def test_psp8_reader_reads_gnh_local_channel(gnh_psp8):
    p = fedft.read_psp8(gnh_psp8)
    assert p.symbol == "Al" and p.z == 3.0 and p.r.size == 11000
    v, dv = p.potential(np.array([0.0, 12.0]))
    assert abs(v[0] - 0.58494554913600) < 1e-12  # first table value
    assert abs(v[1] + 3.0 / 12.0) < 1e-14 and abs(dv[1] - 3.0 / 144.0) < 1e-14  # -Z/r tail


def test_short_range_and_gaussian_tables_match_analytic_forms():
    from scipy.special import erf

    r = np.linspace(0.01, 9.0, 5000)
    t = short_range(ErfPseudo(3.0, 1.0), 2.0)
    v, dv = t(r, derivative=True)
    exact = 3.0 * (erf(r / 2.0) - erf(r)) / r
    assert np.abs(v - exact).max() < 2e-7
    g = gaussian_charge(3.0, 1.5)
    assert np.allclose(g(r), 3.0 * (np.pi * 1.5**2) ** -1.5 * np.exp(-(r / 1.5) ** 2),
                       atol=1e-10)
    # tables vanish beyond their cutoffs, and a zero remainder is recognised
    assert t(np.array([t.cutoff + 1.0]))[0] == 0.0
    assert short_range(ErfPseudo(3.0, 1.0), 1.0).is_zero
    assert isinstance(t, RadialTable)


# The ion-field code before its speed-up (np.take gathers, 20 000-point chunks, a one-species
# self-density path), kept to check that the speed-up changes no result.
def _plain_table_call(self, r, derivative=False):
    cols = self.data if derivative else self.data[:, :2]
    x = np.minimum(np.asarray(r, dtype=float) * (1.0 / self.step), cols.shape[0] - 1.0)
    i = np.minimum(x.astype(np.intp), cols.shape[0] - 2)
    t = (x - i)[:, None]
    lo = cols[i]
    return lo + t * (cols[i + 1] - lo)


def _plain_neighbours(self):
    """Per 100 000-point chunk: offset, points, point/atom indices, species and distances of
    the pairs within the cutoff."""
    from scipy.spatial import cKDTree

    tree = cKDTree(self.image_pos)
    for start in range(0, self.points.shape[0], 100_000):
        pts = self.points[start:start + 100_000]
        sdm = cKDTree(pts).sparse_distance_matrix(tree, self.cutoff, output_type="ndarray")
        qi, img, r = sdm["i"], sdm["j"], sdm["v"]
        atom = self.image_atom[img]
        yield start, pts, qi, img, atom, self.species[atom], r


def _plain_pairs(self, vectors=False):
    for start, pts, qi, img, atom, sp, r in _plain_neighbours(self):
        vals = np.zeros((r.size, 4 if vectors else 2))
        for k, table in enumerate(self.tables):
            vals[sp == k] = table(r[sp == k], derivative=vectors)
        d = (pts[qi] - self.image_pos[img]) / np.where(r > 0, r, 1.0)[:, None] if vectors \
            else None
        yield qi + start, atom, vals, d


def _plain_self_density(self, charges, widths, per_atom=None):
    from scipy.special import erf

    out = np.zeros(self.points.shape[0])
    scale = None if per_atom is None else per_atom / self.gauss_norm
    for start, pts, qi, img, atom, sp, r in _plain_neighbours(self):
        g = np.zeros(r.size)
        for k, table in enumerate(self.tables):
            g[sp == k] = table(r[sp == k])[:, 0]
        s = widths[sp]
        x = r / s
        small = x < 1e-4
        phi = charges[sp] / s * np.where(
            small, 2.0 / np.sqrt(np.pi) * (1.0 - x * x / 3.0),
            erf(np.where(small, 1.0, x)) / np.where(small, 1.0, x))
        dens = 0.5 * phi if scale is None else 0.5 * phi - scale[atom]
        out[start:start + pts.shape[0]] += np.bincount(qi, weights=g * dens,
                                                       minlength=pts.shape[0])
    return out


def test_species_table_interpolation_is_bitwise_the_plain_one(rng):
    table = SpeciesTable.build(gaussian_charge(3.0, 2.0), short_range(ErfPseudo(3.0, 1.0), 2.0))
    r = np.concatenate([rng.uniform(0.0, table.cutoff + 1.0, 20000),
                        np.arange(100) * table.step, [0.0, table.cutoff, 1e3]])
    for derivative in (False, True):
        assert np.array_equal(table(r, derivative), _plain_table_call(table, r, derivative))


def test_ion_field_speedups_change_no_result(monkeypatch, fast_result):
    """The sped-up real-space ion fields (neighbour sums, used on graded meshes and open
    boxes) give the ground state of the plain code: energies to 1e-12 relative, forces and
    fields to rounding."""
    atoms = fast_result.atoms
    fast = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast", reciprocal_ions=False)
    monkeypatch.setattr(SpeciesTable, "__call__", _plain_table_call)
    monkeypatch.setattr(IonFields, "_pairs", _plain_pairs)
    monkeypatch.setattr(IonFields, "self_density", _plain_self_density)
    plain = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast", reciprocal_ions=False)
    assert abs(fast.energy - plain.energy) <= 1e-12 * abs(plain.energy)
    for k, v in plain.components.items():
        assert abs(fast.components[k] - v) <= 1e-12 * abs(plain.energy), k
    assert np.abs(fast.forces - plain.forces).max() < 1e-10  # eV/Å, |F| ~ 0.1
    for name, field in plain.fields.items():
        assert np.allclose(fast.fields[name], field, rtol=1e-10,
                           atol=1e-12 * np.abs(field).max()), name


@pytest.mark.parametrize("content,match", [
    ("", "header"),
    ("Al\n 13 3 0\n 8 2 0 0 100 0\n 0 0 0\n 0\n 0\n 0\n 1 0.0 1.0\n", "truncated"),
    ("Al\n 13 3 0\n 6 2 0 0 10 0\n 0 0 0\n 0\n 0\n", "pspcod"),
])
def test_malformed_psp8_raises(tmp_path, content, match):
    path = tmp_path / "bad.psp8"
    path.write_text(content)
    with pytest.raises(fedft.PseudopotentialError, match=match):
        fedft.load_pseudo(path)


def test_missing_or_unknown_pseudopotential_files(tmp_path):
    with pytest.raises(fedft.PseudopotentialError, match="does not exist"):
        fedft.load_pseudo(tmp_path / "nope.psp8")
    with pytest.raises(fedft.PseudopotentialError, match="format"):
        fedft.load_pseudo(tmp_path / "x.txt")
    with pytest.raises(fedft.PseudopotentialError, match="erf:Z:RC"):
        fedft.load_pseudo("erf:3")
    with pytest.raises(fedft.PseudopotentialError, match="positive"):
        fedft.load_pseudo("erf:3:-1")


# ----------------------------------------------------------------------------- results
@pytest.fixture(scope="module")
def fast_result():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.05, seed=3)
    return fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast")


def test_energy_density_integrates_to_each_component(fast_result):
    r = fast_result
    W = r.weights
    worst = 0.0
    for term in fedft.COMPONENTS + ("electrostatic",):
        rel = abs((W @ r.energy_density(term)) / r.components[term] - 1)
        worst = max(worst, rel)
        assert rel < 1e-10, term
    print(f"energy density vs components: worst relative difference {worst:.1e}")
    assert abs(W @ r.energy_density() / r.energy - 1) < 1e-10
    # the other gauge moves energy around but integrates to the same total
    lap = r.energy_density(gauge="laplacian")
    assert abs(W @ lap / r.energy - 1) < 1e-10
    assert np.abs(lap - r.energy_density()).max() > 1e-3  # the gauges really differ


def test_screened_electrostatic_density_is_local(fast_result):
    """The electrostatic energy density is the screened potential form: its uniform remainder
    (point-ion vs Gaussian-ion and G = 0 conventions, which cancel analytically for a neutral
    cell) is a tiny part of the electrostatic energy, unlike the point-ion Ewald spread whose
    per-atom energies are long-ranged; the total is kinetic + xc + this field."""
    r = fast_result
    c_total = r.electrostatic_uniform * r.atoms.get_volume()  # eV
    print(f"uniform part of the electrostatic density: {c_total / len(r.atoms):.2e} eV/atom "
          f"of {r.components['electrostatic'] / len(r.atoms):.3f} eV/atom")
    assert abs(c_total) < 1e-2 * abs(r.components["electrostatic"])
    es = r.energy_density("electrostatic")
    parts = sum(r.energy_density(t) for t in ("hartree", "electron_ion", "ewald"))
    assert np.abs(es - parts).max() > 1.0  # a different field with the same integral
    total = sum(r.energy_density(t) for t in ("tf", "vw", "xc", "electrostatic"))
    assert np.allclose(r.energy_density(), total, rtol=0, atol=1e-10)


def test_laplacian_gauge_shift_is_minus_lambda_over_8_laplacian_of_density(al_primitive):
    """Independent check of the weak Laplacian: central finite differences (h = 0.2 Å) of the
    interpolated density at random points."""
    from meshes import PointLocator, periodic_mesh

    r = fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, preset="accurate")
    mesh = periodic_mesh(r.mesh.cell * BOHR, r.mesh.divisions, order=r.mesh.order)
    loc = PointLocator(mesh)
    h = 0.2
    offs = h * np.vstack([np.zeros(3), np.eye(3), -np.eye(3)])
    pts = np.random.default_rng(0).uniform(0, 2.5, (8, 3))
    rho = loc.interpolate(r.fields["rho"], (pts[:, None, :] + offs[None]).reshape(-1, 3))
    rho = rho.reshape(8, 7)
    lap_fd = (rho[:, 1:].sum(1) - 6 * rho[:, 0]) / h**2  # e/Å⁵
    # -(λ/8)∇²ρ: Ha/bohr³ per bohr⁻⁵ -> eV/Å³ per Å⁻⁵ is HARTREE·BOHR²
    expected = -(r.kinetic_lambda / 8) * lap_fd * HARTREE * BOHR**2
    shift = loc.interpolate(r.fields["vw_laplacian_shift"], pts)
    assert np.abs(shift - expected).max() < 0.1 * np.abs(expected).max()


def test_density_fields_are_physical(fast_result):
    r = fast_result
    assert np.all(r.fields["rho"] >= 0)
    assert abs(r.weights @ r.fields["rho"] / r.n_electrons - 1) < 1e-3
    assert r.points.shape == (r.weights.size, 3) and np.all(r.weights > 0)
    assert np.isclose(r.weights.sum(), r.atoms.get_volume())
    assert np.all(np.isfinite(r.fields["phi"]))


def test_result_files(tmp_path, fast_result):
    from meshes import read_fields

    summary = json.loads(fast_result.write_json(tmp_path / "r.json").read_text())
    assert summary["converged"] is True
    assert np.allclose(summary["forces"], fast_result.forces)
    back = read_fields(fast_result.write_fields(tmp_path / "r.xdmf"))
    assert np.array_equal(back.periodic_fields["rho"], fast_result.fields["rho"])
    assert back.metadata["gauge"] == "gradient"


# ----------------------------------------------------------------------------- bad input
def test_atoms_outside_cell_are_wrapped(al_primitive):
    inside = fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, preset="fast")
    moved = al_primitive.copy()
    moved.positions += np.asarray(al_primitive.cell).sum(0) * 2  # two lattice vectors away
    outside = fedft.compute(moved, {"Al": ERF_AL}, 1.0, preset="fast")
    assert abs(outside.energy - inside.energy) < 1e-8
    assert np.allclose(outside.atoms.get_scaled_positions(wrap=False), 0.0, atol=1e-12)


def test_overlapping_atoms_rejected():
    atoms = Atoms("Al2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(fedft.StructureError, match="overlapping"):
        fedft.compute(atoms, {"Al": ERF_AL}, 1.0)


def test_missing_pseudopotential_rejected(al_primitive):
    with pytest.raises(fedft.MissingPseudopotentialError, match="--pseudo Al="):
        fedft.compute(al_primitive, {"Cu": ERF_AL}, 1.0)


@pytest.mark.parametrize("cell", [[[4, 0, 0], [8, 0, 0], [0, 0, 4]], np.zeros((3, 3))])
def test_degenerate_cell_rejected(cell):
    atoms = Atoms("Al", positions=[[0, 0, 0]], cell=cell, pbc=True)
    with pytest.raises(fedft.StructureError, match="degenerate"):
        fedft.compute(atoms, {"Al": ERF_AL}, 1.0)


def test_mesh_too_coarse_for_pseudopotential(al_primitive):
    with pytest.raises(fedft.MeshTooCoarseError, match="too coarse"):
        fedft.compute(al_primitive, {"Al": "erf:3:0.1"}, 1.0, preset="fast",
                      compensation_width=0.2)


def test_line_search_takes_the_preconditioned_step(al_conventional):
    """With the exact FFT preconditioner the first trial step of every line search is
    accepted for a perfect crystal: one functional evaluation per iteration."""
    r = fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0, preset="fast")
    evaluations = [h["evaluations"] for h in r.history]
    assert evaluations == list(range(1, len(evaluations) + 1))
    assert len(evaluations) <= 10


def test_line_search_without_a_decrease_names_the_causes():
    """A search direction along which the energy only rises (as when inexact Hartree solves
    hide the last energy changes) ends in a ConvergenceError that names the tolerances."""
    from fedft._functional import Evaluation
    from fedft._solver import _line_search

    class Uphill:  # E = 1 + u₁: rises along s = e₁ from u = e₀, whatever the caller's slope
        def evaluate(self, u, guess=None, rtol=None):
            return Evaluation(1.0 + float(u[1]), np.array([0.0, 1.0]), np.zeros(2), 0)

    u, s = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    with pytest.raises(fedft.ConvergenceError, match="poisson_rtol.*tol_residual"):
        _line_search(Uphill(), u, s, Uphill().evaluate(u), slope0=-1.0, theta=0.1)


def test_line_search_from_a_loosely_solved_start_searches_again(al_conventional, caplog):
    """A line search whose start point's Hartree potential was solved more loosely than its
    trial points' (the adaptive tolerance of the previous iteration) can see no decrease: the
    start's energy is low by its solve's error. The minimiser then solves the start as tightly
    and searches again (graded cell at the accurate preset with h_max 0.48 bohr: a
    ConvergenceError in the sixth line search before), reaching the ground state of tight
    Hartree solves throughout."""
    import logging

    kw = dict(preset="accurate", grading="all", h_max=0.48)
    with caplog.at_level(logging.DEBUG, logger="fedft._solver"):
        r = fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0, **kw)
    assert "searching again" in caplog.text
    tight = fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0, poisson_rtol=1e-8, **kw)
    assert r.energy == pytest.approx(tight.energy, abs=1e-7)  # eV
    assert np.abs(r.forces - tight.forces).max() < 1e-5  # eV/Å


def test_non_convergence_raises_with_history(al_conventional):
    with pytest.raises(fedft.ConvergenceError, match="did not converge") as info:
        fedft.compute(al_conventional, {"Al": ERF_AL}, 1.0, preset="fast", max_iter=2)
    assert len(info.value.history) == 3


@pytest.mark.parametrize("lam", [0, -1, float("nan"), "x"])
def test_bad_lambda_rejected(al_primitive, lam):
    with pytest.raises(fedft.SettingsError, match="kinetic_lambda"):
        fedft.compute(al_primitive, {"Al": ERF_AL}, lam)


def test_unknown_preset_and_setting_rejected(al_primitive):
    with pytest.raises(fedft.SettingsError, match="preset"):
        fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, preset="ultra")
    with pytest.raises(fedft.SettingsError, match="unknown setting"):
        fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, spacingg=0.3)


# ----------------------------------------------------------------------------- calculator
def test_ase_calculator_matches_compute_and_reuses_mesh(al_conventional):
    atoms = al_conventional.copy()
    atoms.rattle(0.05, seed=1)
    calc = fedft.FedftCalculator(pseudopotentials={"Al": ERF_AL}, kinetic_lambda=1.0,
                                 preset="fast")
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    direct = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, preset="fast")
    assert abs(e - direct.energy) < 1e-6
    assert np.abs(f - direct.forces).max() < 1e-4
    assert atoms.get_potential_energy(force_consistent=True) == e
    mesh = calc.result.mesh
    atoms.positions[0] += 0.02
    atoms.get_potential_energy()
    assert calc.result.mesh is mesh  # same cell: operators reused
    assert len(calc.result.history) < len(direct.history)  # warm start from the last density
    # energies and forces do not pay for the nodal fields, the warm start does not need them
    assert not calc.result.nodal.computed and "fields" not in calc.result.timings


def test_fields_are_computed_once_on_first_access(al_primitive):
    import pickle
    import threading

    r = fedft.compute(al_primitive, {"Al": ERF_AL}, 1.0, preset="fast")
    assert not r.nodal.computed and "fields" not in r.timings
    # nor did the solve compute what only the fields need from the reciprocal ion sums
    gs = r.nodal._gs
    assert not {"gauss", "gauss_norm", "v_short", "v_long"} & set(vars(gs.ions))
    assert not {"v_long", "ewald_m"} & set(vars(gs))
    # nor anything per element quadrature point: the merged points are the sublattice sites
    assert not {"point_lattices", "xq", "B"} & set(vars(gs.disc))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(r.fields)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.nodal.computed and r.timings["fields"] > 0
    assert len(seen) == 4 and all(f is seen[0] for f in seen)  # one computation for all
    assert r.nodal._gs is None  # the ground state is released
    assert abs(r.weights @ r.fields["energy_density"] - r.energy) < 1e-6 * abs(r.energy)
    np.testing.assert_allclose(r.fields["rho"], r.nodal.sqrt_density**2 / BOHR**3)
    copy = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(copy.fields["rho"], r.fields["rho"])
    assert copy.electrostatic_uniform == r.electrostatic_uniform


def test_calculator_requires_lambda_and_pseudos():
    with pytest.raises(fedft.SettingsError):
        fedft.FedftCalculator(pseudopotentials={"Al": ERF_AL})
    with pytest.raises(fedft.SettingsError):
        fedft.FedftCalculator(kinetic_lambda=1.0)


# ----------------------------------------------------------------------------- CLI
def test_cli_run_writes_json_and_fields(tmp_path, capsys):
    from ase.io import write

    structure = tmp_path / "al.extxyz"
    write(structure, bulk("Al", "fcc", a=4.05))
    out = tmp_path / "out.json"
    code = main(["run", str(structure), "--pseudo", f"Al={ERF_AL}", "--kinetic-lambda", "1",
                 "--preset", "fast", "--json", str(out), "--fields", str(tmp_path / "f.vtu")])
    assert code == 0
    text = capsys.readouterr().out
    assert "energy" in text and "forces (eV/Å)" in text
    data = json.loads(out.read_text())
    assert data["converged"] is True
    assert set(fedft.COMPONENTS) <= set(data["components"])
    assert np.asarray(data["forces"]).shape == (1, 3)
    assert abs(sum(data["components"][k] for k in fedft.COMPONENTS) - data["energy"]) < 1e-8
    assert (tmp_path / "f.vtu").is_file() and (tmp_path / "f.mesh.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["missing.xyz", "--pseudo", "Al=erf:3:0.5"], "does not exist"),
    (["STRUCT", "--pseudo", "Al=nofile.psp8"], "does not exist"),
    (["STRUCT", "--pseudo", "Cu=erf:3:0.5"], "no pseudopotential for Al"),
    (["STRUCT", "--pseudo", "Al=erf:3:0.5", "--json", "nodir/x.json"], "does not exist"),
])
def test_cli_errors_exit_nonzero_with_message(tmp_path, capsys, args, message):
    from ase.io import write

    structure = tmp_path / "al.extxyz"
    write(structure, bulk("Al", "fcc", a=4.05))
    args = [str(structure) if a == "STRUCT" else a for a in args]
    args = [str(tmp_path / a) if a.startswith("nodir") else a for a in args]
    assert main(["run", *args, "--kinetic-lambda", "1", "--preset", "fast"]) == 2
    assert message in capsys.readouterr().err


def test_cli_unreadable_structure(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("not a structure\n")
    assert main(["run", str(bad), "--pseudo", "Al=erf:3:0.5", "--kinetic-lambda", "1"]) == 2
    assert "cannot read structure" in capsys.readouterr().err


def test_cli_help_lists_contract(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--pseudo", "--kinetic-lambda", "--preset", "--json", "--fields"):
        assert flag in out


def test_cli_not_converged_writes_strict_json_and_exits_3(tmp_path, capsys):
    from ase.io import write

    structure = tmp_path / "al.extxyz"
    write(structure, bulk("Al", "fcc", a=4.05, cubic=True))
    out = tmp_path / "out.json"
    code = main(["run", str(structure), "--pseudo", f"Al={ERF_AL}", "--kinetic-lambda", "1",
                 "--preset", "fast", "--json", str(out), "--set", "max_iter=2"])
    assert code == 3
    assert "not converged" in capsys.readouterr().err
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["converged"] is False and len(data["history"]) == 3


def test_point_ion_energy_in_ase_units(fast_result):
    """The public ASE-unit Ewald wrapper reproduces the result's ewald component, its per-atom
    energies sum to it, its forces are −dE/dR, and bad input is refused."""
    r = fast_result
    energy, per_atom, forces = fedft.point_ion_energy(r.atoms, {"Al": 3.0})
    assert energy == pytest.approx(r.components["ewald"], rel=1e-12)
    assert per_atom.sum() == pytest.approx(energy, rel=1e-12)
    h = 1e-4
    moved = [r.atoms.copy(), r.atoms.copy()]
    moved[0].positions[1, 0] += h
    moved[1].positions[1, 0] -= h
    fd = -(fedft.point_ion_energy(moved[0], [3.0] * 4)[0]
           - fedft.point_ion_energy(moved[1], [3.0] * 4)[0]) / (2 * h)
    assert forces[1, 0] == pytest.approx(fd, rel=1e-6, abs=1e-6)
    with pytest.raises(fedft.StructureError, match="no ion charge"):
        fedft.point_ion_energy(r.atoms, {"Cu": 11.0})
    with pytest.raises(fedft.StructureError, match="one value per atom"):
        fedft.point_ion_energy(r.atoms, [3.0])


# ------------------------------------------------------------------ solvers in several threads
def _blas_threads():
    from threadpoolctl import threadpool_info
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_blas_limit_holds_until_the_last_concurrent_solver_leaves():
    """Two solvers overlapping in time (threads of one Dask worker): the process-wide BLAS
    limit must not be lifted when the first one leaves (a plain nested threadpool_limits
    restores the old limit under the second)."""
    from threadpoolctl import threadpool_limits

    from fedft._threads import one_blas_thread

    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.skip("single-threaded BLAS build: there is no thread limit to lift")
        first, second = one_blas_thread(), one_blas_thread()
        first.__enter__()
        second.__enter__()
        assert _blas_threads() == {1}
        first.__exit__(None, None, None)
        assert _blas_threads() == {1}, "limit lifted while a solver still runs"
        second.__exit__(None, None, None)
        assert _blas_threads() == {2}, "original limit not restored after the last solver"


def test_concurrent_solves_in_threads_match_serial(al_primitive):
    """Four solves in four threads of one process (as in a Dask worker) give the serial
    results: fields and energies to rounding (threads may round the last bits differently:
    measured 3e-14 eV in the total energy even for one worker thread)."""
    from concurrent.futures import ThreadPoolExecutor

    strained = al_primitive.copy()
    strained.set_cell(al_primitive.cell * 1.02, scale_atoms=True)
    structures = [al_primitive, strained, al_primitive, strained]
    serial = [fedft.compute(a, {"Al": ERF_AL}, 1.0, preset="fast") for a in structures[:2]]
    assert serial[0].energy != pytest.approx(serial[1].energy, abs=1e-3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(
            lambda a: fedft.compute(a, {"Al": ERF_AL}, 1.0, preset="fast"), structures))
    for i, r in enumerate(threaded):
        ref = serial[i % 2]
        assert r.energy == pytest.approx(ref.energy, rel=1e-13)
        np.testing.assert_allclose(r.forces, ref.forces, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r.fields["rho"], ref.fields["rho"], rtol=1e-12, atol=0)


def test_periodic_meshes_take_fft_friendly_divisions():
    """A crystal's uniform mesh rounds its sub-cube counts up to FFT-friendly lengths (13
    and 31 would be prime), never coarser than the spacing."""
    from fedft._groundstate import build_mesh, prepare_system

    atoms = Atoms("Al", positions=[[0.0, 0.0, 0.0]], cell=np.diag([6.2, 15.3, 3.9]) * BOHR,
                  pbc=True)
    settings = fedft.resolve_settings("fast", spacing=0.5)
    mesh = build_mesh(prepare_system(atoms, {"Al": ERF_AL}, settings), settings)
    assert mesh.divisions == (14, 32, 8)
    assert mesh.element_size <= 0.5
