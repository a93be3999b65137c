"""Shared location of the reference pseudodensity file (read in place, never copied)."""

from pathlib import Path

import pytest

GPSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "NC-SR.gpsp"
requires_gpsp = pytest.mark.skipif(not GPSP.exists(), reason=f"reference data {GPSP} not found")
