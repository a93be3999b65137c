"""Learning curves: one run per (series, N), evaluated on held-out structures; the table, JSON
and plot are written; featurized structures are reused between runs."""

import csv
import json

import pytest
import yaml
from conftest import NC_SR_GPSP
from _cemt_helpers import labelled_al

import cemt
from cemt import _data
from cemt.cli import main

FEATURES = {"orders": [-1, 0, 1], "sigmas": [0.5, 1.0], "pseudodensity": str(NC_SR_GPSP)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return labelled_al(tmp_path_factory.mktemp("curve") / "d.h5", 4, seed=11, stdev=0.05)[0]


def _series(path):
    common = {"seed": 1, "data": {"train": str(path)}, "features": dict(FEATURES)}
    return {"grid": {**common, "model": {"kind": "grid", "widths": [8]},
                     "training": {"labels": ["fields", "energies", "forces"], "batch_size": 2,
                                  "points_per_structure": 64, "fields_warmup": 1}},
            "atom": {**common, "model": {"kind": "atom", "widths": [8]},
                     "training": {"labels": ["energies", "forces"], "batch_size": 2}}}


def test_first_reaching_needs_every_larger_size_below():
    rows = [{"n_train": n, "energy_mae_mev_atom": e}
            for n, e in [(2, 9.0), (5, 4.0), (10, 6.0), (20, 1.5), (40, 1.9)]]
    assert cemt.first_reaching(rows, 5.0) == 20
    assert cemt.first_reaching(rows, 2.0) == 20
    assert cemt.first_reaching(rows, 1.0) is None
    assert cemt.first_reaching(rows[:2], 5.0) == 5


def test_learning_curve_runs_each_size_and_matches_evaluation(tmp_path, dataset, monkeypatch):
    calls = []
    for cls, orig in ((cemt.GridModel, cemt.GridModel.structure_tensors),
                      (cemt.AtomModel, cemt.CemtModel.structure_tensors)):
        def counting(self, atoms, *args, _orig=orig, **kwargs):
            calls.append(self.kind)
            return _orig(self, atoms, *args, **kwargs)
        monkeypatch.setattr(cls, "structure_tensors", counting)
    rows = cemt.learning_curve(_series(dataset), [1, 3], dataset, tmp_path / "lc",
                               test_select="3:4", steps=2, max_epochs=3, progress=False)
    assert [(r["series"], r["n_train"]) for r in rows] == \
        [("grid", 1), ("grid", 3), ("atom", 1), ("atom", 3)]
    assert [r["epochs"] for r in rows] == [2, 1, 2, 1]  # ceil(2 steps / ceil(N / 2))
    # structures are featurized once per kind, not once per run: 3 training structures
    assert calls.count("grid") == 3 and calls.count("atom") == 3
    for r in rows:
        model = cemt.load_model(tmp_path / "lc" / r["series"] / f"n{r['n_train']}" / "model.pt")
        m = cemt.evaluate(model, dataset, select="3:4")
        assert r["energy_mae_mev_atom"] == pytest.approx(m["energy_mae_mev_atom"], rel=1e-9)
        assert r["force_mae_mev_A"] == pytest.approx(m["force_mae_mev_A"], rel=1e-9)
        assert (r["density_nmae_pct"] is None) == (r["kind"] == "atom")
    table = list(csv.DictReader(open(tmp_path / "lc" / "curve.csv")))
    assert len(table) == 4 and float(table[0]["energy_mae_mev_atom"]) == \
        pytest.approx(rows[0]["energy_mae_mev_atom"])
    assert json.loads((tmp_path / "lc" / "curve.json").read_text()) == rows
    assert (tmp_path / "lc" / "curve.png").stat().st_size > 1000
    assert _data._TENSOR_CACHE is None  # the cache lives only inside the driver


def test_curve_command_and_bad_input(tmp_path, dataset, capsys):
    import os

    series = _series(dataset)
    paths = []
    confdir = tmp_path / "configs"
    confdir.mkdir()
    for name in ("grid", "atom"):
        # paths in a configuration are relative to its file, not to the working directory
        series[name]["data"]["train"] = os.path.relpath(dataset, confdir)
        series[name]["features"]["pseudodensity"] = os.path.relpath(NC_SR_GPSP, confdir)
        p = confdir / f"{name}.yaml"
        p.write_text(yaml.safe_dump(series[name]))
        paths.append(f"{name}={p}")
    out = tmp_path / "cli"
    assert main(["curve", *paths, "--sizes", "1", "2", "--test", str(dataset), "--select",
                 "3:4", "--steps", "1", "--max-epochs", "1", "-o", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "first N at <= 5 meV/atom" in printed and (out / "curve.png").is_file()
    saved = yaml.safe_load((out / "atom" / "n2" / "config.yaml").read_text())
    assert saved["data"]["train"] == str(dataset.resolve())
    assert saved["features"]["pseudodensity"] == str(NC_SR_GPSP.resolve())
    # bad input: a size larger than the data, a malformed series, an unknown key
    assert main(["curve", paths[1], "--sizes", "9", "--test", str(dataset), "-o",
                 str(tmp_path / "x")]) == 1
    assert "exceeds" in capsys.readouterr().err
    assert main(["curve", "atom.yaml", "--test", str(dataset)]) == 1
    assert "NAME=CONFIG.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**series["atom"], "trainer": {}}))
    assert main(["curve", f"b={bad}", "--sizes", "1", "--test", str(dataset), "-o",
                 str(tmp_path / "y")]) == 1
    assert "unknown configuration key" in capsys.readouterr().err
