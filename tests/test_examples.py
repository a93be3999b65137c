"""Every example runs (in a reduced mode) and produces what it promises."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np

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
