"""Label many structures into one dataset file, in parallel, resumable and idempotent.

How a run proceeds (:func:`label`):

1. The settings are resolved and each structure gets its content key
   (:func:`fedft._dataset.structure_key`). If the output exists, its settings must match
   (else :class:`DatasetMismatchError`, the file untouched) and structures already in it are
   skipped.
2. Each remaining structure is a task on the executor (local processes by default, or any
   :class:`concurrent.futures.Executor`, e.g. a Dask ``Client.get_executor()``). A task
   computes the ground state and writes its own shard ``OUT.h5.shards/<key>.h5`` (temporary
   file + rename), returning only a small outcome; a failure returns its reason.
3. Shards left by an earlier, killed run are taken as they are instead of being recomputed.
4. The merge copies the output to a temporary file beside it, adds each shard's group and the
   failures, fsyncs and renames it over the output; only then are the shards deleted. A kill
   at any moment leaves either the old or the new file, never a partial one.

A lock file ``OUT.h5.lock`` (``flock``, released by the kernel even on SIGKILL; the empty file
stays) keeps two runs from writing the same output.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ._compute import DiscretisationCache, check_lambda, compute
from ._dataset import (
    FORMAT,
    FORMAT_VERSION,
    Dataset,
    atomic_h5,
    config_differences,
    default_mode,
    read_config,
    run_config,
    structure_key,
    to_json,
    write_failure,
    write_file_attrs,
    write_record,
)
from ._errors import (
    ConvergenceError,
    DatasetError,
    DatasetLockedError,
    DatasetMismatchError,
    FedftError,
    MissingPseudopotentialError,
    OutputError,
    SettingsError,
)
from ._fields import GAUGES
from ._pseudo import load_pseudo
from ._settings import Settings, resolve_settings
from ._structures import read_structures
from ._version import __version__

log = logging.getLogger(__name__)

_CACHE = DiscretisationCache(size=2)  # per worker process: rattled cells share a mesh


@dataclass
class LabelSummary:
    """What a :func:`label` run did.

    Attributes
    ----------
    output : Path
    keys : list of str
        Content key of each input structure, in input order.
    total : int
        Input structures (duplicates included).
    computed : int
        Ground states computed by this run.
    recovered : int
        Structures taken from shards of an earlier, interrupted run.
    skipped : int
        Structures already in the output.
    duplicates : int
        Input structures identical to an earlier one in the same input.
    failed : int
        Structures that failed; ``failures`` maps their key to the reason.
    failures : dict of str -> str
    seconds : float
        Wall time of the run.
    """

    output: Path
    keys: list = field(default_factory=list)
    total: int = 0
    computed: int = 0
    recovered: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no structure failed."""
        return self.failed == 0

    def as_dict(self) -> dict:
        return {"output": str(self.output), "total": self.total, "computed": self.computed,
                "recovered": self.recovered, "skipped": self.skipped,
                "duplicates": self.duplicates, "failed": self.failed,
                "failures": self.failures, "seconds": self.seconds}


def shard_dir(output) -> Path:
    """Directory of the per-task shards of ``output``."""
    output = Path(output)
    return output.with_name(output.name + ".shards")


# ------------------------------------------------------------------------------- the task
def label_one(atoms: Atoms, key: str, index: int, config: dict, shards: str) -> dict:
    """Compute one structure and write its shard (runs on a worker).

    Parameters
    ----------
    atoms : ase.Atoms
    key : str
        Content key (group name).
    index : int
        Position in the input.
    config : dict
        :func:`fedft._dataset.run_config` of the run.
    shards : str
        Shard directory (must be reachable from the worker: a shared file system on a
        cluster).

    Returns
    -------
    dict
        ``key``, ``index``, ``status`` ("ok" or "failed"), ``seconds``, ``host`` and for
        failures ``reason``, ``error_type`` and ``extra``; never raises for a failing
        structure.
    """
    t0 = time.perf_counter()
    out = {"key": key, "index": index, "host": socket.gethostname()}
    try:
        specs = {s: p["spec"] for s, p in config["pseudopotentials"].items()}
        settings = Settings(**config["settings"])
        result = compute(atoms, specs, config["kinetic_lambda"], preset=settings,
                         gauge=config["gauge"], cache=_CACHE)
        for sym, p in result.pseudopotentials.items():
            want = config["pseudopotentials"][sym]["digest"]
            if p["digest"] != want:
                raise FedftError(
                    f"pseudopotential {p['spec']} for {sym} on host {out['host']} has sha256 "
                    f"{p['digest'][:12]}, the run expects {want[:12]}: give every worker the "
                    "same file (an absolute path on a shared file system)")
        path = Path(shards) / f"{key}.h5"
        try:
            with atomic_h5(path) as fh:
                write_file_attrs(fh, config)
                write_record(fh.create_group("structures", track_order=True), key, result,
                             index=index)
        except OSError as exc:
            raise OutputError(
                f"cannot write the shard {path} on host {out['host']} ({exc}); the output "
                "directory must be writable by every worker (a shared file system on a "
                "cluster)") from exc
        out.update(status="ok", n_dofs=int(result.mesh.n_dofs),
                   iterations=len(result.history) - 1)
    except ConvergenceError as exc:
        out.update(status="failed", error_type="ConvergenceError",
                   reason=f"not converged: {exc}",
                   extra={"iterations": len(exc.history) - 1,
                          "history": json.loads(to_json(exc.history[-5:]))})
    except FedftError as exc:
        out.update(status="failed", error_type=type(exc).__name__, reason=str(exc), extra={})
    except Exception as exc:  # a failing structure must not stop the others
        out.update(status="failed", error_type=type(exc).__name__,
                   reason=f"{type(exc).__name__}: {exc}",
                   extra={"traceback": traceback.format_exc(limit=8)})
    out["seconds"] = time.perf_counter() - t0
    return out


def _limit_threads(threads: int) -> None:
    """Pool initializer: at most ``threads`` BLAS/OpenMP threads per worker process, so that
    N workers do not oversubscribe the cores."""
    from threadpoolctl import threadpool_limits

    global _LIMITS
    _LIMITS = threadpool_limits(limits=threads)  # kept alive for the worker's lifetime


_LIMITS = None


def _pool_context():
    """Start method of the default pool: a fork server that has imported fedft once (cheap,
    clean workers: the server has no threads), else spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["fedft._labelling"])
        return ctx
    return multiprocessing.get_context("spawn")


# ------------------------------------------------------------------------------- helpers
def _check_output(output: Path) -> None:
    parent = output.parent
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path such as "
                          f"{output / 'dataset.h5'}")
    if not parent.exists():
        raise OutputError(f"output directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent} ({exc.strerror or exc}); choose a "
                          "writable output directory") from exc


@contextlib.contextmanager
def _lock(output: Path):
    import fcntl

    path = output.with_name(output.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetLockedError(f"another run is labelling into {output} (lock {path} is "
                                     "held); wait for it or use another output") from None
        yield
    finally:
        os.close(fd)  # the (empty) lock file stays: unlinking it would race a waiting run


def _existing(output: Path) -> tuple[dict | None, set, set]:
    """Config, labelled keys and failed keys of an existing output (None, ∅, ∅ if absent)."""
    if not output.exists():
        return None, set(), set()
    try:
        with Dataset(output) as ds:
            if ds.format_version < FORMAT_VERSION:
                raise DatasetMismatchError(
                    f"{output} was written by an older fedft (dataset format "
                    f"{ds.format_version}, energy densities in the {ds.energy_density_form!r} "
                    f"convention); this fedft writes format {FORMAT_VERSION}. Label into a new "
                    "file")
            return read_config(ds._file), set(ds.keys()), set(ds.failures)
    except DatasetMismatchError:
        raise
    except DatasetError as exc:
        raise DatasetError(f"{exc}. The existing file {output} was left untouched.") from None
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read the existing output {output} ({exc}); it was left "
                           "untouched: move it away or choose another output") from exc


def resolve_config(pseudopotentials, kinetic_lambda, preset, gauge, overrides,
                   existing: dict | None) -> dict:
    """The run's config; unspecified parts (None) come from an existing dataset."""
    if existing is not None:
        if pseudopotentials is None:
            pseudopotentials = {s: p["spec"] for s, p in existing["pseudopotentials"].items()}
        else:  # elements not given now keep the file's pseudopotentials
            pseudopotentials = {**{s: p["spec"] for s, p in existing["pseudopotentials"].items()},
                                **pseudopotentials}
        if kinetic_lambda is None:
            kinetic_lambda = existing["kinetic_lambda"]
        if gauge is None:
            gauge = existing["gauge"]
        if preset is None:
            preset = Settings(**existing["settings"])
    if not pseudopotentials:
        raise MissingPseudopotentialError(
            "no pseudopotentials given: pass one per element, e.g. --pseudo Al=erf:3:0.529 "
            "or --pseudo Al=Al.psp8")
    if kinetic_lambda is None:
        raise SettingsError("kinetic_lambda is required for a new dataset (e.g. "
                            "--kinetic-lambda 1)")
    lam = check_lambda(kinetic_lambda)
    gauge = gauge or "gradient"
    if gauge not in GAUGES:
        raise SettingsError(f"unknown gauge {gauge!r}; choose one of {GAUGES}")
    settings = resolve_settings(preset if preset is not None else "accurate", **overrides)
    pseudos = {}
    for sym, spec in sorted(pseudopotentials.items()):
        p = load_pseudo(spec, symbol=sym)
        pseudos[sym] = {"spec": str(p.spec) if not isinstance(spec, str) else spec,
                        "digest": p.digest}
    return run_config(pseudos, lam, settings.as_dict(), gauge)


def _valid_shard(path: Path, key: str, config: dict) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return (fh.attrs.get("format") == FORMAT and key in fh.get("structures", {})
                    and not config_differences(read_config(fh), config))
    except (OSError, KeyError, ValueError):
        return False


def _merge(output: Path, config: dict, shards: list[tuple[int, Path]], failures: list[dict],
           atoms_by_key: dict, run_info: dict) -> None:
    """Build the new output from the old one, the shards and the failures; atomic."""
    import h5py

    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".merge", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        if output.exists():
            shutil.copyfile(output, tmp)
            shutil.copymode(output, tmp)
            mode = "a"
        else:
            os.chmod(tmp, default_mode())
            mode = "w"
        with h5py.File(tmp, mode, track_order=True) as dst:
            if mode == "w":
                write_file_attrs(dst, config)
            else:  # pseudopotentials of new elements join the file's
                merged = {**json.loads(dst.attrs["pseudopotentials"]),
                          **config["pseudopotentials"]}
                dst.attrs["pseudopotentials"] = to_json(merged)
            structures = dst.get("structures") or dst.create_group("structures",
                                                                   track_order=True)
            failed = dst.get("failed") or dst.create_group("failed", track_order=True)
            for _, path in sorted(shards):
                with h5py.File(path, "r") as src:
                    for key in src["structures"]:
                        if key in structures:
                            continue
                        src.copy(src["structures"][key], structures, name=key)
                        if key in failed:
                            del failed[key]
            for f in sorted(failures, key=lambda f: f["index"]):
                write_failure(failed, f["key"], atoms_by_key[f["key"]], f["reason"],
                              f["error_type"], index=f["index"], extra=f.get("extra"))
            runs = json.loads(dst.attrs.get("runs", "[]"))
            runs.append(run_info)
            dst.attrs["runs"] = to_json(runs)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------- the API
def label(structures, output, pseudopotentials: dict | None = None,
          kinetic_lambda: float | None = None, preset: str | Settings | None = None,
          gauge: str | None = None, executor: cf.Executor | None = None,
          workers: int | None = None, progress=None, **overrides) -> LabelSummary:
    """Label structures with ground-state densities, energies and forces into one dataset.

    Parameters
    ----------
    structures : list of ase.Atoms, or str / Path
        The structures, or any file ``ase.io.read(path, index=":")`` accepts.
    output : str or Path
        The HDF5 dataset (created, or extended when it exists).
    pseudopotentials : dict, optional
        Symbol -> spec (``"erf:Z:RC"`` with RC in Å, or a .psp8/.recpot/.upf path). Required
        for a new dataset; for an existing one, defaults to the file's.
    kinetic_lambda : float, optional
        λ of the von Weizsäcker term; default: the file's (required for a new dataset).
    preset : str or Settings, optional
        ``"fast"``, ``"accurate"``, ``"tight"`` or explicit settings; default: the file's
        settings, or ``"accurate"`` for a new dataset.
    gauge : {"gradient", "laplacian"}, optional
        Gauge of the stored vW energy density; default: the file's, or ``"gradient"``.
    executor : concurrent.futures.Executor, optional
        Where tasks run: any executor (a Dask ``Client.get_executor()`` for a cluster).
        Default: a local process pool of ``workers`` processes, shut down at the end.
    workers : int, optional
        Processes of the default pool (default: the number of CPUs); each may use
        ``cpus // workers`` BLAS threads.
    progress : callable(outcome: dict | None, done: int, total: int), optional
        Called in this process once with ``(None, 0, n_tasks)`` before the tasks start, then
        after each task finishes with its outcome (``status`` "ok" or "failed").
    **overrides
        Settings fields to override (e.g. ``max_iter=50``; lengths in bohr).

    Returns
    -------
    LabelSummary
        ``summary.failed`` structures failed; each is recorded in the file under
        ``/failed/<key>`` with its reason, and retried by the next run.

    Raises
    ------
    StructureFileError
        The structure file is missing or unreadable.
    OutputError
        The output cannot be written.
    DatasetError, DatasetMismatchError, DatasetLockedError
        The output exists but is not a dataset, was labelled with other settings, or another
        run is writing it. The existing file is never modified in these cases.
    FedftError
        Other bad input (settings, pseudopotentials, λ).
    """
    t0 = time.perf_counter()
    output = Path(output)
    if isinstance(structures, (str, Path)):
        source = str(structures)
        structures = read_structures(structures)
    else:
        source = "<python>"
        structures = list(structures)
        for k, a in enumerate(structures):
            if not isinstance(a, Atoms):
                raise FedftError(f"structure {k} is a {type(a).__name__}, not an ase.Atoms")
    if not structures:
        raise FedftError("no structures to label")
    _check_output(output)
    if workers is not None and int(workers) < 1:
        raise SettingsError(f"workers must be >= 1, got {workers}")

    with _lock(output):
        existing, done_keys, _failed_keys = _existing(output)
        config = resolve_config(pseudopotentials, kinetic_lambda, preset, gauge, overrides,
                                existing)
        if existing is not None:
            diffs = config_differences(existing, config)
            if diffs:
                raise DatasetMismatchError(
                    f"{output} was labelled with different settings ({'; '.join(diffs)}). "
                    "Label into a new file, or rerun with the file's settings (omit --preset, "
                    "--kinetic-lambda and --pseudo to reuse them). The file was left untouched.")
        missing = sorted({s for a in structures for s in a.get_chemical_symbols()}
                         - set(config["pseudopotentials"]))
        if missing:
            raise MissingPseudopotentialError(
                f"no pseudopotential for {', '.join(missing)}: give one per element, e.g. "
                f"--pseudo {missing[0]}=erf:Z:RC (RC in Å) or {missing[0]}=PATH.psp8")

        summary = LabelSummary(output=output, total=len(structures))
        todo, atoms_by_key = [], {}
        for index, atoms in enumerate(structures):
            key = structure_key(atoms, config)
            summary.keys.append(key)
            if key in atoms_by_key:
                summary.duplicates += 1
                continue
            atoms_by_key[key] = atoms
            if key in done_keys:
                summary.skipped += 1
            else:
                todo.append((index, key))

        shards = shard_dir(output)
        shards.mkdir(exist_ok=True)
        # temporary files of a killed run (we hold the lock: no other run owns them)
        for stale in [*shards.glob(".*.tmp"), *output.parent.glob(f".{output.name}.*.merge")]:
            stale.unlink(missing_ok=True)
        ready, tasks = [], []
        for index, key in todo:
            path = shards / f"{key}.h5"
            if path.exists() and _valid_shard(path, key, config):
                ready.append((index, path))
            else:
                path.unlink(missing_ok=True)
                tasks.append((index, key))
        summary.recovered = len(ready)
        log.info("%s: %d structures, %d already labelled, %d from shards, %d to compute",
                 output, summary.total, summary.skipped, summary.recovered, len(tasks))

        failures = []
        own = executor is None and tasks
        if own:
            n_workers = min(int(workers or os.cpu_count() or 1), len(tasks))
            executor = cf.ProcessPoolExecutor(
                max_workers=n_workers, mp_context=_pool_context(),
                initializer=_limit_threads,
                initargs=(max(1, (os.cpu_count() or 1) // n_workers),))
        futures = {}
        if progress is not None:
            progress(None, 0, len(tasks))
        try:
            futures = {executor.submit(label_one, atoms_by_key[key], key, index, config,
                                       str(shards.resolve())): (index, key)
                       for index, key in tasks}
            for done, fut in enumerate(cf.as_completed(futures), 1):
                index, key = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # the worker itself died (OOM kill, lost node)
                    outcome = {"key": key, "index": index, "status": "failed",
                               "error_type": type(exc).__name__,
                               "reason": f"worker failed: {type(exc).__name__}: {exc}",
                               "extra": {}, "seconds": 0.0}
                if outcome["status"] == "ok" and not (shards / f"{key}.h5").is_file():
                    outcome.update(
                        status="failed", error_type="OutputError", extra={},
                        reason=f"the shard written by host {outcome.get('host')} is not "
                               f"visible here at {shards / (key + '.h5')}: the output "
                               "directory must be on a file system shared by all workers")
                if outcome["status"] == "ok":
                    summary.computed += 1
                    ready.append((index, shards / f"{key}.h5"))
                    log.info("structure %d (%s) done in %.1f s", index, key,
                             outcome["seconds"])
                else:
                    failures.append(outcome)
                    summary.failures[key] = outcome["reason"]
                    log.warning("structure %d (%s) failed: %s", index, key, outcome["reason"])
                if progress is not None:
                    progress(outcome, done, len(tasks))
        except KeyboardInterrupt:
            for fut in futures:
                fut.cancel()
            log.warning("interrupted: merging the %d finished structure(s)", len(ready))
            raise
        finally:
            if own:
                executor.shutdown(wait=True, cancel_futures=True)
            summary.failed = len(failures)
            summary.seconds = time.perf_counter() - t0
            run_info = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "code_version": __version__, "source": source,
                        "host": socket.gethostname(), **summary.as_dict()}
            run_info.pop("output")
            if ready or failures or not output.exists():
                _merge(output, config, ready, failures, atoms_by_key, run_info)
            for _, path in ready:
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                shards.rmdir()  # only when empty
    log.info("%s: computed %d, recovered %d, skipped %d, failed %d in %.1f s", output,
             summary.computed, summary.recovered, summary.skipped, summary.failed,
             summary.seconds)
    return summary


__all__ = ["label", "label_one", "LabelSummary", "shard_dir", "resolve_config"]
