"""Test helpers shared by the cemt test modules."""

import torch

import cemt


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
