"""cemt compare: the report's numbers agree with the saved fields, the dataset and
cemt.evaluate; slice pictures have their panels; atom models get no field output; bad input
fails cleanly and a failure never leaves a partial report."""

import csv
import json
import shutil
import struct

import h5py
import numpy as np
import pytest
from conftest import NC_SR_GPSP
from _cemt_helpers import labelled_al

import cemt
import fedft
import meshes
from cemt import _compare
from cemt.cli import main

FEATURES = {"orders": [-1, 0, 1], "sigmas": [0.5, 1.0], "pseudodensity": str(NC_SR_GPSP)}
FIELD_COLUMNS = ["density_nmae_pct", "energy_density_nmae_pct", "density_max_abs_error_e_A3",
                 "energy_density_max_abs_error_eV_A3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return labelled_al(tmp_path_factory.mktemp("compare") / "d.h5", 3, seed=7, stdev=0.05)[0]


def _train(base, data, kind, labels):
    cfg = {"seed": 2, "output": str(base / kind),
           "data": {"train": str(data), "validation_fraction": 0.0},
           "model": {"kind": kind, "widths": [8]}, "features": dict(FEATURES),
           "training": {"labels": labels, "epochs": 1, "batch_size": 2,
                        "points_per_structure": 64, "progress": False}}
    return cemt.train(cemt.resolve_config(cfg))["model"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, dataset):
    base = tmp_path_factory.mktemp("models")
    return {"grid": _train(base, dataset, "grid", ["fields", "energies"]),
            "atom": _train(base, dataset, "atom", ["energies", "forces"])}


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory, dataset, models):
    out = tmp_path_factory.mktemp("reports") / "grid"
    assert main(["compare", models["grid"], str(dataset), "-o", str(out),
                 "--no-progress"]) == 0
    return out


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_grid_report_files_and_metrics(grid_report, dataset, models):
    summary = json.loads((grid_report / "summary.json").read_text())
    expected = {"metrics.csv", "metrics.md", "summary.json", "report.html",
                "parity_energy.png", "parity_forces.png", "hist_errors.png"}
    for i in range(3):
        expected |= {f"slice_{i}_rho.png", f"slice_{i}_energy_density.png",
                     f"fields_{i}.xdmf", f"fields_{i}.h5"}
    assert expected <= set(summary["files"])
    assert set(summary["files"]) == {p.name for p in grid_report.iterdir()}
    for name in summary["files"]:
        assert (grid_report / name).stat().st_size > 0, name
    # nothing left beside the report (temporary or moved-aside directories)
    assert [p.name for p in grid_report.parent.iterdir()] == ["grid"]
    assert summary["code_version"] == fedft.__version__
    assert summary["dataset"]["positions"] == [0, 1, 2]

    rows = _csv_rows(grid_report / "metrics.csv")
    assert [r["key"] for r in rows][-1] == "overall" and len(rows) == 4
    model = cemt.load_model(models["grid"])
    with fedft.read_dataset(dataset) as ds:
        for i, row in enumerate(rows[:3]):
            rec = ds.read(i)
            assert row["key"] == rec.key
            f = meshes.read_fields(grid_report / f"fields_{i}.xdmf").periodic_fields
            w = rec.weights
            for name, label, unit in (("rho", "density", "e_A3"),
                                      ("energy_density", "energy_density", "eV_A3")):
                ref, pred, err = f[f"{name}_dft"], f[f"{name}_model"], f[f"{name}_error"]
                np.testing.assert_allclose(ref, rec.fields[name], rtol=1e-12, atol=0)
                np.testing.assert_allclose(err, pred - ref, rtol=1e-12, atol=1e-15)
                nmae = 100 * np.dot(w, np.abs(pred - ref)) / np.dot(w, np.abs(ref))
                assert nmae > 0
                assert float(row[f"{label}_nmae_pct"]) == pytest.approx(nmae, rel=1e-10)
                assert float(row[f"{label}_max_abs_error_{unit}"]) == pytest.approx(
                    np.abs(err).max(), rel=1e-10)
            # the grid model's energy is the integral of its energy density: the network part
            # with the model's quadrature (trapezoid on the node grid; float32 weights for a
            # float32 model), the fitted reference analytically
            _, wq = model.points_and_weights(None, rec.atoms, rec.points, w)
            ref = model.reference_terms(rec.atoms, rec.points, w)
            e_model = np.dot(wq.double().numpy(),
                             f["energy_density_model"] - ref["field"].numpy()) + ref["energy"]
            assert float(row["energy_error_mev_atom"]) == pytest.approx(
                1000 * (e_model - rec.energy) / len(rec.atoms), rel=1e-9, abs=1e-9)
            _, forces = model.energy_forces(rec.atoms, rec.points, w)
            df = forces - rec.forces
            assert float(row["force_mae_mev_A"]) == pytest.approx(
                1000 * np.abs(df).mean(), rel=1e-9)
            assert float(row["force_max_mev_A"]) == pytest.approx(
                1000 * np.linalg.norm(df, axis=1).max(), rel=1e-9)
    overall = rows[-1]
    ev = cemt.evaluate(model, dataset)
    assert float(overall["energy_abs_error_mev_atom"]) == pytest.approx(
        ev["energy_mae_mev_atom"], rel=1e-9)
    assert float(overall["force_mae_mev_A"]) == pytest.approx(ev["force_mae_mev_A"], rel=1e-9)
    for key in ("density_nmae_pct", "energy_density_nmae_pct"):
        assert float(overall[key]) == pytest.approx(ev[key], rel=1e-9)
        assert float(overall[key]) == pytest.approx(
            np.mean([float(r[key]) for r in rows[:3]]), rel=1e-12)
        assert summary["overall"][key] == pytest.approx(ev[key], rel=1e-9)
    assert float(overall["energy_error_mev_atom"]) == pytest.approx(
        np.mean([float(r["energy_error_mev_atom"]) for r in rows[:3]]), rel=1e-12)
    table = [ln for ln in (grid_report / "metrics.md").read_text().splitlines()
             if ln.startswith("| ")]
    assert len(table) == 6  # header, rule, 3 structures, overall
    assert not any("n/a" in ln for ln in table)


def test_grid_report_pictures(grid_report):
    summary = json.loads((grid_report / "summary.json").read_text())
    images = summary["images"]
    page = (grid_report / "report.html").read_text()
    for i in range(3):
        for name, symbol in (("rho", "ρ"), ("energy_density", "ε")):
            png = f"slice_{i}_{name}.png"
            entry = images[png]
            assert entry["titles"] == [f"DFT {symbol}", f"model {symbol}",
                                       f"difference {symbol} (model − DFT)"]
            lo, hi = entry["limits"]["shared"]
            dlo, dhi = entry["limits"]["difference"]
            assert lo < hi and dlo == -dhi and dhi > 0
            width, height = _png_size(grid_report / png)
            assert width >= 1200 and height >= 300
            assert f'<img src="{png}"' in page
        assert f'<a href="fields_{i}.xdmf">' in page
        assert summary["per_structure"][i]["files"][0] == f"fields_{i}.xdmf"
    assert images["parity_energy.png"]["titles"] == ["per-atom energy"]
    assert images["parity_forces.png"]["titles"] == ["force components"]
    assert images["hist_errors.png"]["titles"] == [
        "force component errors", "node-wise ρ errors (volume-weighted)",
        "node-wise ε errors (volume-weighted)"]
    for png in ("parity_energy.png", "parity_forces.png", "hist_errors.png"):
        assert min(_png_size(grid_report / png)) >= 300
        assert f'<img src="{png}"' in page


def test_atom_report_has_no_fields(tmp_path, dataset, models):
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps([
        {"series": "atom", "n_train": n, "energy_mae_mev_atom": e, "force_mae_mev_A": f,
         "density_nmae_pct": None, "energy_density_nmae_pct": None}
        for n, e, f in [(1, 20.0, 90.0), (2, 9.0, 60.0)]]))
    out = tmp_path / "atom"
    summary = cemt.compare(models["atom"], dataset, out, select="1:3", curve=curve)
    names = {p.name for p in out.iterdir()}
    assert not any(n.startswith(("slice_", "fields_")) for n in names)
    assert {"curve.json", "curve.png", "hist_errors.png", "parity_forces.png"} <= names
    _png_size(out / "curve.png")
    assert summary["dataset"]["positions"] == [1, 2] and summary["model"]["kind"] == "atom"
    rows = _csv_rows(out / "metrics.csv")
    assert len(rows) == 3
    assert all(r[k] == "" for r in rows for k in FIELD_COLUMNS + ["n_nodes"])
    header, _rule, *lines = [ln for ln in (out / "metrics.md").read_text().splitlines()
                            if ln.startswith("| ")]
    cols = [c.strip() for c in header.strip("|").split("|")]
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert [cells[cols.index(c)] for c in ("ρ NMAE (%)", "ε NMAE (%)")] == ["n/a", "n/a"]
    ev = cemt.evaluate(cemt.load_model(models["atom"]), dataset, select="1:3")
    assert summary["overall"]["energy_mae_mev_atom"] == pytest.approx(
        ev["energy_mae_mev_atom"], rel=1e-12)
    assert float(rows[-1]["force_mae_mev_A"]) == pytest.approx(ev["force_mae_mev_A"], rel=1e-12)
    assert [r["key"] for r in rows[:2]] == [r["key"] for r in ev["per_structure"]]
    assert summary["overall"]["density_nmae_pct"] is None
    assert summary["images"]["hist_errors.png"]["titles"] == ["force component errors"]
    assert "no slices or field files" in (out / "report.html").read_text()


def _gauge_laplacian(dataset, tmp_path):
    path = tmp_path / "laplacian.h5"
    shutil.copy(dataset, path)
    with h5py.File(path, "r+") as fh:
        fh.attrs["gauge"] = "laplacian"
    return path


def test_bad_input_fails_cleanly(tmp_path, dataset, models, capsys):
    (tmp_path / "afile").write_text("not a directory")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    atom, data = models["atom"], str(dataset)
    cases = [
        ([str(tmp_path / "missing.pt"), data], "does not exist"),
        ([atom, str(tmp_path / "missing.h5")], "does not exist"),
        ([atom, str(_gauge_laplacian(dataset, tmp_path))], "gauge"),
        ([atom, data, "--select", "5:9"], "in the selection"),
        ([atom, data, "--select", "1-3"], "START:STOP"),
        ([atom, data, "--slices", "-1"], ">= 0"),
        ([atom, data, "--curve", str(tmp_path / "nocurve.json")], "does not exist"),
    ]
    for args, message in cases:
        out = tmp_path / "report"
        assert main(["compare", *args, "-o", str(out), "--no-progress"]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("cemt compare: error: ") and message in err, (args, err)
        assert not out.exists(), args
    # unwritable output: a path under a file, a missing parent, a directory that is no report
    for out, message in ((tmp_path / "afile" / "report", "is a file"),
                         (tmp_path / "nowhere" / "report", "does not exist"),
                         (busy, "not a cemt compare report")):
        assert main(["compare", atom, data, "-o", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert message in err, err
    assert not (tmp_path / "nowhere").exists()
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "busy", "laplacian.h5"]


def test_failure_keeps_the_old_report(tmp_path, dataset, models, monkeypatch):
    out = tmp_path / "report"
    first = cemt.compare(models["atom"], dataset, out, select="0:1")
    before = (out / "summary.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")
    with monkeypatch.context() as m:
        m.setattr(_compare, "_plot_histograms", broken)
        with pytest.raises(RuntimeError, match="plotting failed"):
            cemt.compare(models["atom"], dataset, out, select="0:2")
    assert (out / "summary.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    # a successful run replaces the old report, and nothing is left beside it
    second = cemt.compare(models["atom"], dataset, out, select="0:2")
    assert first["dataset"]["positions"] == [0] and second["dataset"]["positions"] == [0, 1]
    assert json.loads((out / "summary.json").read_text())["dataset"]["positions"] == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
