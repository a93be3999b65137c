"""Labelling runs end to end: a structure that does not converge, and crash safety (a run
SIGKILLed midway, then resumed)."""

import concurrent.futures as cf
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import fedft
from fedft import cli

ROOT = Path(__file__).resolve().parent.parent
PSEUDO_ARGS = ["--pseudo", "Al=erf:3:0.529177", "--kinetic-lambda", "1", "--preset", "fast"]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_structure_that_does_not_converge_is_recorded(tmp_path, capsys):
    # with max_iter=7 the perfect one-atom cell converges (5 iterations on the fast preset)
    # while a strongly rattled four-atom cell needs 9: a real ConvergenceError from the solver
    good = bulk("Al", "fcc", a=4.05)
    hard = fedft.rattled(bulk("Al", "fcc", a=4.05, cubic=True), 1, stdev=0.3, seed=3)[0]
    src = tmp_path / "in.extxyz"
    write(src, [hard, good])
    out = tmp_path / "out.h5"
    args = ["label", str(src), "-o", str(out), "--workers", "2", *PSEUDO_ARGS,
            "--set", "max_iter=7"]
    assert cli.main(args) == 3
    text = capsys.readouterr().out
    assert "1 computed" in text and "1 failed" in text and "not converged" in text
    with fedft.Dataset(out) as ds:
        assert len(ds) == 1 and ds[0].atoms.get_chemical_formula() == "Al"
        (key, failure), = ds.failures.items()
        assert failure["error_type"] == "ConvergenceError" and failure["index"] == 0
        assert "not converged" in failure["reason"]
        assert ds.settings["max_iter"] == 7
    assert fedft.check_dataset(out).ok
    assert cli.main(["dataset", "info", str(out)]) == 0
    assert "not converged" in capsys.readouterr().out
    # a rerun retries only the failed structure (and fails again, the file stays valid)
    summary = fedft.label(src, out)
    assert (summary.skipped, summary.computed, summary.failed) == (1, 0, 1)
    assert list(summary.failures) == [key]
    assert fedft.check_dataset(out).ok


def test_sigkill_midway_then_resume(tmp_path):
    prim = bulk("Al", "fcc", a=4.05)
    first = fedft.rattled(prim, 1, 0.05, seed=11)
    rest = fedft.rattled(prim, 3, 0.05, seed=12) + fedft.strained(prim, 2, 0.03, seed=13)
    out = tmp_path / "out.h5"
    src = tmp_path / "all.extxyz"
    write(tmp_path / "first.extxyz", first)
    write(src, first + rest)
    assert cli.main(["label", str(tmp_path / "first.extxyz"), "-o", str(out), "--workers",
                     "1", *PSEUDO_ARGS]) == 0
    digest = _sha(out)

    shards = tmp_path / "out.h5.shards"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "fedft.cli", "label", str(src), "-o",
                             str(out), "--workers", "1"], cwd=tmp_path, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(shards.glob("*.h5"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()}"
        assert len(list(shards.glob("*.h5"))) >= 2, "no shards within the time limit"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker process
        proc.wait()
    done = len(list(shards.glob("*.h5")))
    assert 2 <= done < len(rest)
    assert _sha(out) == digest  # the existing file was not touched by the killed run
    assert fedft.check_dataset(out).ok

    summary = fedft.label(src, out, workers=1)
    assert summary.skipped == 1
    assert summary.recovered == done
    assert summary.computed == len(rest) - done
    assert summary.failed == 0
    report = fedft.check_dataset(out)
    assert report.ok, report.problems
    with fedft.Dataset(out) as ds:
        assert len(ds) == 1 + len(rest)
        assert sorted(ds.keys()) == sorted(set(summary.keys))
        energies = ds.energies()
    assert np.all(np.isfinite(energies))
    assert not shards.exists()
    assert not list(tmp_path.glob(".out.h5.*"))  # no temporary files left behind


class _UnsharedDiskExecutor(cf.Executor):
    """Runs each task in this process, then deletes its shard, as if a worker had written it
    to its own local disk instead of a shared file system."""

    def submit(self, fn, *args, **kwargs):
        fut = cf.Future()
        outcome = fn(*args, **kwargs)
        Path(args[4], f"{outcome['key']}.h5").unlink(missing_ok=True)
        fut.set_result(outcome)
        return fut


def test_any_executor_and_shards_not_shared(tmp_path):
    atoms = [bulk("Al", "fcc", a=4.05)]
    out = tmp_path / "out.h5"
    summary = fedft.label(atoms, out, {"Al": "erf:3:0.529177"}, 1.0, preset="fast",
                          executor=_UnsharedDiskExecutor())
    assert summary.failed == 1 and summary.computed == 0
    assert "shared" in summary.failures[summary.keys[0]]
    with fedft.Dataset(out) as ds:
        assert len(ds) == 0 and ds.failures[summary.keys[0]]["error_type"] == "OutputError"
    # the same executor protocol, run properly, labels the structure
    with cf.ThreadPoolExecutor(1) as pool:
        summary = fedft.label(atoms, out, executor=pool)
    assert summary.computed == 1 and summary.failed == 0
    with fedft.Dataset(out) as ds:
        assert len(ds) == 1 and ds.failures == {}
    assert fedft.check_dataset(out).ok


def test_damaged_shard_is_recomputed_and_a_failed_merge_changes_nothing(tmp_path):
    from fedft._labelling import _merge, shard_dir

    atoms = [bulk("Al", "fcc", a=4.05)]
    out = tmp_path / "out.h5"
    pseudo = {"Al": "erf:3:0.529177"}
    first = fedft.label(atoms, out, pseudo, 1.0, preset="fast", workers=1)
    digest = _sha(out)
    # a merge that fails halfway (an unreadable shard) leaves the output as it was
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not an hdf5 shard")
    with fedft.Dataset(out) as ds:
        config = ds.config
    with pytest.raises(OSError):
        _merge(out, config, [(0, bogus)], [], {}, {"note": "test"})
    assert _sha(out) == digest
    assert not list(tmp_path.glob(".out.h5.*"))
    # a damaged shard of a new structure (e.g. a full disk) is recomputed, not merged
    new = fedft.rattled(atoms[0], 1, 0.05, seed=5)
    key = fedft.structure_key(new[0], config)
    shards = shard_dir(out)
    shards.mkdir()
    (shards / f"{key}.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    summary = fedft.label(atoms + new, out, workers=1)
    assert (summary.skipped, summary.recovered, summary.computed) == (1, 0, 1)
    assert summary.keys == [first.keys[0], key]
    assert fedft.check_dataset(out).ok and not shards.exists()
