"""Shared location of the reference pseudodensity file (read in place, never copied)."""

from pathlib import Path

import pytest

GPSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "NC-SR.gpsp"
#: Tests that read the file fail (not skip) when it is missing: CI always has ../shared/data.
requires_gpsp = pytest.mark.usefixtures("gpsp_file")
