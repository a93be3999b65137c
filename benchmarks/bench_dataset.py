"""Benchmark of density-labelled datasets (not a test).

1. Labelling 8 small structures (rattled one-atom fcc Al, fast preset) on 2 local worker
   processes vs 1 (target: >= 1.6x faster).
2. Bytes on disk vs the raw arrays stored (target: overhead <= 10 %).
3. Reading one ~50k-node structure, warm cache (target: <= 20 ms).

Usage::

    python benchmarks/bench_dataset.py [--structures 8] [--repeats 20] [--json OUT.json]

Prints one line per figure and, with ``--json``, writes them with the machine's details.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
from ase.build import bulk

import fedft

PSEUDO = {"Al": "erf:3:0.529177"}


def label_speedup(n: int, workdir: Path) -> dict:
    structures = fedft.rattled(bulk("Al", "fcc", a=4.05), n, stdev=0.05, seed=2026)
    # warm up: start the pool's fork server (it imports fedft once per session), so that
    # neither timing below pays for it
    fedft.label(structures[:1], workdir / "warmup.h5", PSEUDO, 1.0, preset="fast", workers=1)
    out, busy = {}, {}
    for workers in (1, 2):
        path = workdir / f"w{workers}.h5"
        task_seconds = []

        def progress(outcome, done, total):
            if outcome is not None:
                task_seconds.append(outcome["seconds"])

        t0 = time.perf_counter()
        summary = fedft.label(structures, path, PSEUDO, 1.0, preset="fast", workers=workers,
                              progress=progress)
        out[workers] = time.perf_counter() - t0
        busy[workers] = sum(task_seconds)
        assert summary.computed == n and summary.failed == 0
    return {"structures": n, "seconds_1_worker": out[1], "seconds_2_workers": out[2],
            "speedup": out[1] / out[2], "task_seconds_1": busy[1], "task_seconds_2": busy[2],
            "file": str(workdir / "w2.h5")}


def raw_bytes(path: Path) -> int:
    """Sum of the bytes of every stored array, each counted once (hard links once)."""
    seen, total = set(), 0

    def visit(name, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            addr = h5py.h5o.get_info(obj.id).addr
            if addr not in seen:
                seen.add(addr)
                total += obj.size * obj.dtype.itemsize

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
    return total


def big_structure(workdir: Path) -> tuple[Path, int]:
    """A 4-atom fcc Al cell with 19 sub-cubes per edge: 38³ = 54,872 P2 nodes."""
    cell = bulk("Al", "fcc", a=4.05, cubic=True)
    spacing = 4.05 / fedft.BOHR / 19 + 1e-6
    path = workdir / "big.h5"
    fedft.label([cell], path, PSEUDO, 1.0, preset="fast", workers=1, spacing=spacing)
    with fedft.Dataset(path) as ds:
        n = ds.read(0, fields=["rho"], mesh=False).points.shape[0]
    return path, n


def read_times(path: Path, repeats: int) -> dict:
    with fedft.Dataset(path) as ds:
        ds.read(0)  # warm the OS cache
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec = ds.read(0)
            times.append(time.perf_counter() - t0)
        nbytes = (sum(v.nbytes for v in rec.fields.values()) + rec.points.nbytes
                  + rec.weights.nbytes + rec.tetrahedra.nbytes)
    open_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with fedft.Dataset(path) as ds:
            ds.read(0)
        open_times.append(time.perf_counter() - t0)
    return {"best_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times),
            "with_open_median_ms": 1e3 * statistics.median(open_times),
            "megabytes_read": nbytes / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {"code_version": fedft.__version__, "python": sys.version.split()[0],
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        tmp = Path(tmp)
        sp = label_speedup(args.structures, tmp)
        print(f"label {sp['structures']} structures: 1 worker {sp['seconds_1_worker']:.1f} s, "
              f"2 workers {sp['seconds_2_workers']:.1f} s, speedup {sp['speedup']:.2f}x "
              f"(target >= 1.6x); summed task times {sp['task_seconds_1']:.1f} s / "
              f"{sp['task_seconds_2']:.1f} s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        size = Path(sp["file"]).stat().st_size
        raw = raw_bytes(Path(sp["file"]))
        print(f"bytes on disk {size:,} vs raw arrays {raw:,}: overhead "
              f"{100 * (size / raw - 1):.2f} % (target <= 10 %)")
        path, n = big_structure(tmp)
        size_big, raw_big = path.stat().st_size, raw_bytes(path)
        print(f"big structure: {n:,} nodes, on disk {size_big:,} vs raw {raw_big:,}: overhead "
              f"{100 * (size_big / raw_big - 1):.2f} %")
        rt = read_times(path, args.repeats)
        print(f"read one {n:,}-node structure (warm, all fields + mesh, "
              f"{rt['megabytes_read']:.1f} MB): best {rt['best_ms']:.1f} ms, median "
              f"{rt['median_ms']:.1f} ms; with opening the file {rt['with_open_median_ms']:.1f}"
              " ms (target <= 20 ms)")
    sp.pop("file")
    report.update(label=sp, bytes={"on_disk": size, "raw": raw, "overhead": size / raw - 1,
                                   "big_on_disk": size_big, "big_raw": raw_big,
                                   "big_overhead": size_big / raw_big - 1},
                  read={"nodes": n, **rt}, load_average_end=os.getloadavg())
    if args.json:
        from fedft._result import write_json_atomic

        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
