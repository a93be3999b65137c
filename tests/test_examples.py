"""Every example runs (in a reduced mode) and produces what it promises."""

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _cemt_helpers import labelled_al

import cemt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_al_single_point_example(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["al_single_point.py", "--preset", "fast",
                                      "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / "al_single_point.py"), run_name="__main__")
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "al.json").read_text())
    assert f"E = {summary['energy']:.6f} eV" in out
    assert (tmp_path / "al.xdmf").is_file() and (tmp_path / "al.h5").is_file()
    assert np.asarray(summary["forces"]).shape == (4, 3)


# ---------------------------------------------------------------------------------- cemt
#: Tiny models: few GMP features, one hidden layer of 8.
TINY = {"model.widths": "[8]", "features.orders": "[-1, 0, 1, 2]",
        "features.sigmas": "[0.5, 1.0, 1.5]", "features.pseudodensity": str(cemt.FEDFT_GPSP),
        "training.points_per_structure": "64", "training.batch_size": "2"}


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """3 strained one-atom fcc Al cells, erf pseudopotential, fast preset."""
    return labelled_al(tmp_path_factory.mktemp("examples") / "tiny.h5", 3, seed=2)[0]


def test_train_and_compare_example(tmp_path, tiny_dataset, capsys):
    example = _example("train_and_compare")
    out = tmp_path / "runs"
    argv = ["--data", str(tiny_dataset), "--out", str(out), "--structures", "2",
            "--epochs", "1", "--slices", "1", "--no-progress"]
    for key, value in TINY.items():
        argv += ["--set", f"{key}={value}"]
    results = example.main(argv)
    printed = capsys.readouterr().out
    assert "test errors on 2:" in printed
    for name in ("grid", "atom"):
        assert (out / name / "model.pt").is_file()
        assert len((out / name / "metrics.csv").read_text().splitlines()) == 2  # 1 epoch
        assert (out / f"report-{name}" / "report.html").is_file()
        # the model learnt what the configuration says, and the report is cemt.evaluate's
        saved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert saved["model"]["widths"] == [8] and saved["data"]["max_structures"] == 2
        m = cemt.evaluate(cemt.load_model(out / name / "model.pt"), tiny_dataset,
                          select="2:")
        assert m["n_structures"] == results[name]["n_structures"] == 1
        assert results[name]["energy_mae_mev_atom"] == pytest.approx(
            m["energy_mae_mev_atom"], rel=1e-9)
    assert saved["training"]["labels"] == ["energies", "forces"]  # atom_ef.yaml
    grid = yaml.safe_load((out / "grid" / "config.yaml").read_text())
    assert grid["training"]["labels"] == ["fields", "energies", "forces"]
    assert results["grid"]["density_nmae_pct"] is not None
    assert results["atom"]["density_nmae_pct"] is None
    assert (out / "report-grid" / "fields_0.xdmf").is_file()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_dataset):
    """A grid model trained for one epoch on the tiny dataset."""
    out = tmp_path_factory.mktemp("model")
    cfg = {"output": str(out), "data": {"train": str(tiny_dataset),
                                        "validation_fraction": 0.0},
           "model": {"kind": "grid"}, "training": {"epochs": 1, "progress": False}}
    for key, value in TINY.items():
        section, name = key.split(".")
        cfg.setdefault(section, {})[name] = yaml.safe_load(value)
    return cemt.train(cemt.resolve_config(cfg))["model"]


@pytest.mark.parametrize("md", ["nve", "langevin"])
def test_relax_and_md_example(tiny_model, capsys, md):
    example = _example("relax_and_md")
    steps = 6
    result = example.main(["--model", tiny_model, "--md", md, "--steps", str(steps),
                           "--relax-steps", "5", "--every", "3", "--spacing", "0.5"])
    printed = capsys.readouterr().out
    assert "relax: E" in printed and "total-energy" in printed
    assert result["relax_steps"] <= 5
    if result["relaxed"]:
        assert result["fmax_relaxed"] <= 0.05
    md_rows = result["md"]
    assert md_rows.shape == (steps + 1, 5)  # step, Epot, Ekin, Etot, T
    assert list(md_rows[:, 0]) == list(range(steps + 1))
    assert np.isfinite(md_rows).all() and (md_rows[:, 2] >= 0).all()
    assert np.isfinite(result["drift_mev_atom"])
    assert [line.split()[1] for line in printed.splitlines()
            if line.startswith("step")] == ["0", "3", "6"]
