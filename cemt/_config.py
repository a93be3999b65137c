"""Training configuration: a YAML file whose every key is documented here.

:data:`SCHEMA` lists each key with its default, its check and its description;
:func:`default_config_text` renders it as a commented YAML file (``cemt train --template``).
Unknown keys and bad values raise :class:`~cemt.ConfigError` naming the dotted key. Relative
paths are resolved against the directory of the configuration file.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import yaml

from ._errors import ConfigError

__all__ = ["SCHEMA", "LABELS", "default_config", "default_config_text", "resolve_config",
           "load_config", "save_config", "default_pseudodensity", "schema_defaults",
           "merge_schema", "yaml_scalar", "read_yaml"]

#: Label sets a training run can use (any non-empty subset).
LABELS = ("fields", "energies", "forces")


def default_pseudodensity() -> Path:
    """``NC-SR.gpsp`` in the shared data directory beside the repository (repo/../shared/data)."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "NC-SR.gpsp"


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _nonneg_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _fraction(v):
    return _nonneg_number(v) and v < 1


def _optional(check):
    return lambda v: v is None or check(v)


def _one_of(*choices):
    return lambda v: v in choices


def _int_list(v):
    return isinstance(v, list) and len(v) > 0 and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v)


def _widths(v):
    return isinstance(v, list) and all(_positive_int(x) for x in v)


def _number_list(v):
    return isinstance(v, list) and len(v) > 0 and all(_positive_number(x) for x in v)


def _labels(v):
    return isinstance(v, list) and len(v) > 0 and all(x in LABELS for x in v) \
        and len(set(v)) == len(v)


def _path(v):
    return isinstance(v, str) and len(v) > 0


def _bool(v):
    return isinstance(v, bool)


#: section -> key -> (default, check, description). Description ends with the allowed values.
SCHEMA = {
    "seed": (0, _nonneg_int, "Seed of weight initialisation, data split and point sampling "
                             "(integer >= 0)."),
    "output": ("cemt-run", _path, "Output directory: resolved config, metrics.csv, "
                                  "metrics.jsonl, checkpoint.pt, model.pt."),
    "data": {
        "train": (None, _path, "fedft dataset (HDF5) to train on (required)."),
        "validation": (None, _optional(_path), "Separate validation dataset; null: hold out "
                                               "validation_fraction of train."),
        "validation_fraction": (0.2, _fraction, "Fraction of train held out for validation "
                                                "and early stopping when validation is null "
                                                "(0 <= f < 1; 0: no validation)."),
        "max_structures": (None, _optional(_positive_int),
                           "Use only the first N structures of train (null: all)."),
    },
    "model": {
        "kind": ("grid", _one_of("grid", "atom", "bond"),
                 "Reference points: grid (mesh nodes, E = Σ w_i ε_i), atom (E = Σ e_a) or bond "
                 "(E = Σ f_c e_b over bond midpoints)."),
        "widths": ([64, 64], _widths, "Hidden layer widths of the network."),
        "activation": ("silu", _one_of("silu", "tanh"), "Activation: silu or tanh."),
        "dtype": ("float32", _one_of("float32", "float64"),
                  "Precision of features and network: float32 or float64."),
        "bond_cutoff": (3.0, _positive_number, "Bond length cutoff, Å (bond model)."),
        "reference": ("fit", _one_of("fit", "none"),
                      "Grid model trained on fields: fit: learn the energy density on top of a "
                      "fixed per-element radial reference (Gaussians fitted to the training "
                      "fields), which carries the deep peaks on the nuclei and no force; none: "
                      "learn the whole field."),
        "grid_quadrature": ("trapezoid", _one_of("trapezoid", "nodal"),
                            "Grid model energy quadrature: trapezoid (weight V/N on the uniform "
                            "node grid of a periodic mesh; smallest egg-box) or nodal (the "
                            "dataset's nodal weights)."),
    },
    "features": {
        "orders": ([-1, 0, 1, 2, 3, 4], _int_list, "GMP orders (-1: model density; 0..10)."),
        "sigmas": ([0.25, 0.5, 0.75, 1.0, 1.5, 2.0], _number_list, "GMP probe widths σ, Å."),
        "pseudodensity": (None, _optional(_path),
                          "Pseudodensity .gpsp file; null: ../shared/data/NC-SR.gpsp beside "
                          "the repository. Its primitives are stored in the model file."),
        "overlap_threshold": (1e-8, _positive_number,
                              "Drop primitive contributions below this size (sets cutoffs)."),
        "norm": ("square", _one_of("square", "sqrt"),
                 "Radial norm of the order-l features: square (Σ w μ², smooth everywhere) or "
                 "sqrt (the GMP definition, with a cusp where the multipoles vanish, e.g. at "
                 "nuclei, which makes a grid model's energy ripple with the grid)."),
    },
    "training": {
        "labels": (["fields", "energies", "forces"], _labels,
                   "Label sets in the loss, any non-empty subset of [fields, energies, forces]; "
                   "fields = energy density + density (grid model only)."),
        "epochs": (100, _positive_int, "Maximum number of epochs."),
        "batch_size": (4, _positive_int, "Structures per optimisation step (over all "
                                         "processes)."),
        "points_per_structure": (1024, _optional(_positive_int),
                                 "Random reference points per structure per step for the field "
                                 "losses (null: all). Energies and forces always use all."),
        "fields_warmup": (0, _nonneg_int,
                          "Epochs at the start that train on the fields alone when fields and "
                          "energies/forces are both in the labels: the network first learns "
                          "the energy-density field, whose sharp ionic peaks a force loss "
                          "alone keeps it from forming (0: none). No best model, schedule or "
                          "early stopping during the warm-up."),
        "lr": (1e-3, _positive_number, "Adam learning rate."),
        "weight_decay": (0.0, _nonneg_number, "Adam weight decay."),
        "lr_schedule": ("plateau", _one_of("plateau", "cosine", "none"),
                        "plateau: multiply lr by lr_factor after lr_patience epochs without "
                        "validation improvement; cosine: anneal to min_lr over epochs; none."),
        "lr_factor": (0.5, _fraction, "Factor of the plateau schedule (0 < f < 1)."),
        "lr_patience": (10, _positive_int, "Epochs of the plateau schedule."),
        "min_lr": (1e-6, _nonneg_number, "Lowest learning rate."),
        "early_stopping": (30, _optional(_positive_int),
                           "Stop after this many epochs without validation improvement "
                           "(null: never)."),
        "resume": (True, _bool, "Continue from output/checkpoint.pt when it exists."),
        "device": ("auto", _one_of("auto", "cpu", "cuda"), "auto: CUDA when present."),
        "progress": (True, _bool, "Show tqdm progress bars."),
    },
    "loss": {
        "energies_weight": (1.0, _nonneg_number, "Weight of the per-atom energy term."),
        "energies_scale": (0.01, _positive_number,
                           "Energy error scale, eV/atom: term = mean((ΔE/N / scale)²)."),
        "forces_weight": (1.0, _nonneg_number, "Weight of the force term."),
        "forces_scale": (0.1, _positive_number,
                         "Force error scale, eV/Å: term = mean((ΔF / scale)²) per component."),
        "energy_density_weight": (1.0, _nonneg_number, "Weight of the energy-density term."),
        "energy_density_scale": (0.1, _positive_number,
                                 "Energy-density error scale, eV/Å³: term ≈ ∫(Δε)² / V / scale²."),
        "density_weight": (1.0, _nonneg_number, "Weight of the electron-density term."),
        "density_scale": (0.01, _positive_number,
                          "Density error scale, e/Å³: term ≈ ∫(Δρ)² / V / scale²."),
    },
}


def schema_defaults(schema: dict) -> dict:
    """The nested defaults of a schema of ``key: (default, check, doc)`` entries."""
    return {k: schema_defaults(v) if isinstance(v, dict) else copy.deepcopy(v[0])
            for k, v in schema.items()}


def merge_schema(schema: dict, values, prefix: str = "") -> dict:
    """Check ``values`` against ``schema`` and fill in the defaults (recursively).

    Raises
    ------
    ConfigError
        A section that is not a mapping, an unknown key (named with its dotted path and the
        allowed keys) or a value its check refuses.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the configuration'} must be a mapping of "
                          f"keys, got {values!r}")
    unknown = sorted(set(values) - set(schema), key=str)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {[prefix + str(k) for k in unknown]}; "
                          f"allowed under {prefix.rstrip('.') or 'the top level'}: "
                          f"{sorted(schema)}")
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            sub = values.get(key, {})
            out[key] = merge_schema(spec, {} if sub is None else sub, f"{prefix}{key}.")
            continue
        default, check, doc = spec
        if key not in values:
            out[key] = copy.deepcopy(default)
            continue
        value = values[key]
        if isinstance(default, float) and isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-3 as a string
                value = float(value)
        if not check(value):
            raise ConfigError(f"{prefix}{key} = {value!r} is invalid: {doc}")
        out[key] = copy.deepcopy(value)
    return out


def yaml_scalar(value) -> str:
    """One value as inline YAML (for commented templates)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text[:-3].strip() if text.endswith("...") else text


def read_yaml(path) -> tuple[dict, Path]:
    """Read a YAML configuration file.

    Returns
    -------
    user : dict
        The parsed mapping (``{}`` for an empty file).
    base_dir : Path
        The file's directory (relative paths in the file are taken from there).

    Raises
    ------
    ConfigError
        Missing, unreadable or not valid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        user = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return ({} if user is None else user), path.resolve().parent


def default_config() -> dict:
    """The configuration with every default (``data.train`` is None and must be set)."""
    return schema_defaults(SCHEMA)


def default_config_text() -> str:
    """A commented YAML file documenting every key with its default."""
    lines = ["# cemt training configuration: every key with its default value.", ""]

    def emit(node, indent):
        for key, value in node.items():
            pad = "  " * indent
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:")
                emit(value, indent + 1)
            else:
                default, _, doc = value
                lines.append(f"{pad}{key}: {yaml_scalar(default)}  # {doc}")
    emit(SCHEMA, 0)
    return "\n".join(lines) + "\n"


def resolve_config(user: dict, base_dir: Path | None = None) -> dict:
    """Check a user configuration against :data:`SCHEMA` and fill in the defaults.

    Parameters
    ----------
    user : dict
        Parsed YAML (nested dicts).
    base_dir : Path, optional
        Relative paths (data, output, pseudodensity) are taken relative to it.

    Returns
    -------
    dict
        The complete configuration, paths absolute.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or value, missing ``data.train``, or labels the model kind
        cannot use.
    """
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise ConfigError(f"the configuration must be a mapping of keys, got "
                          f"{type(user).__name__}")

    cfg = merge_schema(SCHEMA, user)
    if cfg["data"]["train"] is None:
        raise ConfigError("data.train is required: the fedft dataset (HDF5) to train on")
    if "fields" in cfg["training"]["labels"] and cfg["model"]["kind"] != "grid":
        raise ConfigError(f"training.labels contains 'fields', which only the grid model can "
                          f"learn; model.kind is {cfg['model']['kind']!r}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def absolute(p):
        return None if p is None else str((base / Path(p).expanduser()).resolve())

    cfg["output"] = absolute(cfg["output"])
    cfg["data"]["train"] = absolute(cfg["data"]["train"])
    cfg["data"]["validation"] = absolute(cfg["data"]["validation"])
    pd = cfg["features"]["pseudodensity"]
    cfg["features"]["pseudodensity"] = absolute(pd) if pd is not None \
        else str(default_pseudodensity())
    return cfg


def load_config(path) -> dict:
    """Read a YAML configuration file and :func:`resolve_config` it (paths relative to the
    file's directory)."""
    user, base = read_yaml(path)
    return resolve_config(user, base_dir=base)


def save_config(cfg: dict, path) -> None:
    """Write a resolved configuration as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
