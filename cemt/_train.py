"""Training loop, model files and checkpoints.

Loss (each term switched on by ``training.labels`` and weighted by ``loss.<term>_weight``)::

    energies        mean_s ((E_s^pred − E_s) / N_s / energies_scale)²
    forces          mean_s mean_components ((F^pred − F) / forces_scale)²
    energy_density  mean_s Σ_i w_i (ε_i^pred − ε_i)² / Σ_i w_i / energy_density_scale²
    density         mean_s Σ_i w_i (ρ_i^pred − ρ_i)² / Σ_i w_i / density_scale²

The field sums run over ``points_per_structure`` points drawn at random each step (so they
estimate ∫(Δε)²/V and ∫(Δρ)²/V); energies and forces always use every point. Random numbers
derive from ``(seed, epoch, rank)``, so a run resumed from its checkpoint continues exactly as
the uninterrupted run would.

Files in ``output``: ``config.yaml`` (resolved), ``metrics.csv`` and ``metrics.jsonl`` (one row
per epoch), ``checkpoint.pt`` (latest state, for resume) and ``model.pt`` (best validation
loss): a ``torch.save`` of a dict with ``format`` = "cemt-model", ``config`` (model settings,
feature settings with the pseudodensity primitives, data spec), ``scaler`` and ``state_dict``.
All are written atomically.

Data parallel: launched by ``torchrun``, each process takes its share of every batch and the
gradients are averaged over processes with ``all_reduce`` after each backward pass (gloo on
CPU, NCCL on CUDA). :class:`~torch.nn.parallel.DistributedDataParallel`'s bucketed reducer is
not used: it expects one forward per backward, while a step here runs the network once per
structure (and differentiates it for forces), and a process may get no structure in a short
last batch. Rank 0 writes the files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ._config import save_config
from ._data import build_tensors, check_compatible, load_records, open_dataset, \
    sample_points, split_indices
from ._errors import DataError, DataMismatchError, ModelFileError
from ._models import CemtModel, build_model, feature_settings

__all__ = ["save_model", "load_model", "Trainer", "train", "TERMS"]

logger = logging.getLogger(__name__)

MODEL_FORMAT = "cemt-model"
CHECKPOINT_FORMAT = "cemt-checkpoint"
FORMAT_VERSION = 1

#: Loss terms and the label set that switches each on.
TERMS = {"energies": "energies", "forces": "forces", "energy_density": "fields",
         "density": "fields"}

METRIC_COLUMNS = ["epoch", "lr", "seconds", "train_loss"] + [f"train_{t}" for t in TERMS] + \
    ["val_loss"] + [f"val_{t}" for t in TERMS] + \
    ["val_energy_mae_mev_atom", "val_force_mae_mev_A", "val_density_nmae_pct",
     "val_energy_density_nmae_pct", "best"]


# ---------------------------------------------------------------------------------- files
def _atomic_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def model_payload(model: CemtModel, extra: dict | None = None) -> dict:
    """The dict saved in a model file (see the module notes)."""
    return {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "config": model.config,
            "scaler": model.scaler.state_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            **(extra or {})}


def save_model(model: CemtModel, path, extra: dict | None = None) -> None:
    """Save standardisation, model config and weights together in one file, atomically.

    Parameters
    ----------
    model : CemtModel
    path : str or Path
    extra : dict, optional
        More JSON-like entries (e.g. metrics).
    """
    _atomic_save(model_payload(model, extra), Path(path))


def model_from_payload(payload: dict, source: str = "<payload>") -> CemtModel:
    """Rebuild a trained model from :func:`model_payload`."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{source} is not a cemt model file (no format={MODEL_FORMAT!r})")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{source} has model format version {payload['format_version']}, "
                             "newer than this cemt reads; upgrade cemt")
    model = build_model(payload["config"])
    model.scaler.load_state_dict(payload["scaler"])
    model.load_state_dict(payload["state_dict"])
    return model


def load_model(path) -> CemtModel:
    """Load a model saved by :func:`save_model` (or the ``model.pt`` of a training run).

    Raises
    ------
    ModelFileError
        Missing, unreadable or not a cemt model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ModelFileError(f"cannot read {path} as a cemt model file ({exc})") from None
    model = model_from_payload(payload, str(path))
    model.eval()
    return model


# ---------------------------------------------------------------------------------- loss
def structure_loss(model, s, labels, lcfg: dict, generator, points: int | None, forward=None):
    """Loss terms of one structure (dict term -> scalar tensor) and its predictions.

    Parameters
    ----------
    model : CemtModel
    s : StructureTensors
    labels : collection of str
    lcfg : dict
        The ``loss`` section of the configuration.
    generator : torch.Generator or None
        Draws the field points (None: all points).
    points : int or None
        Points per structure for the field terms.
    forward : callable, optional
        Point function to use instead of ``model`` (a DDP wrapper).

    Returns
    -------
    terms : dict
    pred : dict
        ``energy`` (eV) and ``forces`` (N, 3) when computed.
    """
    terms, pred = {}, {}
    fwd = forward or model
    use_e, use_f, use_fields = "energies" in labels, "forces" in labels, "fields" in labels
    eps_all = rho_all = None
    if use_e or use_f:
        if use_f and s.jacobian is None:
            raise DataError("forces are in the labels but the structure tensors have no "
                            "Jacobian")
        energy, forces, eps_all, rho_all = model.energy_forces_from_tensors(
            s.features, s.weights, s.jacobian if use_f else None,
            s.dweights if use_f else None, create_graph=torch.is_grad_enabled(), forward=fwd)
        pred["energy"] = energy
        if use_e:
            err = (energy - s.energy) / s.n_atoms / lcfg["energies_scale"]
            terms["energies"] = err * err
        if use_f:
            pred["forces"] = forces
            terms["forces"] = (((forces - s.forces) / lcfg["forces_scale"]) ** 2).mean()
    if use_fields:
        if s.energy_density is None:
            raise DataError(f"structure {s.key} has no field targets")
        idx = sample_points(s.n_points, points, generator) if generator is not None else None
        if idx is None and eps_all is not None:
            eps, rho = eps_all, rho_all
        else:
            eps, rho = fwd(s.features if idx is None else s.features[idx])
        sel = (lambda t: t) if idx is None else (lambda t: t[idx])
        w = sel(s.weights)
        wsum = w.sum()
        terms["energy_density"] = (w * (eps - sel(s.energy_density)) ** 2).sum() / wsum / \
            lcfg["energy_density_scale"] ** 2
        terms["density"] = (w * (rho - sel(s.density)) ** 2).sum() / wsum / \
            lcfg["density_scale"] ** 2
    return terms, pred


def total_loss(terms: dict, lcfg: dict) -> torch.Tensor:
    """Σ weight_t · term_t."""
    return sum(lcfg[f"{t}_weight"] * v for t, v in terms.items())


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run from a resolved configuration (:func:`cemt.load_config`).

    Everything that can be wrong with the inputs is checked in :meth:`prepare`, before the
    first optimisation step.

    Parameters
    ----------
    cfg : dict
        Resolved configuration.
    rank, world_size : int
        Process rank and count (data parallel); read from ``torch.distributed`` when
        initialised.
    """

    def __init__(self, cfg: dict, rank: int | None = None, world_size: int | None = None):
        self.cfg = cfg
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world = world_size if world_size is not None else \
            (dist.get_world_size() if distributed else 1)
        self.distributed = distributed and self.world > 1
        self.out = Path(cfg["output"])
        self.labels = list(cfg["training"]["labels"])
        self.model: CemtModel | None = None
        self.history: list[dict] = []

    # -------------------------------------------------------------- preparation
    def prepare(self) -> None:
        """Read and check data, build (or restore) the model, featurize, fit standardisation."""
        cfg, tcfg = self.cfg, self.cfg["training"]
        fields = "fields" in self.labels or cfg["model"]["kind"] == "grid"
        spec, records = load_records(cfg["data"]["train"], None, fields=fields,
                                     max_structures=cfg["data"]["max_structures"])
        if cfg["data"]["validation"]:
            with open_dataset(cfg["data"]["validation"]) as ds:
                check_compatible(spec, ds)
            _, val_records = load_records(cfg["data"]["validation"], spec, fields=fields)
            train_records = records
        else:
            tr, va = split_indices(len(records), cfg["data"]["validation_fraction"], cfg["seed"])
            train_records = [records[i] for i in tr]
            val_records = [records[i] for i in va]
        self.n_train, self.n_val = len(train_records), len(val_records)
        if tcfg["batch_size"] < self.world:
            raise DataError(f"training.batch_size = {tcfg['batch_size']} is smaller than the "
                            f"{self.world} processes; every process needs a structure")
        symbols = sorted({s for r in train_records for s in r.atoms.get_chemical_symbols()})
        fcfg, mcfg = cfg["features"], cfg["model"]
        features = feature_settings(fcfg["orders"], fcfg["sigmas"], fcfg["pseudodensity"],
                                    symbols, fcfg["overlap_threshold"], fcfg["norm"])
        reference = None
        if mcfg["kind"] == "grid" and mcfg["reference"] == "fit" and "fields" in self.labels:
            from ._reference import fit_reference
            reference = fit_reference(train_records)
        torch.manual_seed(cfg["seed"])
        self.model = build_model({"kind": mcfg["kind"], "features": features,
                                  "reference": reference,
                                  "widths": mcfg["widths"], "activation": mcfg["activation"],
                                  "dtype": mcfg["dtype"], "bond_cutoff": mcfg["bond_cutoff"],
                                  "quadrature": mcfg["grid_quadrature"],
                                  "data_spec": spec})
        for rec in val_records:
            self.model.check_elements(rec.atoms.numbers)
        self.checkpoint = None
        ckpt_path = self.out / "checkpoint.pt"
        if tcfg["resume"] and ckpt_path.is_file():
            self.checkpoint = self._read_checkpoint(ckpt_path)
        self.device = self._device(tcfg["device"])
        forces = "forces" in self.labels
        logger.info("featurizing %d training and %d validation structures", self.n_train,
                    self.n_val)
        self.train_set = build_tensors(self.model, train_records, forces, tcfg["progress"]
                                       and self.rank == 0)
        self.val_set = build_tensors(self.model, val_records, forces, tcfg["progress"]
                                     and self.rank == 0)
        if self.checkpoint is not None:
            self.model.scaler.load_state_dict(self.checkpoint["model"]["scaler"])
            self.model.load_state_dict(self.checkpoint["model"]["state_dict"])
        else:
            self._fit_normalisation()
        self.model.to(self.device)
        for s in self.train_set + self.val_set:
            for name in ("forces", "features", "weights", "jacobian", "dweights",
                         "energy_density", "density", "reference"):
                value = getattr(s, name)
                if value is not None:
                    setattr(s, name, value.to(self.device))

    def _device(self, name: str) -> torch.device:
        if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise DataError("training.device = cuda but CUDA is not available")
            return torch.device("cuda", self.rank % torch.cuda.device_count())
        return torch.device("cpu")

    def _read_checkpoint(self, path: Path) -> dict:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"cannot read checkpoint {path} ({exc}); delete it or set "
                                 "training.resume: false") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path} is not a cemt checkpoint")
        old = ckpt["config"]
        diffs = [f"{sec}.{k}: checkpoint {old[sec].get(k)!r}, config {self.cfg[sec][k]!r}"
                 for sec in ("model", "features") for k in self.cfg[sec]
                 if old[sec].get(k) != self.cfg[sec][k]]
        saved = ckpt["model"]["config"]
        now = self.model.config
        for key in ("features", "data_spec"):
            if saved[key] != now[key]:
                diffs.append(f"model {key} differ between the checkpoint and this run")
        if diffs:
            raise DataMismatchError(f"checkpoint {path} was made with other model or feature "
                                    "settings: " + "; ".join(diffs) + ". Use another output "
                                    "directory or set training.resume: false")
        logger.info("resuming from %s at epoch %d", path, ckpt["epoch"])
        return ckpt

    def _fit_normalisation(self) -> None:
        model, train = self.model, self.train_set
        feats = torch.cat([s.features for s in train])
        model.scaler.fit(feats)
        denom = np.array([float(s.weights.sum()) for s in train])
        energies = np.array([s.energy for s in train])
        shift = energies.sum() / denom.sum()
        if "fields" in self.labels:
            w = torch.cat([s.weights for s in train]).to(torch.float64)
            eps = torch.cat([s.energy_density for s in train]).to(torch.float64)
            mean = float((w * eps).sum() / w.sum())
            scale = float(torch.sqrt((w * (eps - mean) ** 2).sum() / w.sum()))
            shift = mean
        else:
            per = energies / denom
            scale = float(np.std(per)) if len(per) > 1 else 0.0
        scale = max(scale, 1e-3 * abs(shift), 1e-6)
        density = 1.0
        if model.kind == "grid" and train[0].density is not None:
            w = torch.cat([s.weights for s in train]).to(torch.float64)
            rho = torch.cat([s.density for s in train]).to(torch.float64)
            density = max(float((w * rho).sum() / w.sum()), 1e-6)
        model.set_normalisation(shift, scale, density)
        logger.info("normalisation: energy shift %.6g, scale %.6g, density scale %.6g",
                    shift, scale, density)

    # -------------------------------------------------------------- loop
    def _evaluate_set(self, data) -> dict:
        lcfg = self.cfg["loss"]
        sums = {t: 0.0 for t in TERMS}
        e_err, f_err, f_n, nm_rho, nm_eps = [], 0.0, 0, [], []
        for s in data:
            with torch.enable_grad() if "forces" in self.labels else torch.no_grad():
                terms, pred = structure_loss(self.model, s, self.labels, lcfg, None, None)
            for t, v in terms.items():
                sums[t] += float(v.detach())
            if "energy" in pred:
                e_err.append(abs(float(pred["energy"].detach()) - s.energy) / s.n_atoms)
            if "forces" in pred:
                f_err += float((pred["forces"].detach() - s.forces).abs().sum())
                f_n += s.forces.numel()
            if "fields" in self.labels:
                with torch.no_grad():
                    eps, rho = self.model(s.features)
                w = s.weights
                nm_rho.append(100 * float((w * (rho - s.density).abs()).sum()
                                          / (w * s.density.abs()).sum()))
                ref = 0.0 if s.reference is None else s.reference  # NMAE of the whole field
                nm_eps.append(100 * float((w * (eps - s.energy_density).abs()).sum()
                                          / (w * (s.energy_density + ref).abs()).sum()))
        n = max(len(data), 1)
        out = {t: sums[t] / n for t in TERMS if any(TERMS[t] == lb for lb in self.labels)}
        out["loss"] = sum(self.cfg["loss"][f"{t}_weight"] * v for t, v in out.items())
        out["energy_mae_mev_atom"] = 1000 * float(np.mean(e_err)) if e_err else None
        out["force_mae_mev_A"] = 1000 * f_err / f_n if f_n else None
        out["density_nmae_pct"] = float(np.mean(nm_rho)) if nm_rho else None
        out["energy_density_nmae_pct"] = float(np.mean(nm_eps)) if nm_eps else None
        return out

    def run(self) -> dict:
        """Train; returns a summary (epochs run, best validation loss, file paths)."""
        from tqdm import tqdm

        if self.model is None:
            self.prepare()
        cfg, tcfg, lcfg = self.cfg, self.cfg["training"], self.cfg["loss"]
        model = self.model
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        params = list(model.network.parameters())
        if self.distributed:  # same start everywhere
            for p in params:
                dist.broadcast(p.data, src=0)
        opt = torch.optim.Adam(model.network.parameters(), lr=tcfg["lr"],
                               weight_decay=tcfg["weight_decay"])
        if tcfg["lr_schedule"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=tcfg["lr_factor"], patience=tcfg["lr_patience"],
                min_lr=tcfg["min_lr"])
        elif tcfg["lr_schedule"] == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tcfg["epochs"],
                                                               eta_min=tcfg["min_lr"])
        else:
            sched = None
        start, best, bad = 0, math.inf, 0
        if self.checkpoint is not None:
            opt.load_state_dict(self.checkpoint["optimizer"])
            if sched is not None and self.checkpoint.get("scheduler") is not None:
                sched.load_state_dict(self.checkpoint["scheduler"])
            start, best, bad = (int(self.checkpoint["epoch"]), float(self.checkpoint["best"]),
                                int(self.checkpoint["bad_epochs"]))
            self.history = list(self.checkpoint.get("history", []))
        n_train, bs = len(self.train_set), tcfg["batch_size"]
        warmup = tcfg["fields_warmup"] if "fields" in self.labels and \
            len(self.labels) > 1 else 0
        stopped = False
        bar = tqdm(range(start, tcfg["epochs"]), desc="epochs", initial=start,
                   total=tcfg["epochs"], disable=not (tcfg["progress"] and self.rank == 0))
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            perm = np.random.default_rng([cfg["seed"], epoch]).permutation(n_train)
            gen = torch.Generator().manual_seed(
                int(np.random.default_rng([cfg["seed"], epoch, self.rank]).integers(2**62)))
            sums = {t: 0.0 for t in TERMS}
            n_seen = 0
            warming = epoch < warmup
            labels = ["fields"] if warming else self.labels
            for b0 in range(0, n_train, bs):
                batch = perm[b0:b0 + bs]
                local = batch[self.rank::self.world]
                opt.zero_grad(set_to_none=True)
                loss = sum(p.sum() * 0.0 for p in model.network.parameters())
                for i in local:
                    terms, _ = structure_loss(model, self.train_set[i], labels, lcfg, gen,
                                              tcfg["points_per_structure"])
                    loss = loss + total_loss(terms, lcfg) * (self.world / len(batch))
                    for t, v in terms.items():
                        sums[t] += float(v.detach())
                    n_seen += 1
                if not torch.isfinite(loss):
                    raise DataError(f"the loss became {float(loss)} at epoch {epoch}; lower "
                                    "training.lr or check the data")
                loss.backward()
                if self.distributed:
                    for p in params:
                        dist.all_reduce(p.grad)
                        p.grad /= self.world
                opt.step()
            sums_t = torch.tensor([n_seen] + [sums[t] for t in TERMS], dtype=torch.float64)
            if self.distributed:
                dist.all_reduce(sums_t)
            n_all = max(float(sums_t[0]), 1.0)
            train_terms = {t: float(v) / n_all for t, v in zip(TERMS, sums_t[1:])
                           if TERMS[t] in labels}
            model.eval()
            val = self._evaluate_set(self.val_set) if self.val_set else None
            monitor = val["loss"] if val else sum(lcfg[f"{t}_weight"] * v
                                                  for t, v in train_terms.items())
            # the warm-up optimises another loss: no best model, schedule or early stopping yet
            improved = not warming and monitor < best
            if improved:
                best, bad = monitor, 0
            elif not warming:
                bad += 1
            lr = opt.param_groups[0]["lr"]
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if not warming:
                    sched.step(monitor)
            elif sched is not None:
                sched.step()
            row = {"epoch": epoch + 1, "lr": lr, "seconds": time.perf_counter() - t0,
                   "train_loss": sum(lcfg[f"{t}_weight"] * v for t, v in train_terms.items()),
                   **{f"train_{t}": v for t, v in train_terms.items()}, "best": improved}
            if val:
                row.update({f"val_{k}": v for k, v in val.items()})
            self.history.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.4g}",
                            val=f"{val['loss']:.4g}" if val else "-")
            stop = tcfg["early_stopping"] is not None and bad >= tcfg["early_stopping"]
            if self.rank == 0:
                self._write_metrics(row)
                if improved:
                    save_model(model, self.out / "model.pt",
                               {"metrics": {k: v for k, v in row.items() if v is not None},
                                "train_config": cfg})
                _atomic_save({"format": CHECKPOINT_FORMAT, "config": cfg,
                              "model": model_payload(model), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict() if sched is not None else None,
                              "epoch": epoch + 1, "best": best, "bad_epochs": bad,
                              "history": self.history}, self.out / "checkpoint.pt")
            if self.distributed:
                dist.barrier()
            if stop:
                logger.info("early stopping at epoch %d (no improvement for %d epochs)",
                            epoch + 1, bad)
                stopped = True
                break
        bar.close()
        if self.rank == 0 and not (self.out / "model.pt").is_file():  # ended in the warm-up
            save_model(model, self.out / "model.pt", {"train_config": cfg})
        return {"epochs": len(self.history), "best": best, "stopped_early": stopped,
                "model": str(self.out / "model.pt"), "output": str(self.out),
                "history": self.history}

    def _write_metrics(self, row: dict) -> None:
        csv_path, jsonl_path = self.out / "metrics.csv", self.out / "metrics.jsonl"
        new = not csv_path.is_file() or row["epoch"] == 1
        with open(csv_path, "w" if new else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row.get(k))
                             for k in METRIC_COLUMNS})
        with open(jsonl_path, "w" if new else "a") as fh:
            fh.write(json.dumps(row) + "\n")


def train(cfg: dict) -> dict:
    """Run a training from a resolved configuration; sets up and tears down
    ``torch.distributed`` when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    own_group = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg["training"]["device"] != "cpu" \
            else "gloo"
        dist.init_process_group(backend)
        own_group = True
    try:
        summary = Trainer(cfg).run()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # every rank done (rank 0 writes last) before the group goes away
        return summary
    finally:
        if own_group:
            dist.destroy_process_group()
