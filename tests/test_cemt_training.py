"""cemt training: config and data errors before the first step, a tiny run lowers the loss and
resumes identically, evaluate matches metrics recomputed by hand."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import NC_SR_GPSP
from _cemt_helpers import labelled_al

import cemt
import fedft
from cemt.cli import main

FEATURES = {"orders": [-1, 0, 1, 2], "sigmas": [0.5, 1.0, 1.5],
            "pseudodensity": str(NC_SR_GPSP)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return labelled_al(tmp_path_factory.mktemp("cemt") / "d.h5", 3, seed=4)[0]


def _config(tmp_path, train_path, **sections):
    cfg = {"seed": 3, "output": str(tmp_path / "out"),
           "data": {"train": str(train_path), "validation_fraction": 0.34},
           "model": {"kind": "grid", "widths": [8]}, "features": dict(FEATURES),
           "training": {"labels": ["fields", "energies"], "epochs": 4, "batch_size": 2,
                        "points_per_structure": 64, "lr": 3e-3, "progress": False}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def _copy(dataset, tmp_path, edit):
    path = tmp_path / "edited.h5"
    shutil.copy(dataset, path)
    with h5py.File(path, "r+") as fh:
        edit(fh)
    return path


def test_unknown_config_key(tmp_path, dataset):
    cfg = _config(tmp_path, dataset, training={"learning_rate": 1e-3})
    with pytest.raises(cemt.ConfigError, match="training.learning_rate"):
        cemt.resolve_config(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 1
    assert not (tmp_path / "out").exists()


def test_fields_need_grid_model(tmp_path, dataset):
    with pytest.raises(cemt.ConfigError, match="only the grid model"):
        cemt.resolve_config(_config(tmp_path, dataset, model={"kind": "atom"}))


@pytest.mark.parametrize("edit, match", [
    (lambda fh: fh.attrs.__setitem__("units", json.dumps({**json.loads(fh.attrs["units"]),
                                                          "energy": "Hartree"})), "unit of energy"),
    (lambda fh: fh.attrs.__setitem__("gauge", "laplacian"), "gauge"),
    # a dataset of fedft's first format holds energy densities in another convention
    (lambda fh: fh.attrs.__setitem__("format_version", 1), "energy_density_form"),
])
def test_dataset_mismatch_before_training(tmp_path, dataset, edit, match):
    other = _copy(dataset, tmp_path, edit)
    cfg_val = cemt.resolve_config(_config(tmp_path, dataset, data={"validation": str(other)}))
    with pytest.raises(cemt.DataMismatchError, match=match):
        cemt.Trainer(cfg_val).prepare()
    if match.startswith("unit"):  # a foreign unit is rejected even for a fresh model
        with pytest.raises(cemt.DataMismatchError, match=match):
            cemt.Trainer(cemt.resolve_config(_config(tmp_path, other))).prepare()


def test_feature_settings_differ_from_checkpoint(tmp_path, dataset):
    cemt.train(cemt.resolve_config(_config(tmp_path, dataset, training={"epochs": 1})))
    cfg = cemt.resolve_config(_config(tmp_path, dataset, features={"sigmas": [0.5, 1.0]}))
    with pytest.raises(cemt.DataMismatchError, match="features.sigmas"):
        cemt.Trainer(cfg).prepare()


def test_nan_in_data(tmp_path, dataset):
    def poison(fh):
        key = list(fh["structures"])[1]
        rho = fh["structures"][key]["fields"]["rho"]
        values = rho[()]
        values[7] = np.nan
        rho[...] = values
    bad = _copy(dataset, tmp_path, poison)
    with pytest.raises(cemt.DataError, match="NaN"):
        cemt.Trainer(cemt.resolve_config(_config(tmp_path, bad))).prepare()


def test_unknown_element_in_evaluation_data(tmp_path, dataset):
    out = cemt.train(cemt.resolve_config(_config(
        tmp_path, dataset, model={"kind": "atom"},
        training={"labels": ["energies"], "epochs": 1})))
    def to_mg(fh):
        for g in fh["structures"].values():
            g["atoms"]["numbers"][...] = 12
    other = _copy(dataset, tmp_path, to_mg)
    with pytest.raises(cemt.UnknownElementError, match="Mg"):
        cemt.evaluate(cemt.load_model(out["model"]), other)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]["state_dict"]


def test_tiny_run_reduces_loss_and_resumes_identically(tmp_path, dataset):
    full = cemt.train(cemt.resolve_config(_config(tmp_path / "a", dataset)))
    losses = [row["train_loss"] for row in full["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    # 2 epochs, then resume to 4
    cfg_b = _config(tmp_path / "b", dataset, training={"epochs": 2})
    cemt.train(cemt.resolve_config(cfg_b))
    cfg_b["training"]["epochs"] = 4
    resumed = cemt.train(cemt.resolve_config(cfg_b))
    assert [r["train_loss"] for r in resumed["history"]] == losses
    wa, wb = _weights(tmp_path / "a/out/checkpoint.pt"), _weights(tmp_path / "b/out/checkpoint.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    rows = (tmp_path / "b/out/metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("epoch,")
    assert len((tmp_path / "b/out/metrics.jsonl").read_text().splitlines()) == 4
    saved = yaml.safe_load((tmp_path / "b/out/config.yaml").read_text())
    assert saved["training"]["labels"] == ["fields", "energies"]
    model = cemt.load_model(tmp_path / "b/out/model.pt")
    assert model.kind == "grid" and model.data_spec["gauge"] == "gradient"


def test_evaluate_matches_hand_computed_metrics(tmp_path, dataset, capsys):
    out = cemt.train(cemt.resolve_config(_config(
        tmp_path, dataset, model={"kind": "atom"},
        training={"labels": ["energies", "forces"], "epochs": 2})))
    model = cemt.load_model(out["model"])
    metrics = cemt.evaluate(model, dataset)
    e_err, f_err = [], []
    with fedft.read_dataset(dataset) as ds:
        for rec in ds:
            energy, forces = model.energy_forces(rec.atoms)
            e_err.append(abs(energy - rec.energy) / len(rec.atoms))
            f_err.append(np.abs(forces - rec.forces).ravel())
    assert metrics["n_structures"] == 3
    assert metrics["energy_mae_mev_atom"] == pytest.approx(1000 * np.mean(e_err), rel=1e-9)
    assert metrics["force_mae_mev_A"] == pytest.approx(1000 * np.mean(np.concatenate(f_err)),
                                                       rel=1e-9)
    assert metrics["density_nmae_pct"] is None
    assert main(["evaluate", out["model"], str(dataset), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["energy_mae_mev_atom"] == pytest.approx(metrics["energy_mae_mev_atom"])
    assert main(["evaluate", str(tmp_path / "missing.pt"), str(dataset)]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a held-out selection: dataset positions 1 and 2 only
    sub = cemt.evaluate(model, dataset, select="1:3")
    assert sub["n_structures"] == 2
    assert [r["key"] for r in sub["per_structure"]] == \
        [r["key"] for r in metrics["per_structure"]][1:3]
    assert main(["evaluate", out["model"], str(dataset), "--select", "5:9", "--no-progress"]) == 1
    assert "in the selection" in capsys.readouterr().err
    with pytest.raises(cemt.DataError, match="START:STOP"):
        cemt.evaluate(model, dataset, select="1-3")


def test_fields_warmup_trains_fields_first(tmp_path, dataset):
    """During the warm-up only the field terms are optimised and no best model is chosen;
    afterwards every label is in the loss."""
    out = cemt.train(cemt.resolve_config(_config(
        tmp_path, dataset, training={"labels": ["fields", "energies"], "epochs": 4,
                                     "fields_warmup": 2})))
    hist = out["history"]
    assert [("train_energies" in r) for r in hist] == [False, False, True, True]
    assert all("train_energy_density" in r for r in hist)
    assert [r["best"] for r in hist[:2]] == [False, False] and hist[2]["best"]
    assert (tmp_path / "out/model.pt").is_file()
    # a grid model trained on fields learns them on top of a fitted reference, saved with it
    model = cemt.load_model(tmp_path / "out/model.pt")
    ref = model.settings["reference"]
    assert set(ref) == {"Al"} and min(ref["Al"]["B"]) < 0  # the deep peaks on the nuclei
    with fedft.read_dataset(dataset) as ds:
        rec = ds.read(0)
    eps, _ = model.predict_fields(rec.atoms, rec.points)
    terms = model.reference_terms(rec.atoms, rec.points, rec.weights)
    assert np.abs(eps - terms["field"].numpy()).max() < np.abs(terms["field"].numpy()).max()


def test_torchrun_workers_exit_without_interpreter_teardown(monkeypatch, capsys):
    """The console script ends a torchrun worker with os._exit after flushing (torch's gloo
    teardown at interpreter exit can abort a finished run); a plain process exits normally."""
    import cemt.cli as cli

    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(f"os._exit({status})")

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(cli.sys, "argv", ["cemt", "train", "--template"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match=r"os._exit\(0\)"):
        cli.run()
    assert exits == [0] and "training:" in capsys.readouterr().out
    monkeypatch.setattr(cli.sys, "argv", ["cemt", "train"])  # no config: status 2
    with pytest.raises(SystemExit, match=r"os._exit\(2\)"):
        cli.run()
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SystemExit) as plain:
        cli.run()
    assert plain.value.code == 2 and exits == [0, 2]


def test_two_process_data_parallel_matches_one_process(tmp_path, dataset):
    import os
    import subprocess
    import sys
    from pathlib import Path

    losses = {}
    for n in (1, 2):
        cfg = _config(tmp_path / f"p{n}", dataset, model={"kind": "atom"},
                      training={"labels": ["energies", "forces"], "epochs": 2})
        cfg["data"]["validation_fraction"] = 0.0
        path = tmp_path / f"c{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(cemt.__file__).resolve().parent.parent)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n}", "-m", "cemt.cli", "train", str(path)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-6000:]
        rows = (tmp_path / f"p{n}/out/metrics.jsonl").read_text().splitlines()
        losses[n] = [json.loads(r)["train_loss"] for r in rows]
    assert losses[2] == pytest.approx(losses[1], rel=1e-12)
