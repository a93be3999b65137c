"""Bad input raises specific exceptions whose messages say what to fix."""

import numpy as np
import pytest
import torch
from ase import Atoms

from cemt import (CemtError, FeatureScaler, FeatureSettingsError, GMPFeaturizer, GpspFormatError,
                  MissingElementError, PseudodensityError, StructureError, read_gpsp)

from _gmp_data import GPSP, requires_gpsp

GOOD = """# test set
! 2 elements
****
H\t1\t2
0.5\t15.0
0.2\t1.5
****
C\t6\t1
1.0\t2.0
"""


def _write(tmp_path, text):
    p = tmp_path / "set.gpsp"
    p.write_text(text)
    return p


def test_good_file_reads(tmp_path):
    pset = read_gpsp(_write(tmp_path, GOOD))
    assert sorted(pset) == ["C", "H"] and pset["H"].n_primitives == 2


@pytest.mark.parametrize("text, fragment", [
    (GOOD.replace("! 2 elements\n", ""), "no '! N elements' line"),
    (GOOD.replace("! 2", "! 3"), "declares 3 elements but the file has 2 blocks"),
    (GOOD.replace("H\t1\t2", "H\t1\t3"), "declares 3 primitives but its block has 2"),
    (GOOD.replace("0.2\t1.5", "0.2\tabc"), "line 6: expected two numbers 'B beta'"),
    (GOOD.replace("0.2\t1.5", "0.2\t-1.5"), "beta finite and > 0"),
    (GOOD.replace("C\t6\t1", "C\tsix\t1"), "Z and nG must be integers"),
    (GOOD.replace("C\t6\t1", "C 6"), "expected a block header 'Symbol Z nG'"),
    (GOOD.replace("C\t6", "H\t1"), "defined twice"),
    (GOOD.replace("****\nH", "H", 1), "data before the first '****'"),
])
def test_malformed_gpsp(tmp_path, text, fragment):
    with pytest.raises(GpspFormatError, match=None) as info:
        read_gpsp(_write(tmp_path, text))
    assert fragment in str(info.value)
    assert isinstance(info.value, PseudodensityError) and isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(GpspFormatError, match="cannot read pseudodensity file"):
        read_gpsp(tmp_path / "nope.gpsp")


def test_element_missing_from_set(tmp_path):
    feat = GMPFeaturizer([0], [0.5], _write(tmp_path, GOOD))
    with pytest.raises(MissingElementError) as info:
        feat.features(Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]]))
    msg = str(info.value)
    assert "'O' (Z=8) is not in the pseudodensity set" in msg and "defines C, H" in msg
    with pytest.raises(MissingElementError, match="'Xx' is not in the pseudodensity set"):
        read_gpsp(_write(tmp_path, GOOD))["Xx"]


@pytest.mark.parametrize("sigmas", [[0.5, 0.0], [-1.0], [float("nan")], [float("inf")]])
def test_bad_sigma(sigmas):
    with pytest.raises(FeatureSettingsError, match="must be a finite number > 0"):
        GMPFeaturizer([0, 1], sigmas, {"C": ([1.0], [1.0])})


@pytest.mark.parametrize("orders", [[0, 11], [-2], [1.5], ["2"], [True]])
def test_unsupported_order(orders):
    with pytest.raises(FeatureSettingsError, match="unsupported order .*: orders must be integers "
                                                   "from -1"):
        GMPFeaturizer(orders, [0.5], {"C": ([1.0], [1.0])})


def test_other_bad_settings():
    pd = {"C": ([1.0], [1.0])}
    with pytest.raises(FeatureSettingsError, match="orders is empty"):
        GMPFeaturizer([], [0.5], pd)
    with pytest.raises(FeatureSettingsError, match="overlap_threshold must be a number in"):
        GMPFeaturizer([0], [0.5], pd, overlap_threshold=0.0)
    with pytest.raises(FeatureSettingsError, match="dtype must be torch.float32 or torch.float64"):
        GMPFeaturizer([0], [0.5], pd, dtype=torch.float16)
    with pytest.raises(FeatureSettingsError, match="duplicates"):
        GMPFeaturizer([0, 0], [0.5], pd)
    with pytest.raises(PseudodensityError, match="every exponent beta must be > 0"):
        GMPFeaturizer([0], [0.5], {"C": ([1.0], [0.0])})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions_and_points(bad):
    feat = GMPFeaturizer([0], [0.5], {"C": ([1.0], [1.0])})
    atoms = Atoms("CC", positions=[[0, 0, 0], [1, 0, 0]])
    pos = atoms.positions.copy()
    pos[1, 2] = bad
    with pytest.raises(StructureError, match=r"atom positions contain non-finite values .* rows \[1\]"):
        feat.features_torch(torch.tensor(pos), atoms.numbers)
    with pytest.raises(StructureError, match="reference points contain non-finite values"):
        feat.features(atoms, np.array([[0.0, bad, 0.0]]))


def test_bad_structure_shapes_and_cells():
    feat = GMPFeaturizer([0], [0.5], {"C": ([1.0], [1.0])})
    with pytest.raises(StructureError, match=r"reference points must have shape \(n, 3\)"):
        feat.features(Atoms("C"), np.zeros((2, 2)))
    with pytest.raises(StructureError, match="periodic cell vectors .* are zero or linearly dependent"):
        feat.features_torch(np.zeros((1, 3)), [6], cell=np.zeros((3, 3)), pbc=True)
    with pytest.raises(StructureError, match="points='bonds' needs bond_cutoff"):
        feat.features_torch(np.zeros((1, 3)), [6], points="bonds")
    with pytest.raises(StructureError, match="need a cell periodic along all three axes"):
        feat.features_grid(Atoms("C"), (4, 4, 4))


def test_scaler_errors():
    with pytest.raises(CemtError, match="not fitted; call fit"):
        FeatureScaler().transform(torch.zeros((2, 3)))
    s = FeatureScaler().fit(torch.randn(10, 3))
    with pytest.raises(CemtError, match="features have 4 columns, the scaler was fitted on 3"):
        s.transform(torch.zeros((2, 4)))
    with pytest.raises(CemtError, match="contain NaN or inf"):
        FeatureScaler().fit(torch.tensor([[float("nan")]]))


@requires_gpsp
def test_reference_set_reads():
    pset = read_gpsp(GPSP)
    assert len(pset) == 84 and pset.by_number(6).symbol == "C"
