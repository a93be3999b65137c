"""Shared test settings and fixtures: paths to reference data beside the project, common
structures, single-threaded numerics."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

# The solver limits BLAS threads itself; keep the reference code (DFTpy, numpy) single
# threaded too so that tests do not oversubscribe the 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# One intra-op thread keeps the many small tensor operations of the tests fast and their
# timing stable on a shared machine (OpenMP spin-waits under contention).
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helper modules

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
GNH_PSP8 = SHARED_DATA / "Al_goodwin.psp8"
NC_SR_GPSP = SHARED_DATA / "NC-SR.gpsp"

BOHR = 0.52917721067
#: erf Al of BACKGROUND §3 (Z = 3, rc = 1 bohr) as a spec string (rc in Å).
ERF_AL = f"erf:3:{BOHR!r}"


@pytest.fixture
def gnh_psp8():
    if not GNH_PSP8.is_file():
        pytest.fail(f"reference data {GNH_PSP8} missing: the project expects ../shared/data")
    return GNH_PSP8


@pytest.fixture
def gpsp_file():
    if not NC_SR_GPSP.is_file():
        pytest.fail(f"reference data {NC_SR_GPSP} missing: the project expects ../shared/data")
    return NC_SR_GPSP


@pytest.fixture
def al_conventional():
    """fcc Al, 4-atom conventional cell, a = 4.05 Å."""
    return bulk("Al", "fcc", a=4.05, cubic=True)


@pytest.fixture
def al_primitive():
    """fcc Al, 1-atom primitive (triclinic) cell, a = 4.05 Å."""
    return bulk("Al", "fcc", a=4.05)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
