"""cemt pipeline: a tiny run writes every output, its headline errors are those of
cemt.evaluate on the test structures, a rerun recomputes nothing, the template is a valid
configuration, and bad input exits with status 1 before anything is written."""

import json

import pytest
import yaml
from ase.build import bulk
from ase.io import write

import cemt
from cemt.cli import main

FEATURES = {"orders": [-1, 0, 1, 2], "sigmas": [0.5, 1.0, 1.5]}


def _config(tmp_path):
    """4 one-atom fcc Al cells (1 test), tiny models, 2 epochs (1 of them fields warm-up)."""
    base = tmp_path / "al1.extxyz"
    write(base, bulk("Al", "fcc", a=4.05))
    small = {"model": {"widths": [8]}, "features": dict(FEATURES)}
    return {
        "seed": 1,
        "structures": {"generate": {"base": str(base), "n": 4, "max_strain": 0.03,
                                    "stdev": 0.05}},
        "n_test": 1,
        "labelling": {"workers": 1},
        "grid": {**small, "training": {"epochs": 2, "fields_warmup": 1,
                                       "points_per_structure": 64, "batch_size": 2}},
        "atom": {**small, "training": {"epochs": 2, "batch_size": 2}},
        "compare": {"slices": 1},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = _config(tmp)
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    summary = cemt.pipeline(cfg, output=tmp / "out", progress=False)
    return tmp, cfg, summary


def test_outputs_and_headline_errors(run):
    tmp, _, summary = run
    out = tmp / "out"
    for rel in ("pipeline.yaml", "dataset.h5", "grid/model.pt", "atom/model.pt",
                "grid/metrics.csv", "atom/metrics.csv", "report-grid/report.html",
                "report-atom/report.html", "report-grid/summary.json", "report.html",
                "summary.json"):
        assert (out / rel).is_file(), rel
    assert (out / "report-grid/fields_0.xdmf").is_file()  # compare.slices = 1
    saved = json.loads((out / "summary.json").read_text())
    assert saved["format"] == "cemt-pipeline" and saved["code_version"]
    assert saved["models"] == json.loads(json.dumps(summary["models"]))
    d = summary["dataset"]
    assert (d["n_structures"], d["n_train"], d["n_test"], d["test_select"]) == (4, 3, 1, "3:4")
    # the resolved configuration is saved, with the code version, and runs as it is
    resolved = cemt.load_pipeline_config(out / "pipeline.yaml")
    assert resolved["grid"]["training"]["epochs"] == 2
    assert resolved["grid"]["features"]["pseudodensity"] == str(cemt.FEDFT_GPSP)
    assert "code version" in (out / "pipeline.yaml").read_text().splitlines()[0]
    page = (out / "report.html").read_text()
    assert "report-grid/report.html" in page and "report-atom/report.html" in page
    # headline errors = cemt.evaluate of the saved models on the test structures
    for name in ("grid", "atom"):
        model = cemt.load_model(out / name / "model.pt")
        m = cemt.evaluate(model, out / "dataset.h5", select="3:4")
        test = summary["models"][name]["test"]
        assert m["n_structures"] == test["n_structures"] == 1
        for key in ("energy_mae_mev_atom", "force_mae_mev_A", "density_nmae_pct",
                    "energy_density_nmae_pct"):
            if m[key] is None:
                assert name == "atom" and test[key] is None
            else:
                assert test[key] == pytest.approx(m[key], rel=1e-9), (name, key)
        assert summary["models"][name]["epochs"] == 2
    assert summary["models"]["grid"]["test"]["density_nmae_pct"] is not None


def test_rerun_resumes_without_recomputing(run, capsys):
    tmp, _, summary = run
    out = tmp / "out"
    files = ["dataset.h5", "grid/metrics.csv", "atom/metrics.csv", "grid/model.pt",
             "atom/model.pt", "report-grid/summary.json", "report-atom/summary.json"]
    before = {f: ((out / f).read_bytes(), (out / f).stat().st_mtime_ns) for f in files}
    assert main(["pipeline", str(tmp / "pipeline.yaml"), "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for f in files:
        assert ((out / f).read_bytes(), (out / f).stat().st_mtime_ns) == before[f], f
    again = json.loads((out / "summary.json").read_text())
    assert again["dataset"]["labelling"] == {"computed": 0, "skipped": 4, "recovered": 0}
    for name in ("grid", "atom"):
        m = again["models"][name]
        assert not m["trained_now"] and not m["compared_now"]
        assert m["test"] == json.loads(json.dumps(summary["models"][name]["test"]))
    # the printed headline table holds the same numbers
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()
            if line.startswith(("grid ", "atom "))}
    t = summary["models"]["grid"]["test"]
    assert float(rows["grid"][0]) == pytest.approx(t["energy_mae_mev_atom"], rel=1e-3)
    assert float(rows["grid"][3]) == pytest.approx(t["energy_density_nmae_pct"], rel=1e-3)
    assert rows["atom"][2:] == ["n/a", "n/a"]
    assert f"report: {out / 'report.html'}" in printed
    # other settings into the same directory are refused, naming the key
    cfg = _config(tmp)
    cfg["grid"]["training"]["epochs"] = 3
    with pytest.raises(cemt.PipelineError, match="grid.training.epochs"):
        cemt.pipeline(cfg, output=out, progress=False)


def test_template_round_trips(capsys, tmp_path):
    assert main(["pipeline", "--template"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#")
    parsed = yaml.safe_load(text)
    assert cemt.resolve_pipeline_config(parsed, tmp_path) == \
        cemt.resolve_pipeline_config(None, tmp_path)
    # every key is documented
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    undocumented = [line for line in body if "#" not in line and not line.rstrip().endswith(":")
                    and not line.startswith("    Al:")]
    assert not undocumented
    # the resolved configuration is a fixed point
    resolved = cemt.resolve_pipeline_config(parsed, tmp_path)
    assert cemt.resolve_pipeline_config(resolved, tmp_path) == resolved


@pytest.mark.parametrize("edit, match", [
    (lambda c, t: c["labelling"].update(kinetic_lambda_x=1.0), "labelling.kinetic_lambda_x"),
    (lambda c, t: c["grid"]["training"].update(learning_rate=1e-3),
     "training.learning_rate"),
    (lambda c, t: c.update(n_test=4), "n_test"),
    (lambda c, t: c["grid"].update(output="x"), "grid.output"),
    (lambda c, t: c["structures"].update(file=str(t / "al1.extxyz")), "not both"),
    (lambda c, t: c["labelling"].update(pseudopotentials={"Mg": "erf:2:0.5"}),
     "no entry for Al"),
])
def test_bad_config_exits_1_and_writes_nothing(tmp_path, capsys, edit, match):
    cfg = _config(tmp_path)
    edit(cfg, tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pipeline", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cemt pipeline: error:" in err and match in err
    assert not (tmp_path / "out").exists()


def test_unreadable_structure_file(tmp_path, capsys):
    cfg = _config(tmp_path)
    (tmp_path / "junk.xyz").write_text("this is not a structure\n")
    for name in ("missing.extxyz", "junk.xyz"):
        cfg["structures"] = {"file": name}  # relative to the configuration file
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["pipeline", str(path), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err, err
        assert not (tmp_path / "cemt-pipeline").exists()


def test_unwritable_output(tmp_path, capsys):
    cfg = _config(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "file").write_text("x")
    assert main(["pipeline", str(path), "-o", str(tmp_path / "file" / "out")]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(["pipeline", str(path), "-o", str(tmp_path / "file")]) == 1
    assert "a file of that name exists" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["pipeline", str(path), "-o", str(other)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
