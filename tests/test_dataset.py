"""Density-labelled datasets: format round trip, reader, check, info, export, generators and
bad input. The labelling run shared by these tests labels three one-atom fcc Al cells with the
fast preset (a few seconds on two processes)."""

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import fedft
from fedft import cli
from fedft._dataset import atomic_h5, run_config, write_file_attrs, write_record
from fedft._units import BOHR

PSEUDO = {"Al": "erf:3:0.529177"}
LAMBDA = 1.0


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _structures():
    prim = bulk("Al", "fcc", a=4.05)
    return fedft.rattled(prim, 2, stdev=0.05, seed=7) + fedft.strained(prim, 1, 0.03, seed=8)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(path, structures, summary) of a dataset labelled on the default local process pool;
    the structures went through an extxyz file (as a CLI run reads them), which rounds the
    positions, so that runs from that file find the same content keys."""
    path = tmp_path_factory.mktemp("labelled") / "al.h5"
    write(path.with_name("in.extxyz"), _structures())
    structures = fedft.read_structures(path.with_name("in.extxyz"))
    summary = fedft.label(structures, path, PSEUDO, LAMBDA, preset="fast", workers=2)
    assert summary.computed == 3 and summary.failed == 0
    return path, structures, summary


@pytest.fixture
def copy_of(labelled, tmp_path):
    dst = tmp_path / "copy.h5"
    shutil.copyfile(labelled[0], dst)
    return dst


def _assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b), "arrays differ"


def _assert_close(a, b):
    """Equal to 1e-12 of the array's largest value: equal up to rounding."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(np.abs(a).max(), 1e-300))


# ------------------------------------------------------------------------------ round trip
def test_round_trip_bit_identical_to_in_memory_result(labelled):
    path, structures, summary = labelled
    result = fedft.compute(structures[1], PSEUDO, LAMBDA, preset="fast")
    with fedft.Dataset(path) as ds:
        rec = ds[summary.keys[1]]
    assert rec.key == summary.keys[1] and rec.index == 1
    assert set(rec.fields) == set(result.fields)
    for name in result.fields:
        _assert_same(result.fields[name], rec.fields[name])
    _assert_same(result.points, rec.points)
    _assert_same(result.weights, rec.weights)
    _assert_same(result.forces, rec.forces)
    _assert_same(result.mesh.nodal_tetrahedra, rec.tetrahedra)
    _assert_same(result.atoms.positions, rec.atoms.positions)
    _assert_same(result.atoms.numbers, rec.atoms.numbers)
    _assert_same(np.asarray(result.atoms.cell), np.asarray(rec.atoms.cell))
    _assert_same(result.atoms.pbc, rec.atoms.pbc)
    _assert_same(result.mesh.cell, rec.mesh_info["cell_bohr"])
    assert rec.energy == result.energy
    assert rec.components == result.components
    assert rec.chemical_potential == result.chemical_potential
    assert rec.settings == result.settings
    assert rec.pseudopotentials == result.pseudopotentials
    assert rec.mesh_info["divisions"] == tuple(result.mesh.divisions)
    assert len(rec.history) == len(result.history)
    for got, want in zip(rec.history, result.history):  # wall times differ between runs
        assert {k: v for k, v in got.items() if k != "time"} == \
               {k: (None if v is None else float(v)) for k, v in want.items() if k != "time"}
    assert rec.info["generator"]["seed"] == 7 and rec.info["generator"]["name"] == "rattled"


def test_write_record_round_trip_exact(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05)
    result = fedft.compute(atoms, PSEUDO, LAMBDA, preset="fast")
    config = run_config(result.pseudopotentials, LAMBDA, result.settings, "gradient")
    key = fedft.structure_key(atoms, config)
    path = tmp_path / "one.h5"
    with atomic_h5(path) as fh:
        write_file_attrs(fh, config)
        write_record(fh.create_group("structures"), key, result, index=4)
    with fedft.Dataset(path) as ds:
        rec = ds.read(0)
        assert ds.kinetic_lambda == LAMBDA and ds.gauge == "gradient"
        assert ds.functional == "TF+1vW+LDA(PZ81)"
    assert rec.history == json.loads(json.dumps(result.history, default=float))
    assert rec.timings == result.timings
    for name in result.fields:
        _assert_same(result.fields[name], rec.fields[name])
    # the mesh's nodes are the reference points, stored once (a hard link)
    with h5py.File(path, "r") as fh:
        g = fh["structures"][key]
        assert g["mesh/nodes"].id == g["points"].id
    assert fedft.check_dataset(path).ok


def test_plain_h5py_layout(labelled):
    path, _, summary = labelled
    with h5py.File(path, "r") as fh:
        assert fh.attrs["format"] == "fedft-dataset"
        assert json.loads(fh.attrs["units"])["energy"] == "eV"
        assert fh.attrs["kinetic_lambda"] == LAMBDA
        assert json.loads(fh.attrs["settings"])["spacing"] == fedft.PRESETS["fast"].spacing
        assert list(fh["structures"]) == summary.keys  # input order
        g = fh["structures"][summary.keys[0]]
        w, e = g["weights"][()], g["fields/energy_density"][()]
        assert w @ e == pytest.approx(g.attrs["energy"], rel=1e-10)
        assert g["fields/rho"].attrs["unit"] == "e/Angstrom^3"
        assert g["atoms/numbers"][()].tolist() == [13]
        assert json.loads(g.attrs["pseudopotentials"])["Al"]["digest"] == \
               fedft.load_pseudo(PSEUDO["Al"]).digest


# ------------------------------------------------------------------------------ reader
def test_reader_api(labelled):
    path, structures, summary = labelled
    with fedft.read_dataset(path) as ds:
        assert len(ds) == 3 and ds.keys() == summary.keys
        assert summary.keys[2] in ds
        energies = ds.energies()
        recs = list(ds)
        assert [r.energy for r in recs] == energies.tolist()
        part = ds.read(2, fields=["rho"], mesh=False)
        assert list(part.fields) == ["rho"] and part.tetrahedra is None
        _assert_same(part.fields["rho"], recs[2].fields["rho"])
        with pytest.raises(KeyError, match="no structure"):
            ds.read("nope")
        with pytest.raises(IndexError, match="out of range"):
            ds.read(3)
        with pytest.raises(KeyError, match="stored"):
            ds.read(0, fields=["rho", "nope"])
        assert ds.failures == {}
    mesh = recs[0].mesh()
    assert np.allclose(mesh.dof_positions * BOHR, recs[0].points, atol=1e-12)
    assert recs[2].info["generator"]["name"] == "strained"
    # strained cell differs from the rattled ones
    assert not np.allclose(recs[2].atoms.cell, recs[0].atoms.cell)


def test_reader_rejects_non_dataset(tmp_path):
    text = tmp_path / "x.h5"
    text.write_text("not hdf5")
    with pytest.raises(fedft.DatasetError, match="not a fedft dataset"):
        fedft.Dataset(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["a"] = 1
    with pytest.raises(fedft.DatasetError, match="not a fedft dataset"):
        fedft.Dataset(other)
    with pytest.raises(fedft.DatasetError, match="does not exist"):
        fedft.Dataset(tmp_path / "missing.h5")


# ------------------------------------------------------------------------------ check / info
def test_check_passes_and_cli(labelled, capsys):
    path = labelled[0]
    report = fedft.check_dataset(path)
    assert report.ok and report.n_structures == 3, report.problems
    assert cli.main(["dataset", "check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli.main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 labelled, 0 failed" in out and "TF+1vW+LDA" in out
    assert cli.main(["dataset", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["structures"] == 3 and info["nodes"] == [4096, 4096]


@pytest.mark.parametrize("damage, message", [
    ("scale", "integrates to"),
    ("nan", "non-finite"),
    ("delete", "incomplete group"),
    ("weight", "non-positive"),
    ("energy", "stored energy"),
    ("duplicate", "duplicate"),
])
def test_check_detects_damage(copy_of, damage, message, capsys):
    with h5py.File(copy_of, "a") as fh:
        structures = fh["structures"]
        key = list(structures)[1]
        g = structures[key]
        if damage == "scale":
            g["fields/energy_density_xc"][...] *= 1.001
        elif damage == "nan":
            g["fields/rho"][5] = np.nan
        elif damage == "delete":
            del g["fields/phi"]
        elif damage == "weight":
            g["weights"][0] = -1.0
        elif damage == "energy":
            g.attrs["energy"] = g.attrs["energy"] + 0.01
        elif damage == "duplicate":
            first = structures[list(structures)[0]]
            fh.copy(first, structures, name="0" * 32)
            structures["0" * 32].attrs["key"] = "0" * 32
    report = fedft.check_dataset(copy_of)
    assert not report.ok
    assert any(message in p for p in report.problems), report.problems
    assert cli.main(["dataset", "check", str(copy_of)]) == 3
    assert "FAILED" in capsys.readouterr().out


def test_check_unreadable_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert not fedft.check_dataset(bad).ok
    assert cli.main(["dataset", "check", str(bad)]) == 3
    assert cli.main(["dataset", "info", str(bad)]) == 2


# ------------------------------------------------------------------------------ export
def test_export_cube_on_node_lattice_equals_nodal_values(labelled, tmp_path):
    from ase.io.cube import read_cube_data

    path = labelled[0]
    assert cli.main(["dataset", "export", str(path), "--index", "1", "--cube",
                     str(tmp_path / "rho.cube"), "--xdmf", str(tmp_path / "f.xdmf")]) == 0
    with fedft.Dataset(path) as ds:
        rec = ds[1]
    data, atoms = read_cube_data(str(tmp_path / "rho.cube"))
    n = np.array(rec.mesh_info["divisions"]) * rec.mesh_info["order"]
    assert data.shape == tuple(n)
    mesh = rec.mesh()
    idx = np.rint(mesh.dof_frac * n).astype(int) % n
    expected = rec.fields["rho"] * BOHR**3  # e/bohr³
    assert np.allclose(data[idx[:, 0], idx[:, 1], idx[:, 2]], expected, rtol=1e-6, atol=0)
    assert np.allclose(atoms.positions, rec.atoms.positions, atol=1e-5)
    assert np.allclose(np.asarray(atoms.cell), np.asarray(rec.atoms.cell), atol=1e-5)
    # XDMF (ParaView) holds every field on the periodic nodes
    from meshes import read_fields

    ff = read_fields(tmp_path / "f.xdmf")
    assert np.allclose(ff.periodic_fields["energy_density"], rec.fields["energy_density"],
                       rtol=1e-12, atol=0)
    assert ff.metadata["key"] == rec.key


def test_export_cube_other_grid_integrates_field(labelled, tmp_path):
    from ase.io.cube import read_cube_data

    with fedft.Dataset(labelled[0]) as ds:
        rec = ds[0]
    fedft.export_cube(rec, tmp_path / "e.cube", field="energy_density_tf", shape=(20, 20, 20))
    data, _ = read_cube_data(str(tmp_path / "e.cube"))
    assert data.shape == (20, 20, 20)
    volume = abs(np.linalg.det(rec.mesh_info["cell_bohr"]))
    tf_hartree = data.mean() * volume  # Ha/bohr³ · bohr³
    assert tf_hartree * fedft.HARTREE == pytest.approx(rec.components["tf"], rel=2e-3)
    with pytest.raises(fedft.OutputError, match="cube"):
        fedft.export_cube(rec, tmp_path / "e.txt")
    assert cli.main(["dataset", "export", str(labelled[0]), "--cube",
                     str(tmp_path / "x.cube"), "--field", "nope"]) == 2
    assert cli.main(["dataset", "export", str(labelled[0])]) == 2
    assert cli.main(["dataset", "export", str(labelled[0]), "--key", "abc", "--cube",
                     str(tmp_path / "x.cube")]) == 2


# ------------------------------------------------------------------------------ rerun
def test_rerun_is_idempotent(labelled, copy_of):
    digest = _sha(copy_of)
    summary = fedft.label(labelled[1], copy_of, workers=1)  # settings from the file
    assert (summary.computed, summary.skipped, summary.failed) == (0, 3, 0)
    assert _sha(copy_of) == digest  # nothing to do: the file is not rewritten
    with fedft.Dataset(copy_of) as ds:
        assert ds.keys() == labelled[2].keys and len(ds.runs) == 1


# ------------------------------------------------------------------------------ bad input
def test_unreadable_structure_file(tmp_path, capsys):
    bad = tmp_path / "bad.extxyz"
    bad.write_text("3\nthis is not\nan xyz file at all\n")
    out = tmp_path / "out.h5"
    with pytest.raises(fedft.StructureFileError, match="cannot read structures"):
        fedft.label(bad, out, PSEUDO, LAMBDA, preset="fast")
    with pytest.raises(fedft.StructureFileError, match="does not exist"):
        fedft.read_structures(tmp_path / "missing.xyz")
    assert cli.main(["label", str(bad), "-o", str(out), "--pseudo", "Al=erf:3:0.529177",
                     "--kinetic-lambda", "1"]) == 2
    assert "cannot read structures" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output(tmp_path, capsys):
    structures = _structures()[:1]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target, message in [(blocker / "out.h5", "not a directory"),
                            (tmp_path / "nodir" / "out.h5", "does not exist"),
                            (tmp_path, "is a directory")]:
        with pytest.raises(fedft.OutputError, match=message):
            fedft.label(structures, target, PSEUDO, LAMBDA, preset="fast")
    src = tmp_path / "in.extxyz"
    write(src, structures)
    assert cli.main(["label", str(src), "-o", str(blocker / "out.h5"), "--pseudo",
                     "Al=erf:3:0.529177", "--kinetic-lambda", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_existing_output_with_other_settings_is_refused_untouched(labelled, copy_of, capsys):
    digest = _sha(copy_of)
    new = [bulk("Al", "fcc", a=4.0)]
    with pytest.raises(fedft.DatasetMismatchError, match="kinetic_lambda"):
        fedft.label(new, copy_of, PSEUDO, 0.2, preset="fast")
    with pytest.raises(fedft.DatasetMismatchError, match="settings.spacing"):
        fedft.label(new, copy_of, PSEUDO, LAMBDA, preset="accurate")
    with pytest.raises(fedft.DatasetMismatchError, match="pseudopotential Al"):
        fedft.label(new, copy_of, {"Al": "erf:3:0.6"}, LAMBDA, preset="fast")
    with pytest.raises(fedft.DatasetMismatchError, match="gauge"):
        fedft.label(new, copy_of, gauge="laplacian")
    src = copy_of.parent / "new.extxyz"
    write(src, new)
    assert cli.main(["label", str(src), "-o", str(copy_of), "--preset", "tight"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert _sha(copy_of) == digest
    assert not (copy_of.parent / "copy.h5.shards").exists()


def test_older_format_output_is_refused_untouched(copy_of):
    """A file of dataset format 1 holds energy densities in the point-ion-spread convention:
    extending it would mix conventions, so labelling refuses and leaves it as it was."""
    import h5py

    with h5py.File(copy_of, "r+") as fh:
        fh.attrs["format_version"] = 1
    digest = _sha(copy_of)
    with fedft.read_dataset(copy_of) as ds:
        assert ds.energy_density_form == "point-ion-spread"
    with pytest.raises(fedft.DatasetMismatchError, match="older fedft"):
        fedft.label([bulk("Al", "fcc", a=4.0)], copy_of, preset="fast")
    assert _sha(copy_of) == digest


def test_existing_non_dataset_output_is_refused_untouched(tmp_path):
    out = tmp_path / "notes.h5"
    out.write_text("my precious notes")
    with pytest.raises(fedft.DatasetError, match="left untouched"):
        fedft.label(_structures()[:1], out, PSEUDO, LAMBDA, preset="fast")
    assert out.read_text() == "my precious notes"


def test_concurrent_run_is_refused(copy_of):
    import fcntl
    import os

    fd = os.open(str(copy_of) + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(fedft.DatasetLockedError, match="another run"):
            fedft.label(_structures(), copy_of)
    finally:
        os.close(fd)


def test_missing_pseudopotential_and_lambda(tmp_path):
    s = [bulk("Cu", "fcc", a=3.6)]
    with pytest.raises(fedft.MissingPseudopotentialError, match="Cu"):
        fedft.label(s, tmp_path / "o.h5", PSEUDO, LAMBDA, preset="fast")
    with pytest.raises(fedft.SettingsError, match="kinetic_lambda"):
        fedft.label(s, tmp_path / "o.h5", {"Cu": "erf:11:0.5"}, preset="fast")
    with pytest.raises(fedft.SettingsError, match="unknown setting"):
        fedft.label(s, tmp_path / "o.h5", {"Cu": "erf:11:0.5"}, 1.0, nonsense=1)
    assert not (tmp_path / "o.h5").exists()


# ------------------------------------------------------------------------------ generators
def test_generators_reproducible_from_seed(tmp_path):
    cell = bulk("Al", "fcc", a=4.05, cubic=True)
    for make in (lambda s: fedft.rattled(cell, 3, 0.1, seed=s),
                 lambda s: fedft.strained(cell, 3, 0.04, stdev=0.02, seed=s),
                 lambda s: fedft.vacancies(cell, 3, count=1, seed=s),
                 lambda s: fedft.interstitials(cell, 3, seed=s)):
        a, b, c = make(1), make(1), make(2)
        for x, y in zip(a, b):
            assert np.array_equal(x.positions, y.positions)
            assert np.array_equal(x.cell, y.cell)
        assert any(x.positions.shape != z.positions.shape
                   or not np.allclose(x.positions, z.positions)
                   or not np.allclose(x.cell, z.cell) for x, z in zip(a, c))
        assert all(x.info["generator"]["seed"] == 1 for x in a)
    assert [len(a) for a in fedft.vacancies(cell, 2, count=2, seed=0)] == [2, 2]
    inter = fedft.interstitials(cell, 4, min_distance=1.6, seed=3)
    from ase.geometry import get_distances

    for a in inter:
        _, d = get_distances(a.positions[-1:], a.positions[:-1], cell=a.cell, pbc=True)
        assert len(a) == 5 and d.min() >= 1.6
    rat = fedft.rattled(cell, 5, 0.2, seed=4)
    assert np.std(np.concatenate([a.positions - cell.positions for a in rat])) == \
        pytest.approx(0.2, rel=0.35)
    strained = fedft.strained(cell, 1, 0.05, seed=5)[0]
    eps = np.array(strained.info["generator"]["strain"])
    assert np.allclose(strained.cell, cell.cell @ (np.eye(3) + eps))
    assert np.abs(eps).max() <= 0.05 and np.allclose(eps, eps.T)
    # provenance survives an extxyz round trip
    path = tmp_path / "s.extxyz"
    write(path, rat)
    back = fedft.read_structures(path)
    assert len(back) == 5 and np.allclose(back[2].positions, rat[2].positions)
    with pytest.raises(fedft.StructureError, match="count"):
        fedft.vacancies(bulk("Al", "fcc", a=4.05), 1)
    with pytest.raises(fedft.StructureError, match="periodic"):
        molecule = bulk("Al", "fcc", a=4.05)
        molecule.pbc = False
        fedft.rattled(molecule, 1)


def test_content_key_depends_on_structure_and_settings():
    a = bulk("Al", "fcc", a=4.05)
    digest = fedft.load_pseudo(PSEUDO["Al"]).digest
    base = run_config({"Al": {"spec": PSEUDO["Al"], "digest": digest}}, 1.0,
                      fedft.PRESETS["fast"].as_dict(), "gradient")
    key = fedft.structure_key(a, base)
    assert key == fedft.structure_key(a.copy(), base) and len(key) == 32
    moved = a.copy()
    moved.positions[0, 0] += 1e-12
    assert fedft.structure_key(moved, base) != key
    other = run_config(base["pseudopotentials"], 0.2, base["settings"], "gradient")
    assert fedft.structure_key(a, other) != key
    tighter = run_config(base["pseudopotentials"], 1.0, fedft.PRESETS["accurate"].as_dict(),
                         "gradient")
    assert fedft.structure_key(a, tighter) != key
    # the spec text does not matter, the pseudopotential's content does
    respelled = run_config({"Al": {"spec": "erf:3.0:0.529177", "digest": digest}}, 1.0,
                           base["settings"], "gradient")
    assert fedft.structure_key(a, respelled) == key


# ------------------------------------------------------------------------------ Dask
def test_dask_local_cluster_matches_local_processes(labelled, tmp_path, capsys):
    """`fedft label --scheduler ADDRESS` on a Dask LocalCluster (worker threads) gives the
    same structures, fields and energies as the default local process pool, to rounding."""
    distributed = pytest.importorskip("distributed")
    path, structures, summary = labelled
    src = path.with_name("in.extxyz")
    out = tmp_path / "dask.h5"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        code = cli.main(["label", str(src), "-o", str(out), "--scheduler",
                         cluster.scheduler_address, "--preset", "fast", "--pseudo",
                         "Al=erf:3:0.529177", "--kinetic-lambda", "1"])
    assert code == 0, capsys.readouterr().err
    assert "3 computed" in capsys.readouterr().out
    with fedft.Dataset(path) as local, fedft.Dataset(out) as dask:
        assert dask.keys() == local.keys()
        for key in local.keys():
            a, b = local[key], dask[key]
            # threads of one process, not separate processes: the same numbers up to the
            # last bits (numpy's vectorised loops and reductions may round differently there)
            for name in a.fields:
                _assert_close(a.fields[name], b.fields[name])
            for name in ("points", "weights"):
                _assert_close(getattr(a, name), getattr(b, name))
            # forces are sums of O(1) eV/Å terms: their rounding is absolute (measured 2e-14)
            np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=1e-10)
            _assert_same(a.tetrahedra, b.tetrahedra)
            assert a.energy == pytest.approx(b.energy, rel=1e-13)
            assert a.components.keys() == b.components.keys()
            for name, value in a.components.items():
                assert value == pytest.approx(b.components[name], rel=1e-12, abs=1e-12)
    assert fedft.check_dataset(out).ok
