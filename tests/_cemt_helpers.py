"""Test helpers shared by the cemt test modules."""

import concurrent.futures as cf

import torch
from ase.build import bulk
from conftest import ERF_AL

import cemt
import fedft


def labelled_al(path, n, seed, max_strain=0.03, stdev=0.0, cubic=False):
    """A small fedft dataset at ``path``: ``n`` strained (and rattled by ``stdev`` Å) fcc Al
    cells (one-atom primitive, or the 4-atom cubic cell), erf pseudopotential, λ = 1, fast
    preset, labelled in this process. Returns ``(path, structures)``."""
    structures = fedft.strained(bulk("Al", "fcc", a=4.05, cubic=cubic), n,
                                max_strain=max_strain, stdev=stdev, seed=seed)
    with cf.ThreadPoolExecutor(1) as ex:
        summary = fedft.label(structures, path, {"Al": ERF_AL}, 1.0, preset="fast",
                              executor=ex)
    assert summary.failed == 0, summary.failures
    return path, structures


def tiny_model(kind, features, dtype="float64"):
    """A small random-weight model with a non-trivial standardisation, so that the scaler is
    part of the differentiated function (seeded: the same model every call)."""
    torch.manual_seed(1)
    model = cemt.build_model({"kind": kind, "features": features, "widths": [12, 12],
                              "activation": "silu", "dtype": dtype, "bond_cutoff": 3.2})
    x = torch.rand(50, model.n_features, dtype=torch.float64) * 0.3
    model.scaler.fit(x)
    model.set_normalisation(-4.0, 2.0, 0.2)
    return model
