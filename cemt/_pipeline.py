"""The toolkit's main job in one call: label, train, compare, report (``cemt pipeline``).

:func:`pipeline` runs four stages into one output directory:

1. **label**: structures (generated with :func:`fedft.strained`, or read from a file) are
   labelled by :func:`fedft.label` into ``dataset.h5``; the training structures first, then
   the last ``n_test`` structures (the held-out test set), so that the test set is always at
   dataset positions ``n_train:n`` even after an interrupted run;
2. **train**: the grid-centred model (``grid/``) and the atom-centred baseline (``atom/``) with
   :func:`cemt.train` on the training structures (``data.max_structures = n_train``);
3. **compare**: :func:`cemt.compare` of both models on the test structures
   (``report-grid/``, ``report-atom/``);
4. **report**: ``report.html`` (headline table of both models' test errors, links to the two
   reports) and ``summary.json``.

The configuration (:data:`SCHEMA`; ``cemt pipeline --template`` prints it as commented YAML)
is checked completely before anything is written: unknown keys and bad values raise
:class:`~cemt.ConfigError` naming the dotted key. The ``grid`` and ``atom`` sections are
overrides merged into the ``cemt train`` configurations of the two models (any key of
:data:`cemt._config.SCHEMA` except the ones the pipeline sets: ``output``, ``data.train``,
``data.max_structures`` and ``model.kind``), validated by :func:`cemt.resolve_config`.

Resumable: the resolved configuration is saved as ``pipeline.yaml`` before the first stage; a
rerun into the same directory must have the same settings (apart from ``output``,
``threads``, ``labelling.workers``, ``compare.slices`` and ``training.progress``; otherwise
:class:`PipelineError` names the differing keys), reuses the labelled
structures (:func:`fedft.label` computes only the missing ones), skips finished trainings
(their checkpoint reached ``training.epochs`` or stopped early) and resumes interrupted ones
from their checkpoints, and reuses a report whose model file is unchanged.

Featurizing, training and comparing run on ``threads`` PyTorch threads (default 1, restored
afterwards): these many small tensor operations were measured 5x faster on one thread than on
two on a busy 2-core machine. Labelling runs on ``labelling.workers`` processes.

Layout of the output directory::

    pipeline.yaml        resolved configuration (+ the code version in its header)
    dataset.h5           fedft dataset: positions 0..n_train-1 train, n_train..n-1 test
    grid/, atom/         cemt train outputs (config.yaml, metrics.csv, checkpoint.pt, model.pt)
    report-grid/, report-atom/   cemt compare reports on the test structures
    report.html          the top page
    summary.json         every headline number, file, setting and timing; format
                         "cemt-pipeline"
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import html
import json
import logging
import math
import os
import time
from pathlib import Path

import yaml

from ._compare import _finite
from ._config import SCHEMA as TRAIN_SCHEMA
from ._config import merge_schema, read_yaml, resolve_config, schema_defaults, yaml_scalar
from ._errors import CemtError, ConfigError

__all__ = ["SCHEMA", "PipelineError", "pipeline", "resolve_pipeline_config",
           "default_pipeline_config", "pipeline_config_text", "load_pipeline_config",
           "PIPELINE_FORMAT"]

logger = logging.getLogger(__name__)

#: ``format`` entry of ``summary.json``.
PIPELINE_FORMAT = "cemt-pipeline"
PIPELINE_FORMAT_VERSION = 1

#: Name of the saved resolved configuration inside the output directory.
CONFIG_NAME = "pipeline.yaml"
DATASET_NAME = "dataset.h5"
MODELS = ("grid", "atom")

#: Lattice constant of the built-in base structure (conventional fcc Al), Å.
FCC_AL_A = 4.05

#: Keys of a model section that the pipeline sets itself (dotted).
PIPELINE_SET = ("output", "data.train", "data.max_structures", "model.kind")

#: Keys that may differ between a run and a rerun into the same directory.
RERUN_FREE = ("output", "threads", "labelling.workers", "compare.slices",
              "grid.training.progress", "atom.training.progress")

#: Default overrides of the two ``cemt train`` configurations.
GRID_DEFAULTS = {
    "model": {"widths": [32, 32]},
    "data": {"validation_fraction": 0.0},
    "training": {"labels": ["fields", "energies", "forces"], "fields_warmup": 20,
                 "epochs": 250, "batch_size": 4, "points_per_structure": None, "lr": 0.002,
                 "lr_schedule": "cosine", "min_lr": 1.0e-5, "early_stopping": None},
}
ATOM_DEFAULTS = {
    "model": {"widths": [32, 32]},
    "data": {"validation_fraction": 0.0},
    "training": {"labels": ["energies", "forces"], "epochs": 300, "batch_size": 4,
                 "lr": 0.002, "lr_schedule": "cosine", "min_lr": 1.0e-5,
                 "early_stopping": None},
}


class PipelineError(CemtError):
    """The pipeline cannot run or finish: the output directory cannot be written or holds
    something else, the structure file cannot be read, or labelling failed."""


# ---------------------------------------------------------------------------------- checks
def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _nonneg_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number_in(lo, hi):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) \
        and math.isfinite(v) and lo <= v < hi


def _path(v):
    return isinstance(v, str) and len(v) > 0


def _optional(check):
    return lambda v: v is None or check(v)


def _presets():
    import fedft
    return sorted(fedft.PRESETS)


def _preset(v):
    return isinstance(v, str) and v in _presets()


def _pseudos(v):
    return isinstance(v, dict) and len(v) > 0 and all(
        isinstance(k, str) and isinstance(s, str) and s for k, s in v.items())


def _lambda(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 10


def _mapping(v):
    return isinstance(v, dict)


#: section -> key -> (default, check, description). ``structures.generate`` may be null (when
#: ``structures.file`` is given); ``grid`` and ``atom`` are free mappings checked by
#: :func:`cemt.resolve_config`.
SCHEMA = {
    "output": ("cemt-pipeline", _path,
               "Output directory, relative to the configuration file (to the current "
               "directory without one); `cemt pipeline -o DIR` overrides it. It must be new, "
               "empty or an earlier run of the same configuration."),
    "seed": (0, _nonneg_int, "Seed of the structure generator, and the training seed of "
                             "both models unless grid/atom set their own (integer >= 0)."),
    "structures": {
        "generate": {
            "base": ("fcc_al", _path,
                     "fcc_al (conventional 4-atom fcc Al cell, a = 4.05 Å) or a structure "
                     "file (its first image; relative to the configuration file)."),
            "n": (32, _positive_int, "Number of structures, test set included (>= 2)."),
            "max_strain": (0.03, _number_in(0, 0.5),
                           "Each strain component uniform in ±max_strain (0 <= s < 0.5)."),
            "stdev": (0.08, _number_in(0, math.inf),
                      "Gaussian rattle after straining, Å (>= 0)."),
        },
        "file": (None, _optional(_path),
                 "Instead of generate: a structure file read with ase.io.read(PATH, "
                 "index=':'), every image (periodic cells; relative to the configuration "
                 "file). Giving file sets generate to null."),
    },
    "n_test": (6, _positive_int, "The last n_test structures are the held-out test set, "
                                 "the others the training set (1 <= n_test < structures)."),
    "labelling": {
        "pseudopotentials": ({"Al": "erf:3:0.529177"}, _pseudos,
                             "Element -> fedft pseudopotential: erf:Z:RC (V = -Z erf(r/RC)/r, "
                             "RC in Å) or a .psp8/.recpot/.upf file (relative to the "
                             "configuration file)."),
        "kinetic_lambda": (1.0, _lambda,
                           "λ of the von Weizsäcker term: TF + λ·vW + LDA (0 < λ <= 10; 1: "
                           "single orbital, also 1/9, 1/5)."),
        "preset": ("fast", _preset, "fedft accuracy preset: fast, accurate or tight."),
        "workers": (None, _optional(_positive_int),
                    "Labelling processes (null: every local core)."),
    },
    "grid": (GRID_DEFAULTS, _mapping,
             "Grid-centred model (the CEMT model): overrides merged into its `cemt train` "
             "configuration (every key: `cemt train --template`), except output, data.train, "
             "data.max_structures and model.kind, which the pipeline sets; "
             "features.pseudodensity defaults to the shipped cemt.FEDFT_GPSP and seed to the "
             "pipeline seed."),
    "atom": (ATOM_DEFAULTS, _mapping,
             "Atom-centred baseline: overrides of its `cemt train` configuration, as for "
             "grid."),
    "threads": (1, _optional(_positive_int),
                "PyTorch threads for featurizing, training and comparing (null: PyTorch's "
                "default, every core). One is the fastest for these many small tensor "
                "operations: measured 5x faster than two on a busy 2-core machine."),
    "compare": {
        "slices": (2, _nonneg_int, "Test structures that get slice pictures and XDMF field "
                                   "files in the grid model's report (>= 0)."),
    },
}


# ---------------------------------------------------------------------------------- config
def default_pipeline_config() -> dict:
    """The default configuration (the built-in example), unresolved (relative paths)."""
    return schema_defaults(SCHEMA)


def pipeline_config_text() -> str:
    """The default configuration as commented YAML (``cemt pipeline --template``)."""
    import fedft

    lines = ["# cemt pipeline configuration: every key with its default value (the built-in",
             "# example). Run: cemt pipeline THIS.yaml [-o DIR]",
             f"# (written by code version {fedft.__version__})", ""]

    def emit_train(values, schema, indent):
        for key, value in values.items():
            pad = "  " * indent
            spec = schema[key]
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:")
                emit_train(value, spec, indent + 1)
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(value)}  # {spec[2]}")

    def emit(node, indent):
        for key, value in node.items():
            pad = "  " * indent
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:")
                emit(value, indent + 1)
                continue
            default, _, doc = value
            if key in MODELS and indent == 0:
                lines.append(f"# {doc}")
                lines.append(f"{key}:")
                emit_train(default, TRAIN_SCHEMA, indent + 1)
            elif isinstance(default, dict):
                lines.append(f"{pad}{key}:  # {doc}")
                for k, v in default.items():
                    lines.append(f"{pad}  {k}: {yaml_scalar(v)}")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(default)}  # {doc}")
    emit(SCHEMA, 0)
    return "\n".join(lines) + "\n"


def _deep_update(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _train_config(name: str, overrides: dict, seed: int, base: Path,
                  output: Path | None = None, n_train: int | None = None) -> dict:
    """The resolved ``cemt train`` configuration of model ``name`` (grid or atom)."""
    import cemt

    for key in PIPELINE_SET:
        if _get(overrides, key) is not None and not (key == "model.kind"
                                                     and _get(overrides, key) == name):
            raise ConfigError(f"{name}.{key} is set by the pipeline and cannot be given "
                              f"(it is {'the model section' if key == 'model.kind' else 'fixed'}"
                              f": {name} model, trained on the pipeline's dataset into "
                              f"OUTPUT/{name})")
    cfg = copy.deepcopy(overrides)
    cfg.setdefault("seed", seed)
    cfg["output"] = str(output if output is not None else base / name)
    data = cfg.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"{name}.data must be a mapping, got {data!r}")
    data["train"] = str(base / DATASET_NAME)
    data["max_structures"] = n_train
    model = cfg.setdefault("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"{name}.model must be a mapping, got {model!r}")
    model["kind"] = name
    features = cfg.setdefault("features", {})
    if isinstance(features, dict) and features.get("pseudodensity") is None:
        features["pseudodensity"] = str(cemt.FEDFT_GPSP)
    try:
        return resolve_config(cfg, base_dir=base)
    except ConfigError as exc:
        raise ConfigError(f"{name} (a cemt train configuration): {exc}") from None


def _strip_pipeline_keys(cfg: dict) -> dict:
    """A resolved training configuration without the keys the pipeline sets."""
    out = copy.deepcopy(cfg)
    out.pop("output")
    out["data"].pop("train")
    out["data"].pop("max_structures")
    out["model"].pop("kind")
    return out


def resolve_pipeline_config(user: dict | None = None, base_dir=None) -> dict:
    """Check a pipeline configuration against :data:`SCHEMA` and fill in the defaults.

    Parameters
    ----------
    user : dict, optional
        Parsed YAML (nested dicts); None or ``{}``: the built-in example.
    base_dir : str or Path, optional
        Relative paths (output, structure files, pseudopotential files, the model sections'
        paths) are taken relative to it; default the current directory.

    Returns
    -------
    dict
        The complete configuration: paths absolute, ``grid`` and ``atom`` every key of their
        resolved ``cemt train`` configuration except the ones the pipeline sets. Resolving it
        again gives the same dict.

    Raises
    ------
    ConfigError
        Unknown key (named with its dotted path), bad value, both or neither of
        ``structures.generate`` and ``structures.file``, or a bad model section.
    """
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, got "
                          f"{type(user).__name__}")
    base = Path(base_dir).absolute() if base_dir is not None else Path.cwd()
    user = copy.deepcopy(user)
    structures = user.get("structures")
    gen_null = False
    if isinstance(structures, dict):
        if structures.get("file") is not None:
            if structures.get("generate") is not None:
                raise ConfigError("structures: give either structures.generate or "
                                  "structures.file, not both")
            gen_null = True
        elif "generate" in structures and structures["generate"] is None:
            raise ConfigError("structures: give structures.generate or structures.file "
                              "(both are null)")
        if gen_null:
            structures = {k: v for k, v in structures.items() if k != "generate"}
            user["structures"] = structures
    unknown = sorted(set(user) - set(SCHEMA), key=str)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {[str(k) for k in unknown]}; allowed "
                          f"at the top level: {sorted(SCHEMA)}")
    models = {name: user.pop(name, None) for name in MODELS}
    cfg = merge_schema({k: v for k, v in SCHEMA.items() if k not in MODELS}, user, "")
    if gen_null:
        cfg["structures"]["generate"] = None
    for name, defaults in (("grid", GRID_DEFAULTS), ("atom", ATOM_DEFAULTS)):
        given = models[name]
        if given is not None and not isinstance(given, dict):
            raise ConfigError(f"{name} must be a mapping of cemt train keys, got {given!r}")
        merged = _deep_update(defaults, given or {})
        cfg[name] = _strip_pipeline_keys(_train_config(name, merged, cfg["seed"], base))

    def absolute(p):
        return str((base / Path(p).expanduser()).resolve())

    cfg["output"] = absolute(cfg["output"])
    gen = cfg["structures"]["generate"]
    if gen is not None:
        if gen["n"] < 2:
            raise ConfigError(f"structures.generate.n = {gen['n']} is invalid: at least one "
                              "training and one test structure are needed (>= 2)")
        if gen["base"] != "fcc_al":
            gen["base"] = absolute(gen["base"])
        if gen["n"] <= cfg["n_test"]:
            raise ConfigError(f"n_test = {cfg['n_test']} leaves no training structure of the "
                              f"{gen['n']} in structures.generate.n (n_test < n)")
    else:
        cfg["structures"]["file"] = absolute(cfg["structures"]["file"])
    pseudos = {}
    for sym, spec in cfg["labelling"]["pseudopotentials"].items():
        spec = spec.strip()
        pseudos[sym] = spec if spec.lower().startswith("erf:") else absolute(spec)
    cfg["labelling"]["pseudopotentials"] = pseudos
    return cfg


def load_pipeline_config(path) -> dict:
    """Read a YAML pipeline configuration and :func:`resolve_pipeline_config` it (paths
    relative to the file's directory).

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML, or the configuration is invalid.
    """
    user, base = read_yaml(path)
    return resolve_pipeline_config(user, base_dir=base)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and dotted != "labelling.pseudopotentials":
            out += _differences(a, b, dotted + ".")
        elif a != b and dotted not in RERUN_FREE:
            out.append(f"{dotted}: {a!r} before, {b!r} now")
    return out


# ---------------------------------------------------------------------------------- inputs
def _structures(cfg: dict) -> list:
    """The input structures (checked: periodic, elements with a pseudopotential and a
    pseudodensity, no duplicates)."""
    from ase.build import bulk

    import fedft

    s = cfg["structures"]
    gen = s["generate"]
    try:
        if gen is not None:
            if gen["base"] == "fcc_al":
                base = bulk("Al", "fcc", a=FCC_AL_A, cubic=True)
            else:
                base = fedft.read_structures(gen["base"], index=0)[0]
            atoms = fedft.strained(base, gen["n"], max_strain=gen["max_strain"],
                                   stdev=gen["stdev"], seed=cfg["seed"])
        else:
            atoms = fedft.read_structures(s["file"])
    except fedft.FedftError as exc:
        raise PipelineError(str(exc)) from None
    where = s["file"] or gen["base"]
    if len(atoms) <= cfg["n_test"]:
        raise ConfigError(f"n_test = {cfg['n_test']} leaves no training structure: {where} "
                          f"holds {len(atoms)} structure(s) (n_test < structures)")
    seen = {}
    for k, a in enumerate(atoms):
        if len(a) == 0 or not a.pbc.all() or abs(a.cell.volume) < 1e-6:
            raise PipelineError(f"structure {k} of {where} is not a periodic cell with atoms "
                                "(fedft needs pbc on all three axes and a cell)")
        ident = hashlib.sha256(b"".join(x.tobytes() for x in (
            a.numbers, a.cell.array.round(10), a.positions.round(10)))).hexdigest()
        if ident in seen:
            raise PipelineError(f"structures {seen[ident]} and {k} of {where} are identical; "
                                "remove duplicates (each structure is labelled once)")
        seen[ident] = k
    symbols = sorted({x for a in atoms for x in a.get_chemical_symbols()})
    missing = [x for x in symbols if x not in cfg["labelling"]["pseudopotentials"]]
    if missing:
        raise ConfigError(f"labelling.pseudopotentials has no entry for {', '.join(missing)} "
                          f"(elements of the structures: {', '.join(symbols)}); add e.g. "
                          f"{missing[0]}: erf:Z:RC or a .psp8 file")
    for sym, spec in cfg["labelling"]["pseudopotentials"].items():
        try:
            fedft.load_pseudo(spec, sym)
        except fedft.FedftError as exc:
            raise ConfigError(f"labelling.pseudopotentials.{sym}: {exc}") from None
    from ._pseudodensity import read_gpsp
    for name in MODELS:
        path = cfg[name]["features"]["pseudodensity"]
        try:
            pset = read_gpsp(path)
        except CemtError as exc:
            raise ConfigError(f"{name}.features.pseudodensity: {exc}") from None
        lacking = [x for x in symbols if x not in list(pset)]
        if lacking:
            raise ConfigError(f"{name}.features.pseudodensity {path} has no pseudodensity for "
                              f"{', '.join(lacking)}; give a .gpsp file that covers every "
                              "element of the structures")
    return atoms


def _prepare_output(out: Path, cfg: dict) -> bool:
    """Check that ``out`` can be written and holds nothing else than an earlier run of the
    same configuration; returns whether it holds an earlier run. Creates nothing."""
    where = f"cannot use the output directory {out}"
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise PipelineError(f"{where}: a file of that name exists; remove it or choose "
                                "another -o")
        saved = out / CONFIG_NAME
        if not saved.is_file():
            if any(out.iterdir()):
                raise PipelineError(f"{where}: it exists, is not empty and holds no "
                                    f"{CONFIG_NAME} of an earlier cemt pipeline run; choose "
                                    "another -o or empty it")
            if not os.access(out, os.W_OK | os.X_OK):
                raise PipelineError(f"{where}: it is not writable")
            return False
        try:
            old = yaml.safe_load(saved.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{where}: its {CONFIG_NAME} cannot be read ({exc}); remove "
                                "the directory or choose another -o") from None
        diffs = _differences(old if isinstance(old, dict) else {}, cfg)
        if diffs:
            raise PipelineError(f"{where}: it holds a run with other settings ("
                                + "; ".join(diffs) + "). Rerun with the same configuration "
                                "to resume it, or choose another -o")
        if not os.access(out, os.W_OK | os.X_OK):
            raise PipelineError(f"{where}: it is not writable")
        return True
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is None or not blocker.is_dir():
        raise PipelineError(f"{where}: {blocker} is a file, not a directory")
    if not os.access(blocker, os.W_OK | os.X_OK):
        raise PipelineError(f"{where}: directory {blocker} is not writable")
    return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- stages
def _label(structures: list, n_train: int, cfg: dict, path: Path, progress: bool) -> dict:
    """Label the training then the test structures into ``path``; check the split."""
    from tqdm import tqdm

    import fedft

    lab = cfg["labelling"]
    bar = tqdm(total=len(structures), desc="labelling", unit="structure",
               disable=not progress)
    counts = {"computed": 0, "skipped": 0, "recovered": 0}
    keys = []

    def callback(outcome, done, total):
        if outcome is None:
            bar.update(call_size[0] - total)  # already labelled
        else:
            bar.update(1)

    call_size = [0]
    try:
        for part in (structures[:n_train], structures[n_train:]):
            call_size[0] = len(part)
            summary = fedft.label(part, path, lab["pseudopotentials"], lab["kinetic_lambda"],
                                  preset=lab["preset"], workers=lab["workers"],
                                  progress=callback)
            for k in counts:
                counts[k] += getattr(summary, k)
            keys.append(summary.keys)
            if summary.failed:
                reasons = "; ".join(f"{k[:12]}: {r}" for k, r in
                                    list(summary.failures.items())[:3])
                raise PipelineError(f"{summary.failed} structure(s) failed to label ({reasons})"
                                    f"; they are recorded in {path} and a rerun retries them")
    except fedft.FedftError as exc:
        raise PipelineError(f"labelling into {path} failed: {exc}") from None
    finally:
        bar.close()
    with fedft.read_dataset(path) as ds:
        stored = ds.keys()
    train_keys, test_keys = keys
    if len(stored) != len(structures) or set(stored[:n_train]) != set(train_keys) \
            or set(stored[n_train:]) != set(test_keys):
        raise PipelineError(f"{path} holds {len(stored)} structures, not the {n_train} "
                            f"training then {len(structures) - n_train} test structures of "
                            "this configuration; remove it (or the whole output directory) "
                            "and rerun")
    logger.info("dataset %s: %s", path, counts)
    return counts


def _training_finished(cfg: dict) -> bool:
    """Whether the run in ``cfg['output']`` already ended (all epochs, or stopped early)."""
    import torch

    out = Path(cfg["output"])
    ckpt, model = out / "checkpoint.pt", out / "model.pt"
    if not cfg["training"]["resume"] or not ckpt.is_file() or not model.is_file():
        return False
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        epoch, bad = int(state["epoch"]), int(state["bad_epochs"])
    except Exception:  # a damaged checkpoint: cemt.train reports it
        return False
    stop = cfg["training"]["early_stopping"]
    return epoch >= cfg["training"]["epochs"] or (stop is not None and bad >= stop)


def _train(name: str, cfg: dict, stage) -> dict:
    from ._train import train

    if _training_finished(cfg):
        stage(f"the {name} model in {cfg['output']} finished training earlier: reused")
        rows = (Path(cfg["output"]) / "metrics.jsonl").read_text().splitlines()
        return {"epochs": len(rows), "trained_now": False}
    stage(f"training the {name} model into {cfg['output']}")
    summary = train(cfg)
    return {"epochs": summary["epochs"], "trained_now": True}


def _compare(name: str, model: Path, data: Path, report: Path, select: str, slices: int,
             previous: dict | None, progress: bool, stage) -> dict:
    """Run cemt.compare unless ``previous`` shows the same report of the same model file."""
    from ._compare import compare

    digest = _sha256(model)
    if previous is not None and previous.get("model_sha256") == digest \
            and previous.get("select") == select and previous.get("slices") == slices:
        with contextlib.suppress(OSError, ValueError, KeyError):
            s = json.loads((report / "summary.json").read_text())
            if s.get("format") == "cemt-compare-report":
                stage(f"the report {report} of the {name} model is up to date: reused")
                return {"overall": s["overall"], "model_sha256": digest, "compared_now": False}
    stage(f"comparing the {name} model with DFT on the test structures into {report}")
    s = compare(model, data, report, select=select, max_slices=slices, progress=progress)
    return {"overall": s["overall"], "model_sha256": digest, "compared_now": True}


def pipeline(config: dict | None = None, output=None, progress: bool = True,
             base_dir=None) -> dict:
    """Label a dataset, train the grid and atom models, compare both on held-out structures.

    Parameters
    ----------
    config : dict, optional
        Pipeline configuration (:data:`SCHEMA`; parsed YAML); None: the built-in example
        (32 strained and rattled 4-atom fcc Al cells, 6 of them held out, erf pseudopotential,
        λ = 1, fast preset).
    output : str or Path, optional
        Output directory; overrides ``config["output"]``.
    progress : bool
        Show progress bars (labelling, featurizing, epochs, compare); False also switches off
        the training bars that ``training.progress`` would show.
    base_dir : str or Path, optional
        Directory that relative paths of ``config`` are relative to; default the current
        directory (the CLI passes the configuration file's directory).

    Returns
    -------
    dict
        The contents of ``summary.json``: ``output`` (absolute), ``code_version``,
        ``dataset`` (``path``, ``n_structures``, ``n_train``, ``n_test``, ``test_select``,
        ``labelling`` counts), ``models`` (for ``grid`` and ``atom``: ``model`` and ``report``
        paths relative to ``output``, ``epochs``, ``trained_now``, ``test`` = the overall
        errors of the report: ``energy_mae_mev_atom``, ``force_mae_mev_A``,
        ``density_nmae_pct``, ``energy_density_nmae_pct`` (None for the atom model), ...),
        ``seconds`` per stage and ``report`` (``report.html``). ``labelling`` counts,
        ``trained_now``, ``compared_now`` and ``seconds`` describe this call (a rerun that
        reuses everything reports zero computed structures and False).

    Raises
    ------
    ConfigError
        The configuration is invalid (nothing is written).
    PipelineError
        The output directory cannot be used or the structure file read (nothing is written),
        or labelling failed.
    CemtError
        Training or comparison failed (e.g. a damaged checkpoint).
    """
    import torch

    import fedft

    t_start = time.perf_counter()
    user = copy.deepcopy(config) if config is not None else {}
    if output is not None:
        if not isinstance(user, dict):
            raise ConfigError(f"the configuration must be a mapping of keys, got "
                              f"{type(user).__name__}")
        user["output"] = str(Path(os.path.abspath(Path(output).expanduser())))
    cfg = resolve_pipeline_config(user, base_dir)
    out = Path(cfg["output"])
    structures = _structures(cfg)
    resumed = _prepare_output(out, cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / CONFIG_NAME,
                      f"# cemt pipeline: resolved configuration (code version "
                      f"{fedft.__version__}); rerun with\n#   cemt pipeline {CONFIG_NAME} -o "
                      f"{out}\n" + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    except OSError as exc:
        raise PipelineError(f"cannot use the output directory {out}: {exc}") from None
    logger.info("cemt pipeline into %s (%s): %d structures, %d test", out,
                "resumed" if resumed else "new", len(structures), cfg["n_test"])
    previous = None
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((out / "summary.json").read_text())
    threads = torch.get_num_threads()
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        summary = _run(cfg, structures, previous, progress, t_start)
    finally:
        torch.set_num_threads(threads)
    return summary


def _run(cfg: dict, structures: list, previous: dict | None, progress: bool,
         t_start: float) -> dict:
    """The four stages of :func:`pipeline` (the output directory is prepared)."""
    from tqdm import tqdm

    import fedft

    out = Path(cfg["output"])
    n, n_test = len(structures), cfg["n_test"]
    n_train = n - n_test

    def stage(text):
        logger.info(text)
        if progress:
            tqdm.write(f"cemt pipeline: {text}")

    seconds = {}
    dataset = out / DATASET_NAME
    t0 = time.perf_counter()
    stage(f"labelling {n} structures into {dataset}")
    counts = _label(structures, n_train, cfg, dataset, progress)
    seconds["labelling"] = time.perf_counter() - t0

    select = f"{n_train}:{n}"
    models = {}
    for name in MODELS:
        tcfg = _train_config(name, cfg[name], cfg["seed"], out, out / name, n_train)
        if not progress:
            tcfg["training"]["progress"] = False
        t0 = time.perf_counter()
        models[name] = {"kind": name, "labels": tcfg["training"]["labels"],
                        "model": f"{name}/model.pt", "metrics": f"{name}/metrics.csv",
                        "report": f"report-{name}/report.html", **_train(name, tcfg, stage)}
        seconds[f"train_{name}"] = time.perf_counter() - t0
    for name in MODELS:
        t0 = time.perf_counter()
        prev = (previous or {}).get("models", {}).get(name)
        if prev is not None:
            prev = {**prev, "select": (previous.get("dataset") or {}).get("test_select"),
                    "slices": prev.get("slices")}
        slices = cfg["compare"]["slices"] if name == "grid" else 0
        c = _compare(name, out / name / "model.pt", dataset, out / f"report-{name}", select,
                     slices, prev, progress, stage)
        models[name].update(test=c["overall"], model_sha256=c["model_sha256"],
                            compared_now=c["compared_now"], slices=slices)
        seconds[f"compare_{name}"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    summary = {
        "format": PIPELINE_FORMAT, "format_version": PIPELINE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code_version": fedft.__version__, "output": str(out), "config": CONFIG_NAME,
        "report": "report.html",
        "dataset": {"path": DATASET_NAME, "n_structures": n, "n_train": n_train,
                    "n_test": n_test, "test_select": select, "labelling": counts,
                    "source": cfg["structures"]["file"] or "generated"},
        "models": models, "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    try:
        _write_atomic(out / "report.html", _html(summary, cfg))
        _write_atomic(out / "summary.json", json.dumps(_finite(summary), indent=1))
    except OSError as exc:
        raise PipelineError(f"cannot write the report into {out}: {exc}") from None
    logger.info("cemt pipeline done in %.1f s: %s", seconds["total"], out / "report.html")
    return summary


# ---------------------------------------------------------------------------------- report
#: Headline columns: summary key, header.
HEADLINE = (("energy_mae_mev_atom", "energy MAE (meV/atom)"),
            ("force_mae_mev_A", "force MAE (meV/Å)"),
            ("density_nmae_pct", "ρ NMAE (%)"),
            ("energy_density_nmae_pct", "ε NMAE (%)"))

_TITLES = {"grid": "grid-centred (CEMT: fields + energies + forces)",
           "atom": "atom-centred baseline (energies + forces)"}


def _num(v) -> str:
    return "n/a" if v is None else f"{float(v):.4g}"


def headline_table(summary: dict) -> str:
    """The headline errors of both models as a plain-text table (what ``cemt pipeline``
    prints)."""
    lines = [f"{'model':<8}{'E MAE meV/atom':>16}{'F MAE meV/Å':>14}{'rho NMAE %':>12}"
             f"{'eps NMAE %':>12}"]
    for name, m in summary["models"].items():
        t = m["test"]
        lines.append(f"{name:<8}{_num(t['energy_mae_mev_atom']):>16}"
                     f"{_num(t['force_mae_mev_A']):>14}{_num(t['density_nmae_pct']):>12}"
                     f"{_num(t['energy_density_nmae_pct']):>12}")
    return "\n".join(lines)


def _html(summary: dict, cfg: dict) -> str:
    esc = html.escape
    d = summary["dataset"]
    lab = cfg["labelling"]
    gen = cfg["structures"]["generate"]
    if gen is not None:
        base = "conventional fcc Al (a = 4.05 Å)" if gen["base"] == "fcc_al" else gen["base"]
        source = (f"{d['n_structures']} structures generated by fedft.strained from {base}"
                  f" (max strain {gen['max_strain']}, rattle {gen['stdev']} Å, seed "
                  f"{cfg['seed']})")
    else:
        source = f"{d['n_structures']} structures from {cfg['structures']['file']}"
    rows = []
    for name, m in summary["models"].items():
        t = m["test"]
        rows.append("<tr><td style='text-align:left'>"
                    f"<a href='{esc(m['report'])}'>{esc(name)}</a>: {esc(_TITLES[name])}</td>"
                    + "".join(f"<td>{esc(_num(t[k]))}</td>" for k, _ in HEADLINE)
                    + f"<td>{m['epochs']}</td></tr>")
    figures = []
    for name, m in summary["models"].items():
        rdir = Path(m["report"]).parent.as_posix()
        for png in ("parity_energy.png", "parity_forces.png"):
            figures.append(f"<figure><a href='{esc(m['report'])}'><img src='{esc(rdir)}/{png}' "
                           f"alt='{esc(name)} {png}'></a><figcaption>{esc(name)}: "
                           f"{esc(png)}</figcaption></figure>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>cemt pipeline</title>",
        ("<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}"
         "table{border-collapse:collapse;margin:0.5em 0}"
         "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
         "img{width:280px}figure{margin:0.3em}figcaption{font-size:0.8em;color:#555}"
         ".row{display:flex;flex-wrap:wrap}</style></head><body>"),
        "<h1>cemt pipeline: grid-centred model against the atom-centred baseline</h1>",
        "<p>" + "<br>".join([
            f"data: {esc(source)}, labelled by fedft (TF + {lab['kinetic_lambda']}·vW + LDA, "
            f"preset {esc(lab['preset'])}, pseudopotentials "
            f"{esc(', '.join(f'{k} {v}' for k, v in lab['pseudopotentials'].items()))}) "
            f"into <a href='{esc(d['path'])}'>{esc(d['path'])}</a>",
            f"training: the first {d['n_train']} structures; test: the last {d['n_test']} "
            f"(dataset positions {esc(d['test_select'])}), never seen in training",
            f"code version {esc(summary['code_version'])}, written {esc(summary['created'])}; "
            f"configuration <a href='{CONFIG_NAME}'>{CONFIG_NAME}</a>, all numbers "
            "<a href='summary.json'>summary.json</a>"]) + "</p>",
        "<h2>Test errors</h2>",
        "<table><tr><th>model (full report)</th>"
        + "".join(f"<th>{esc(h)}</th>" for _, h in HEADLINE) + "<th>epochs</th></tr>",
        *rows, "</table>",
        ("<p>Errors are model − DFT on the test structures, as <code>cemt evaluate</code> "
         "computes them: energy MAE per atom over structures, force MAE over all components, "
         "NMAE = 100 ∫|Δf| / ∫|f| of the density ρ and the energy density ε (grid model "
         "only; the atom model predicts no fields).</p>"),
        "<p>Training curves: " + ", ".join(
            f"<a href='{esc(m['metrics'])}'>{esc(m['metrics'])}</a>"
            for m in summary["models"].values()) + ".</p>",
        "<h2>Parity plots</h2>", '<div class="row">', *figures, "</div>",
        "</body></html>\n",
    ]
    return "\n".join(parts)
