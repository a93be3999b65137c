"""examples/build_dataset.py (the reference GNH training set in one command) in reduced mode:
the same seed gives the same structures, labelled with the GNH pseudopotential, TF + 0.2 vW."""

import runpy
import sys
from pathlib import Path

import numpy as np

import fedft

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_build_dataset_example(tmp_path, monkeypatch, gnh_psp8):
    out = tmp_path / "al.h5"
    argv = ["build_dataset.py", "--n", "2", "--seed", "3", "--workers", "1",
            "--pseudo", str(gnh_psp8), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "build_dataset.py"), run_name="__main__")
    module = runpy.run_path(str(EXAMPLES / "build_dataset.py"))
    expected = module["structures"](2, 3)
    with fedft.read_dataset(out) as ds:
        assert len(ds) == 2 and ds.kinetic_lambda == 0.2 and ds.functional
        assert ds.pseudopotentials["Al"]["spec"] == str(gnh_psp8)
        for i, atoms in enumerate(expected):
            rec = ds.read(i, fields=["energy_density"], mesh=False)
            assert np.allclose(rec.atoms.cell.array, atoms.cell.array)
            assert np.allclose(rec.atoms.get_scaled_positions() % 1.0,
                               atoms.get_scaled_positions() % 1.0, atol=1e-12)
            assert abs(rec.weights @ rec.fields["energy_density"] - rec.energy) < 1e-6
    # rerunning the same command labels nothing new
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "build_dataset.py"), run_name="__main__")
    with fedft.read_dataset(out) as ds:
        assert len(ds) == 2
