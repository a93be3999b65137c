"""Where and how a model departs from the DFT labels: the ``cemt compare`` report.

For every structure of a dataset (or a selection of its positions) the model's energy and
forces are compared with the DFT ones exactly as :func:`cemt.evaluate` does, and for the grid
model also its energy-density and density fields at the mesh nodes. The report directory
holds:

* ``metrics.csv`` and ``metrics.md``: one row per structure and an ``overall`` row
  (:data:`COLUMNS`);
* ``slice_<i>_rho.png`` and ``slice_<i>_energy_density.png`` (grid model, the first
  ``max_slices`` structures): the fields on the plane spanned by the first two cell vectors
  through the first atom, panels DFT | model | difference;
* ``fields_<i>.xdmf`` (+ ``fields_<i>.h5`` and the ``fields_<i>.mesh.json`` sidecar of
  :func:`meshes.write_fields`) for the same structures: ``rho_dft``, ``rho_model``,
  ``rho_error``, ``energy_density_dft``, ``energy_density_model``,
  ``energy_density_error`` and ``weights`` on the mesh nodes (Å, e/Å³, eV/Å³, Å³), for ParaView;
* ``parity_energy.png``, ``parity_forces.png`` and ``hist_errors.png``;
* with a learning curve: ``curve.json`` (copied) and ``curve.png``;
* ``summary.json`` (everything above in numbers, the panel titles of every image, the files,
  model, dataset, selection and code version) and ``report.html`` showing it all.

Errors are ``model − DFT``. The report is built in a temporary directory beside the target
and renamed into place at the end; an existing report is replaced only then, so a failure
leaves the old report (or nothing) and never a partial one.
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._data import load_records, open_dataset, parse_select
from ._errors import CemtError, ConfigError, DataError

__all__ = ["COLUMNS", "REPORT_FORMAT", "ReportError", "compare"]

logger = logging.getLogger(__name__)

#: ``format`` entry of ``summary.json``; an existing directory is replaced only if it holds one.
REPORT_FORMAT = "cemt-compare-report"
REPORT_FORMAT_VERSION = 1

#: Points along each of the two in-plane cell vectors of a slice picture.
SLICE_POINTS = 96

#: Columns of ``metrics.csv`` (units in the names; field columns empty for atom/bond models).
COLUMNS = ["position", "key", "formula", "n_atoms", "n_nodes",
           "energy_dft_ev_atom", "energy_model_ev_atom",
           "energy_error_mev_atom", "energy_abs_error_mev_atom",
           "force_mae_mev_A", "force_max_mev_A",
           "density_nmae_pct", "energy_density_nmae_pct",
           "density_max_abs_error_e_A3", "energy_density_max_abs_error_eV_A3"]

#: The columns only the grid model fills.
FIELD_COLUMNS = COLUMNS[11:]

#: Fields compared by the grid model: dataset name, symbol, unit.
FIELDS = (("rho", "ρ", "e/Å³"), ("energy_density", "ε", "eV/Å³"))

_MD_HEADERS = {
    "position": "#", "key": "structure", "formula": "formula", "n_atoms": "atoms",
    "n_nodes": "nodes", "energy_dft_ev_atom": "E DFT (eV/atom)",
    "energy_model_ev_atom": "E model (eV/atom)", "energy_error_mev_atom": "ΔE (meV/atom)",
    "energy_abs_error_mev_atom": "abs ΔE (meV/atom)", "force_mae_mev_A": "F MAE (meV/Å)",
    "force_max_mev_A": "max ‖ΔF‖ (meV/Å)", "density_nmae_pct": "ρ NMAE (%)",
    "energy_density_nmae_pct": "ε NMAE (%)", "density_max_abs_error_e_A3": "max abs Δρ (e/Å³)",
    "energy_density_max_abs_error_eV_A3": "max abs Δε (eV/Å³)"}

_OVERALL_NOTE = ("Errors are model − DFT. Overall row: ΔE is the mean signed error (bias), "
                 "abs ΔE the mean absolute error over structures (the energy MAE of "
                 "`cemt evaluate`), F MAE the mean over all force components, NMAE the mean "
                 "over structures of 100 ∫|Δf| / ∫|f| (quadrature weights), max columns the "
                 "largest over structures. ‖ΔF‖ is the length of one atom's force error.")


class ReportError(CemtError):
    """The report directory cannot be written: its parent is missing, not a directory or not
    writable, the target exists and is not a ``cemt compare`` report, or writing failed."""


# ---------------------------------------------------------------------------------- public
def compare(model, data, output, select=None, max_slices: int = 3, curve=None,
            progress: bool = False) -> dict:
    """Write a report of where and how ``model`` departs from the DFT labels of a dataset.

    Parameters
    ----------
    model : CemtModel or str or Path
        A trained model or its file (``model.pt`` of a training run).
    data : str or Path
        fedft dataset (HDF5); checked against the model's ``data_spec`` and elements.
    output : str or Path
        Report directory. Its parent must exist and be writable. An existing directory is
        replaced at the end, but only if it is empty or a previous ``cemt compare`` report.
    select : str or slice, optional
        Dataset positions to compare (``"80:100"``), as in :func:`cemt.evaluate`; default all.
    max_slices : int, default 3
        The first this many structures of the selection get slice pictures and XDMF field
        files (grid model only).
    curve : str or Path, optional
        ``curve.json`` written by ``cemt curve`` (or its directory): copied into the report
        and plotted as ``curve.png``.
    progress : bool
        Show a tqdm bar over the structures.

    Returns
    -------
    dict
        The contents of ``summary.json``: ``overall`` (``n_structures``,
        ``energy_mae_mev_atom``, ``energy_mean_error_mev_atom``, ``force_mae_mev_A``,
        ``force_max_mev_A``, ``density_nmae_pct``, ``energy_density_nmae_pct``,
        ``density_max_abs_error_e_A3``, ``energy_density_max_abs_error_eV_A3``; field entries
        None for atom/bond models), ``per_structure`` (one dict per structure with
        :data:`COLUMNS` and its files), ``files``, ``images`` (name -> panel ``titles``, ...),
        ``model``, ``dataset``, ``code_version``, ``output``.

    Raises
    ------
    ModelFileError
        The model file is missing or not a cemt model.
    DataError, DataMismatchError
        The dataset is missing, does not match the model, or the selection is empty or
        malformed.
    ReportError
        The report directory cannot be written.
    ConfigError
        ``max_slices`` is negative or the learning-curve file is unusable.
    """
    from ._train import load_model

    if isinstance(model, (str, os.PathLike)):
        model_file = Path(model).absolute()
        model = load_model(model_file)
    else:
        model_file = None
    if not isinstance(max_slices, (int, np.integer)) or isinstance(max_slices, bool) \
            or max_slices < 0:
        raise ConfigError(f"the number of slice structures must be an integer >= 0, got "
                          f"{max_slices!r}")
    max_slices = int(max_slices)
    data = Path(data).absolute()
    curve_file = _curve_file(curve) if curve is not None else None
    target = _check_output(Path(output), [p for p in (model_file, data, curve_file) if p])
    curve_rows = _read_curve(curve_file) if curve_file is not None else None

    grid = model.kind == "grid"
    spec, records = load_records(data, model.data_spec, fields=grid, select=select)
    for rec in records:
        model.check_elements(rec.atoms.numbers)
    with open_dataset(data) as ds:
        positions = list(range(len(ds)))
    sel = parse_select(select)
    if sel is not None:
        positions = positions[sel]

    info = {
        "format": REPORT_FORMAT, "format_version": REPORT_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code_version": _code_version(),
        "model": {"file": None if model_file is None else str(model_file), "kind": model.kind,
                  "widths": model.settings["widths"],
                  "orders": model.settings["features"]["orders"],
                  "sigmas": model.settings["features"]["sigmas"]},
        "dataset": {"path": str(data), "select": None if select is None else str(select),
                    "positions": positions, "spec": spec},
        "units": {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom",
                  "rho": "e/Angstrom^3", "energy_density": "eV/Angstrom^3",
                  "weights": "Angstrom^3"},
        "output": str(target),
    }
    tmp = _make_tmp(target)
    try:
        summary = _build(tmp, model, records, positions, max_slices, curve_rows, curve_file,
                         info, progress)
        _install(tmp, target)
    except (OSError, _mesh_error()) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReportError(f"cannot write the report {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote the report %s (%d structures)", target, len(records))
    return summary


# ---------------------------------------------------------------------------------- output
def _mesh_error():
    from meshes import MeshFileError
    return MeshFileError


def _code_version() -> str:
    import fedft
    return fedft.__version__


def _check_output(target: Path, inputs: list) -> Path:
    """Refuse an output directory that cannot be written or must not be replaced, before any
    computation. Returns the absolute target."""
    target = Path(os.path.abspath(target.expanduser()))  # also resolves "." and ".."
    parent = target.parent
    where = f"cannot write the report directory {target}"
    if not parent.is_dir():
        blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ReportError(f"{where}: {blocker} is a file, not a directory")
        raise ReportError(f"{where}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"{where}: directory {parent} is not writable")
    if target.is_symlink():
        raise ReportError(f"{where}: it is a symbolic link; give the directory it points to")
    if target.exists():
        if not target.is_dir():
            raise ReportError(f"{where}: a file of that name exists; remove it or choose "
                              "another -o")
        if any(target.iterdir()) and not _is_report(target):
            raise ReportError(f"{where}: the directory exists and is not a cemt compare report "
                              "(no summary.json from cemt compare), so it is not replaced; "
                              "choose another -o or remove it")
        real = target.resolve()
        for p in inputs:
            if real in Path(p).resolve().parents:
                raise ReportError(f"{where}: {p} lies inside it and would be deleted when the "
                                  "report is replaced; move it or choose another -o")
    return target


def _is_report(path: Path) -> bool:
    try:
        return json.loads((path / "summary.json").read_text()).get("format") == REPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _make_tmp(target: Path) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise ReportError(f"cannot write the report directory {target}: {exc}") from exc
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a report is an ordinary directory
    return tmp


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished report into place; an old report is moved aside first and deleted
    only once the new one is in place."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old)  # onto the empty placeholder directory
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------- curve
def _curve_file(curve) -> Path:
    path = Path(curve).absolute()
    if path.is_dir():
        path = path / "curve.json"
    if not path.is_file():
        raise ConfigError(f"learning-curve file {path} does not exist; give the curve.json "
                          "written by `cemt curve` (or its directory)")
    return path


def _read_curve(path: Path) -> list:
    need = ("series", "n_train", "energy_mae_mev_atom", "force_mae_mev_A")
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the learning curve {path}: {exc}") from None
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and all(k in r for k in need) for r in rows):
        raise ConfigError(f"{path} is not a learning curve written by `cemt curve` (a "
                          f"non-empty list of rows with {', '.join(need)})")
    return rows


# ---------------------------------------------------------------------------------- metrics
def _structure_errors(model, rec, grid: bool) -> tuple[dict, dict]:
    """Energy, force and (grid) field errors of one structure.

    Energies and forces are computed as :func:`cemt.evaluate` computes them
    (:meth:`CemtModel.energy_forces` on the record's nodes and weights), the fields by
    :meth:`CemtModel.predict_fields` on the same nodes.

    Returns
    -------
    row : dict
        :data:`COLUMNS` entries (field entries None unless ``grid``) plus ``force_abs_sum``
        (eV/Å) and ``force_count``.
    pred : dict
        ``energy`` (eV), ``forces`` (n_atoms, 3) eV/Å; grid: ``rho`` and ``energy_density``
        (n_nodes,) at ``rec.points``, e/Å³ and eV/Å³.
    """
    n = len(rec.atoms)
    energy, forces = model.energy_forces(rec.atoms, rec.points if grid else None,
                                         rec.weights if grid else None)
    df = forces - rec.forces  # (n, 3) eV/Å
    row = {"key": rec.key, "formula": rec.atoms.get_chemical_formula(), "n_atoms": n,
           "n_nodes": int(rec.points.shape[0]) if grid else None,
           "energy_dft_ev_atom": rec.energy / n, "energy_model_ev_atom": energy / n,
           "energy_error_mev_atom": 1000 * (energy - rec.energy) / n,
           "force_abs_sum": float(np.abs(df).sum()), "force_count": int(np.size(rec.forces)),
           "force_max_mev_A": 1000 * float(np.sqrt((df * df).sum(axis=1)).max())}
    row["energy_abs_error_mev_atom"] = abs(row["energy_error_mev_atom"])
    row["force_mae_mev_A"] = 1000 * row["force_abs_sum"] / row["force_count"]
    pred = {"energy": energy, "forces": forces}
    for key in FIELD_COLUMNS:  # none for atom and bond models
        row[key] = None
    if grid:
        eps, rho = model.predict_fields(rec.atoms, rec.points)
        w = rec.weights
        pred.update(rho=rho, energy_density=eps)
        for name, value, label, unit in (("rho", rho, "density", "e_A3"),
                                         ("energy_density", eps, "energy_density", "eV_A3")):
            ref = rec.fields[name]
            row[f"{label}_nmae_pct"] = 100 * float(np.dot(w, np.abs(value - ref))
                                                   / np.dot(w, np.abs(ref)))
            row[f"{label}_max_abs_error_{unit}"] = float(np.abs(value - ref).max())
    return row, pred


def _overall(rows: list, grid: bool) -> dict:
    """Overall metrics, aggregated as :func:`cemt.evaluate` aggregates them."""
    def fmax(key):
        return float(max(r[key] for r in rows))

    def fmean(key):
        return float(np.mean([r[key] for r in rows]))

    return {"n_structures": len(rows),
            "energy_mae_mev_atom": float(np.mean([abs(r["energy_error_mev_atom"])
                                                  for r in rows])),
            "energy_mean_error_mev_atom": float(np.mean([r["energy_error_mev_atom"]
                                                         for r in rows])),
            "force_mae_mev_A": 1000 * sum(r["force_abs_sum"] for r in rows)
            / sum(r["force_count"] for r in rows),
            "force_max_mev_A": fmax("force_max_mev_A"),
            "density_nmae_pct": fmean("density_nmae_pct") if grid else None,
            "energy_density_nmae_pct": fmean("energy_density_nmae_pct") if grid else None,
            "density_max_abs_error_e_A3": fmax("density_max_abs_error_e_A3") if grid else None,
            "energy_density_max_abs_error_eV_A3":
                fmax("energy_density_max_abs_error_eV_A3") if grid else None}


def _overall_row(overall: dict, rows: list, grid: bool) -> dict:
    """The ``overall`` line of the tables (see :data:`_OVERALL_NOTE`)."""
    return {"position": "", "key": "overall", "formula": "",
            "n_atoms": sum(r["n_atoms"] for r in rows),
            "n_nodes": sum(r["n_nodes"] for r in rows) if grid else None,
            "energy_dft_ev_atom": None, "energy_model_ev_atom": None,
            "energy_error_mev_atom": overall["energy_mean_error_mev_atom"],
            "energy_abs_error_mev_atom": overall["energy_mae_mev_atom"],
            **{k: overall[k] for k in ("force_mae_mev_A", "force_max_mev_A", *FIELD_COLUMNS)}}


# ---------------------------------------------------------------------------------- fields
def _checked_mesh(rec):
    """The record's periodic mesh in Å; its DOFs must be the record's points (same order)."""
    mesh = rec.mesh("angstrom")
    if mesh.n_dofs != rec.points.shape[0] or not np.allclose(
            mesh.dof_positions, rec.points, atol=1e-8 * np.abs(mesh.cell).max()):
        raise DataError(f"structure {rec.key}: the mesh rebuilt from its cell and divisions "
                        "does not match the stored points; the dataset is damaged or was "
                        "written by an incompatible version")
    return mesh


def _write_field_file(path: Path, mesh, rec, pred: dict, model_file) -> None:
    """``rho_*`` and ``energy_density_*`` (DFT, model, model − DFT) and the weights on the
    mesh nodes, as XDMF + HDF5 (:func:`meshes.write_fields`)."""
    from meshes import write_fields

    fields = {"weights": rec.weights}
    units = {"length": "Angstrom", "weights": "Angstrom^3"}
    for name, _, _ in FIELDS:
        unit = "e/Angstrom^3" if name == "rho" else "eV/Angstrom^3"
        fields[f"{name}_dft"] = rec.fields[name]
        fields[f"{name}_model"] = pred[name]
        fields[f"{name}_error"] = pred[name] - rec.fields[name]
        units.update({f"{name}_{s}": unit for s in ("dft", "model", "error")})
    meta = {"units": units, "key": rec.key, "energy_dft": rec.energy,
            "energy_model": pred["energy"], "gauge": rec.gauge,
            "model": None if model_file is None else str(model_file),
            "error": "model - DFT", "code_version": _code_version()}
    write_fields(path, mesh, fields, metadata=meta)


def _slice_geometry(atoms, n: int) -> dict:
    """A regular ``n × n`` grid on the plane spanned by the first two cell vectors through the
    first atom.

    Returns
    -------
    dict
        ``points`` (n·n, 3) Å; ``x``, ``y`` (n, n) in-plane Cartesian coordinates (Å, x along
        ``a1``); ``atoms_xy`` (k, 2) in-plane coordinates of the atoms (and their periodic
        images) that lie on the plane (within 0.05 Å); ``origin`` (3,) Å.
    """
    cell = atoms.cell.array
    origin = atoms.positions[0]
    s = np.linspace(0.0, 1.0, n)
    frac_s, frac_t = np.meshgrid(s, s, indexing="ij")
    offsets = frac_s[..., None] * cell[0] + frac_t[..., None] * cell[1]  # (n, n, 3)
    e1 = cell[0] / np.linalg.norm(cell[0])
    v = cell[1] - (cell[1] @ e1) * e1
    e2 = v / np.linalg.norm(v)
    normal = np.cross(cell[0], cell[1])
    normal /= np.linalg.norm(normal)
    frac = np.linalg.solve(cell.T, (atoms.positions - origin).T).T  # (m, 3)
    spacing = abs(cell[2] @ normal)  # distance between periodic copies of the plane
    on_plane = np.abs(frac[:, 2] - np.round(frac[:, 2])) * spacing < 0.05
    f2 = frac[on_plane, :2] - np.floor(frac[on_plane, :2] + 1e-9)
    shifts = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    images = (f2[:, None, :] + shifts[None]).reshape(-1, 2)
    images = images[np.all(images <= 1 + 1e-9, axis=1)]
    xyz = images @ cell[:2]
    return {"points": (origin + offsets).reshape(-1, 3), "x": offsets @ e1, "y": offsets @ e2,
            "atoms_xy": np.stack([xyz @ e1, xyz @ e2], axis=1), "origin": origin}


def _new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, axes, path: Path, kind: str, **extra) -> dict:
    """Save ``fig`` as PNG and return its entry for ``summary.json``: the titles drawn on the
    panels ``axes`` (colour bars are not panels)."""
    titles = [ax.get_title() for ax in axes]
    fig.savefig(path, dpi=110)
    return {"kind": kind, "titles": titles, **extra}


def _plot_slice(path: Path, geometry: dict, dft: np.ndarray, pred: np.ndarray, symbol: str,
                unit: str, heading: str) -> dict:
    """DFT | model | difference panels of one field on a slice.

    Parameters
    ----------
    dft, pred : (n, n) arrays
        Field values on the slice grid (``geometry["x"]`` shape).
    """
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    diff = pred - dft
    lo = float(min(dft.min(), pred.min()))
    hi = float(max(dft.max(), pred.max()))
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-12
    span = float(np.abs(diff).max()) or 1e-30
    aspect = float(np.ptp(geometry["y"]) / np.ptp(geometry["x"]))  # of the plotted plane
    fig = _new_figure(14.0, min(max(3.8 * aspect + 1.4, 3.2), 9.0))
    axes = fig.subplots(1, 3)
    panels = ((dft, f"DFT {symbol}", "viridis", lo, hi, symbol),
              (pred, f"model {symbol}", "viridis", lo, hi, symbol),
              (diff, f"difference {symbol} (model − DFT)", "RdBu_r", -span, span,
               f"Δ{symbol}"))
    for ax, (values, title, cmap, vmin, vmax, label) in zip(axes, panels):
        mappable = ax.pcolormesh(geometry["x"], geometry["y"], values, shading="gouraud",
                                 cmap=cmap, vmin=vmin, vmax=vmax)
        if len(geometry["atoms_xy"]):
            ax.plot(geometry["atoms_xy"][:, 0], geometry["atoms_xy"][:, 1], "o", ms=5,
                    mfc="none", mec="k", mew=1.0, clip_on=False)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("x along a₁ (Å)")
        ax.set_ylabel("y (Å)")
        cax = make_axes_locatable(ax).append_axes("right", size="5%", pad=0.08)
        fig.colorbar(mappable, cax=cax, label=f"{label} ({unit})")
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return _save(fig, axes, path, "slice", limits={"shared": [lo, hi], "difference": [-span, span]})


def _plot_parity(path: Path, dft: np.ndarray, pred: np.ndarray, title: str, label: str,
                 colors=None) -> dict:
    """Model against DFT with the diagonal."""
    fig = _new_figure(4.8, 4.6)
    ax = fig.subplots()
    lo = float(min(dft.min(), pred.min()))
    hi = float(max(dft.max(), pred.max()))
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1e-3)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8)
    if colors is None:
        ax.plot(dft, pred, "o", ms=4)
    else:
        for k, (c, name) in enumerate(zip(("C0", "C1", "C2"), ("x", "y", "z"))):
            ax.plot(dft[:, k], pred[:, k], "o", ms=3, color=c, label=name)
        ax.legend(title="component")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"DFT {label}")
    ax.set_ylabel(f"model {label}")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, [ax], path, "parity")


def _plot_histograms(path: Path, force_errors: np.ndarray, node_errors: dict | None) -> dict:
    """Histograms of force-component errors and (grid) node-wise field errors weighted by the
    quadrature weights (the volume of space with that error).

    Parameters
    ----------
    force_errors : (k,) meV/Å
    node_errors : dict or None
        ``weights`` (n,) Å³, ``rho`` (n,) e/Å³, ``energy_density`` (n,) eV/Å³ (all structures).
    """
    n_panels = 1 if node_errors is None else 3
    fig = _new_figure(4.6 * n_panels, 3.8)
    axes = np.atleast_1d(fig.subplots(1, n_panels))
    axes[0].hist(force_errors, bins=40, color="C0")
    axes[0].set_title("force component errors")
    axes[0].set_xlabel("ΔF (meV/Å)")
    axes[0].set_ylabel("components")
    if node_errors is not None:
        for ax, (name, symbol, unit) in zip(axes[1:], FIELDS):
            ax.hist(node_errors[name], bins=60, weights=node_errors["weights"], color="C1")
            ax.set_yscale("log")
            ax.set_title(f"node-wise {symbol} errors (volume-weighted)")
            ax.set_xlabel(f"Δ{symbol} ({unit})")
            ax.set_ylabel("volume (Å³)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, axes, path, "histogram")


# ---------------------------------------------------------------------------------- build
def _build(tmp: Path, model, records, positions, max_slices, curve_rows, curve_file, info,
           progress) -> dict:
    from tqdm import tqdm

    from meshes import PointLocator

    grid = model.kind == "grid"
    rows, images = [], {}
    e_dft, e_model, f_dft, f_model = [], [], [], []
    node = {"weights": [], "rho": [], "energy_density": []}
    for i, rec in enumerate(tqdm(records, desc="compare", disable=not progress,
                                 leave=False)):
        row, pred = _structure_errors(model, rec, grid)
        row["position"] = positions[i]
        row["files"] = []
        e_dft.append(rec.energy / len(rec.atoms))
        e_model.append(pred["energy"] / len(rec.atoms))
        f_dft.append(rec.forces)
        f_model.append(pred["forces"])
        if grid:
            node["weights"].append(rec.weights.astype(np.float32))
            for name, _, _ in FIELDS:
                node[name].append((pred[name] - rec.fields[name]).astype(np.float32))
        if grid and i < max_slices:
            mesh = _checked_mesh(rec)
            name = f"fields_{i}.xdmf"
            _write_field_file(tmp / name, mesh, rec, pred, info["model"]["file"])
            row["files"] += [name, f"fields_{i}.h5", f"fields_{i}.mesh.json"]
            geometry = _slice_geometry(rec.atoms, SLICE_POINTS)
            values = PointLocator(mesh).interpolation_matrix(geometry["points"]) @ np.stack(
                [rec.fields["rho"], pred["rho"], rec.fields["energy_density"],
                 pred["energy_density"]], axis=1)  # (n·n, 4)
            values = values.reshape(SLICE_POINTS, SLICE_POINTS, 4)
            heading = (f"structure {i} (dataset position {positions[i]}, {row['formula']}, "
                       f"{rec.key[:12]}): plane of a₁, a₂ through atom 0")
            for k, (fname, symbol, unit) in enumerate(FIELDS):
                png = f"slice_{i}_{fname}.png"
                images[png] = _plot_slice(tmp / png, geometry, values[..., 2 * k],
                                          values[..., 2 * k + 1], symbol, unit, heading)
                images[png].update(structure=i, field=fname)
                row["files"].append(png)
        rows.append(row)
        logger.info("structure %d (%s): dE %.3f meV/atom, F MAE %.2f meV/Å", i, rec.key,
                    row["energy_error_mev_atom"], row["force_mae_mev_A"])

    overall = _overall(rows, grid)
    images["parity_energy.png"] = _plot_parity(
        tmp / "parity_energy.png", np.array(e_dft), np.array(e_model),
        "per-atom energy", "energy (eV/atom)")
    images["parity_forces.png"] = _plot_parity(
        tmp / "parity_forces.png", np.concatenate(f_dft), np.concatenate(f_model),
        "force components", "force (eV/Å)", colors=True)
    images["hist_errors.png"] = _plot_histograms(
        tmp / "hist_errors.png",
        1000 * (np.concatenate(f_model) - np.concatenate(f_dft)).ravel(),
        {k: np.concatenate(v) for k, v in node.items()} if grid else None)
    curve_info = None
    if curve_rows is not None:
        from ._curves import plot_learning_curve
        shutil.copyfile(curve_file, tmp / "curve.json")
        plot_learning_curve(curve_rows, tmp / "curve.png")
        # plot_learning_curve draws no axes titles; its panels are described instead
        images["curve.png"] = {"kind": "curve", "titles": [],
                               "panels": ["test energy MAE (meV/atom) against N",
                                          "test force MAE (meV/Å) against N"]}
        curve_info = {"source": str(curve_file), "rows": curve_rows}

    per_structure = [{k: r.get(k) for k in COLUMNS} | {"files": r["files"]} for r in rows]
    table = rows + [_overall_row(overall, rows, grid)]
    _write_text(tmp / "metrics.csv", _csv(table))
    _write_text(tmp / "metrics.md", _markdown(table, info))
    summary = {**info, "overall": overall, "per_structure": per_structure, "images": images,
               "curve": curve_info}
    _write_text(tmp / "report.html", _html(summary))
    summary["files"] = sorted([p.name for p in tmp.iterdir()] + ["summary.json"])
    _write_text(tmp / "summary.json", json.dumps(_finite(summary), indent=1))
    return summary


# ---------------------------------------------------------------------------------- text
def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _finite(obj):
    """Non-finite floats -> None, so that summary.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _csv(rows: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else (repr(float(r[k]))
                         if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    return buf.getvalue()


def _cell(row: dict, key: str) -> str:
    """One table cell: short key, fixed decimals for energies, 4 digits otherwise; a missing
    field value is "n/a", entries that do not apply to the overall row are blank."""
    v = row.get(key)
    if row.get("key") == "overall" and key in ("position", "formula", "energy_dft_ev_atom",
                                              "energy_model_ev_atom"):
        return ""
    if v is None or v == "":
        return "n/a"
    if key == "key":
        return v if v == "overall" else v[:12]
    if isinstance(v, float):
        return f"{v:.6f}" if key.endswith("ev_atom") and "error" not in key else f"{v:.4g}"
    return str(v)


def _markdown(rows: list, info: dict) -> str:
    lines = ["# cemt compare: model against DFT", "",
             f"model: `{info['model']['file']}` ({info['model']['kind']}); dataset: "
             f"`{info['dataset']['path']}`"
             + (f", selection `{info['dataset']['select']}`" if info["dataset"]["select"]
                else "") + f"; code {info['code_version']}", "",
             "| " + " | ".join(_MD_HEADERS[k] for k in COLUMNS) + " |",
             "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r, k) for k in COLUMNS) + " |")
    lines += ["", _OVERALL_NOTE, ""]
    return "\n".join(lines)


def _html_table(headers: list, rows: list) -> str:
    esc = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(name: str, entry: dict) -> str:
    alt = "; ".join(entry["titles"] or entry.get("panels", []))
    return (f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _html(summary: dict) -> str:
    esc = html.escape
    m, d = summary["model"], summary["dataset"]
    table = summary["per_structure"] + [_overall_row(summary["overall"],
                                                     summary["per_structure"],
                                                     m["kind"] == "grid")]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>cemt compare</title>",
        ("<style>body{font-family:sans-serif;margin:1.5em;max-width:1500px}"
         "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
         "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
         "th{background:#eee}img{max-width:100%}figure{margin:0.5em 0}"
         "figcaption{font-size:0.8em;color:#555}.row{display:flex;flex-wrap:wrap;gap:1em}"
         "</style></head><body>"),
        "<h1>cemt compare: model against DFT</h1>",
        "<p>" + "<br>".join([
            (f"model: <code>{esc(str(m['file']))}</code> ({esc(m['kind'])}, widths "
             f"{esc(str(m['widths']))}, GMP orders {esc(str(m['orders']))}, σ "
             f"{esc(str(m['sigmas']))} Å)"),
            (f"dataset: <code>{esc(d['path'])}</code>, selection "
             f"{esc(str(d['select'] or 'all'))} ({len(d['positions'])} structures; gauge "
             f"{esc(str(d['spec'].get('gauge')))}, "
             f"{esc(str(d['spec'].get('functional')))})"),
            f"code version {esc(summary['code_version'])}, written {esc(summary['created'])}",
            "units: Å, eV, e; errors are model − DFT"]) + "</p>",
        "<h2>Errors per structure</h2>",
        _html_table([_MD_HEADERS[k] for k in COLUMNS],
                    [[_cell(r, k) for k in COLUMNS] for r in table]),
        f"<p>{esc(_OVERALL_NOTE)}</p>",
        ('<p>Tables: <a href="metrics.csv">metrics.csv</a>, '
         '<a href="metrics.md">metrics.md</a>; '
         'all numbers: <a href="summary.json">summary.json</a>.</p>'),
        "<h2>Parity and error distributions</h2>",
    ]
    parts.append('<div class="row">')
    for name in ("parity_energy.png", "parity_forces.png"):
        parts.append(_img(name, summary["images"][name]))
    parts.append("</div>")
    parts.append(_img("hist_errors.png", summary["images"]["hist_errors.png"]))
    sliced = [(i, r) for i, r in enumerate(summary["per_structure"]) if r["files"]]
    if sliced:
        parts.append("<h2>Fields on a slice</h2><p>Plane spanned by the first two cell vectors "
                     "through the first atom (circles: atoms on the plane); DFT and model share "
                     "one colour scale, the difference is on a symmetric scale. The XDMF files "
                     "hold the fields on the mesh nodes (open them in ParaView; the .h5 beside "
                     "each must stay with it).</p>")
        for i, r in sliced:
            xdmf = [f for f in r["files"] if f.endswith(".xdmf")]
            parts.append(f"<h3>structure {i}: dataset position {r['position']}, "
                         f"{esc(r['formula'])}, {esc(r['key'])}</h3>")
            parts.append("<p>" + ", ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in xdmf)
                         + "</p>")
            for f in r["files"]:
                if f.endswith(".png"):
                    parts.append(_img(f, summary["images"][f]))
    elif m["kind"] == "grid":
        parts.append("<p>No slice pictures or field files (--slices 0).</p>")
    else:
        parts.append(f"<p>The {esc(m['kind'])} model predicts no fields: no slices or field "
                     "files.</p>")
    if summary.get("curve"):
        rows = summary["curve"]["rows"]
        parts += ["<h2>Learning curve</h2>",
                  (f"<p>From <code>{esc(summary['curve']['source'])}</code> "
                   '(copied as <a href="curve.json">curve.json</a>).</p>'),
                  _img("curve.png", summary["images"]["curve.png"]),
                  _html_table(["series", "N", "E MAE (meV/atom)", "F MAE (meV/Å)"],
                              [[r["series"], r["n_train"],
                                _fmt(r["energy_mae_mev_atom"]), _fmt(r["force_mae_mev_A"])]
                               for r in rows])]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{float(v):.4g}"
