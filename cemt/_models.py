"""Models that predict local quantities at reference points from their GMP features.

One element-agnostic network maps the standardised GMP features of a reference point to two
outputs: an energy term and a non-negative electron density. Three models place and weight the
points differently (Lei & Medford, CEMT; ``BACKGROUND.md`` §5):

* :class:`GridModel`: points are mesh nodes with quadrature weights ``w_i`` (Å³), fixed in
  space; ``E = Σ_i w_i ε_i`` with ``ε`` an energy density (eV/Å³), and the density head
  predicts ``ρ`` (e/Å³) at the same points.
* :class:`AtomModel`: points are the atoms, ``E = Σ_a e_a`` (eV); they move with their atom.
* :class:`BondModel`: points are midpoints of atom pairs closer than ``bond_cutoff``;
  ``E = Σ_b f_c(r_b) e_b`` with the smooth cutoff ``f_c(r) = (1 + cos(π r / r_c)) / 2`` so that
  the energy stays continuous when a bond crosses the cutoff; the points move with both atoms.

Forces ``F = −dE/dR`` follow by automatic differentiation through the featurizer with these
kinematics (:meth:`CemtModel.energy_forces`); a grid model on a uniform periodic grid instead
contracts ``w ∂ε/∂G`` (one backward pass through the network) with the FFT features' exact
adjoint (:meth:`GridModel.energy_forces`). For training, :meth:`CemtModel.structure_tensors`
computes once per structure the features ``G`` (P, F) and their Jacobian ``∂G/∂R``
(P, F, n_atoms, 3) by forward-mode differentiation, after which energies and forces of any
network need only the network itself (:meth:`CemtModel.energy_forces_from_tensors`):
``F = −Σ_p [w_p (∂ε/∂G)_p · ∂G_p/∂R + ε_p ∂w_p/∂R]``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ._errors import ConfigError, StructureError, UnknownElementError
from ._gmp import GMPFeaturizer, bond_centred_points
from ._gmp_fft import match_grid
from ._pseudodensity import read_gpsp
from ._scaler import FeatureScaler

__all__ = ["PointNetwork", "CemtModel", "GridModel", "AtomModel", "BondModel", "MODEL_KINDS",
           "build_model", "feature_settings"]

logger = logging.getLogger(__name__)

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh}

#: Points per network pass when a grid model evaluates energy and forces on a grid.
POINT_CHUNK = 8192
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def feature_settings(orders: Sequence[int], sigmas: Sequence[float], pseudodensity,
                     elements: Sequence[str], overlap_threshold: float = 1e-8,
                     norm: str = "square") -> dict:
    """Self-contained featurizer settings to store in a model.

    Parameters
    ----------
    orders : sequence of int
        GMP orders (−1 .. 10).
    sigmas : sequence of float
        Probe widths, Å.
    pseudodensity : str or path-like
        ``.gpsp`` file; only the primitives of ``elements`` are kept, so that a model file does
        not depend on the file afterwards.
    elements : sequence of str
        Chemical symbols the model is trained on.
    overlap_threshold : float
    norm : {"sqrt", "square"}
        Radial norm of the order-l features (:class:`~cemt.GMPFeaturizer`).

    Returns
    -------
    dict
        ``orders``, ``sigmas``, ``overlap_threshold``, ``norm``, ``pseudodensity`` (symbol ->
        ``{"B": list, "beta": list}``) and ``pseudodensity_source`` (the file name).
    """
    pset = read_gpsp(pseudodensity)
    table = {}
    for sym in sorted(set(elements)):
        el = pset[sym]
        table[sym] = {"B": [float(b) for b in el.B], "beta": [float(b) for b in el.beta]}
    return {"orders": [int(l) for l in orders], "sigmas": [float(s) for s in sigmas],
            "overlap_threshold": float(overlap_threshold), "norm": str(norm),
            "pseudodensity": table,
            "pseudodensity_source": str(pseudodensity)}


class PointNetwork(nn.Module):
    """Multilayer perceptron from standardised features to two raw outputs per point.

    Parameters
    ----------
    n_features : int
    widths : sequence of int
        Hidden layer widths (may be empty: a linear model).
    activation : {"silu", "tanh"}
    """

    def __init__(self, n_features: int, widths: Sequence[int], activation: str = "silu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n_in = n_features
        for w in widths:
            layers += [nn.Linear(n_in, int(w)), ACTIVATIONS[activation]()]
            n_in = int(w)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, 2)
        # start close to the output shift: small last layer, zero bias
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, n_features) -> (n, 2): raw energy output, raw density output."""
        return self.head(self.body(x))


class CemtModel(nn.Module, abc.ABC):
    """Base class: the shared network, standardisation, output scaling and differentiation.

    Parameters
    ----------
    features : dict
        Featurizer settings from :func:`feature_settings`.
    widths : sequence of int, default (64, 64)
        Hidden layer widths.
    activation : {"silu", "tanh"}, default "silu"
    dtype : {"float32", "float64"}, default "float32"
        Precision of the featurizer and the network.
    bond_cutoff : float, optional
        Bond length cutoff, Å (bond model only).
    data_spec : dict, optional
        Identity of the data the model is trained on (units, gauge, functional,
        pseudopotentials), see :func:`cemt._data.dataset_spec`; checked against every dataset.

    Attributes
    ----------
    scaler : FeatureScaler
        Feature standardisation (fitted on training features).
    energy_shift, energy_scale : torch.Tensor (scalar buffers)
        Energy output ``= shift + scale · raw`` (eV/Å³ for the grid model, eV per point for the
        others).
    density_scale : torch.Tensor (scalar buffer)
        Density output ``= scale · softplus(raw)``, e/Å³.
    """

    kind: str = ""

    def __init__(self, features: dict, widths: Sequence[int] = (64, 64),
                 activation: str = "silu", dtype: str = "float32",
                 bond_cutoff: float | None = None, data_spec: dict | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got "
                              f"{activation!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        widths = [int(w) for w in widths]
        if any(w < 1 for w in widths):
            raise ConfigError(f"widths must be positive integers, got {widths}")
        self.settings = {"features": features, "widths": widths, "activation": activation,
                         "dtype": dtype, "bond_cutoff": bond_cutoff}
        self.data_spec = data_spec
        self.torch_dtype = DTYPES[dtype]
        self.featurizer = GMPFeaturizer(features["orders"], features["sigmas"],
                                        features["pseudodensity"],
                                        overlap_threshold=features["overlap_threshold"],
                                        norm=features.get("norm", "sqrt"),
                                        dtype=self.torch_dtype)
        self.elements = sorted(self.featurizer.pseudodensity[s].Z
                               for s in features["pseudodensity"])
        self.scaler = FeatureScaler()
        self.network = PointNetwork(self.featurizer.n_features, widths, activation)
        self.network.to(self.torch_dtype)
        self.register_buffer("energy_shift", torch.zeros((), dtype=self.torch_dtype))
        self.register_buffer("energy_scale", torch.ones((), dtype=self.torch_dtype))
        self.register_buffer("density_scale", torch.ones((), dtype=self.torch_dtype))

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict:
        """Everything needed to rebuild the model (without weights)."""
        return {"kind": self.kind, **self.settings, "data_spec": self.data_spec}

    @property
    def n_features(self) -> int:
        return self.featurizer.n_features

    def set_normalisation(self, energy_shift: float, energy_scale: float,
                          density_scale: float) -> None:
        """Set the output scaling (see the class attributes)."""
        for name, value in (("energy_scale", energy_scale), ("density_scale", density_scale)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
        self.energy_shift.fill_(float(energy_shift))
        self.energy_scale.fill_(float(energy_scale))
        self.density_scale.fill_(float(density_scale))

    def check_elements(self, numbers) -> None:
        """Raise :class:`UnknownElementError` for elements the model was not built for."""
        unknown = sorted(set(int(z) for z in np.asarray(numbers)) - set(self.elements))
        if unknown:
            from ase.data import chemical_symbols
            raise UnknownElementError(
                f"the structure contains {[chemical_symbols[z] for z in unknown]}, which this "
                f"model never saw (it knows {[chemical_symbols[z] for z in self.elements]}); "
                "train a model on data that includes these elements")

    # ------------------------------------------------------------------ network
    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Point outputs from raw (unstandardised) features.

        Parameters
        ----------
        features : torch.Tensor, shape (n, n_features)

        Returns
        -------
        energy : torch.Tensor, shape (n,)
            Energy density (eV/Å³, grid model) or energy per point (eV, atom/bond models).
        density : torch.Tensor, shape (n,)
            Electron density, e/Å³, >= 0.
        """
        x = self.scaler.transform(features.to(self.torch_dtype))
        raw = self.network(x)
        energy = self.energy_shift + self.energy_scale * raw[:, 0]
        density = self.density_scale * nn.functional.softplus(raw[:, 1])
        return energy, density

    # ------------------------------------------------------------------ kinematics
    @abc.abstractmethod
    def points_and_weights(self, positions: torch.Tensor, atoms, points=None, weights=None):
        """Reference points and their weights as functions of ``positions``.

        Parameters
        ----------
        positions : torch.Tensor, shape (n_atoms, 3)
            Å; may carry an autograd graph or forward-mode tangents.
        atoms : ase.Atoms
            Supplies cell and periodicity.
        points, weights : array_like, optional
            Fixed points (n, 3) Å and weights (n,) — grid model only.

        Returns
        -------
        points : torch.Tensor (n, 3) or numpy array (fixed points)
        weights : torch.Tensor (n,)
        """

    def _prepare(self, atoms):
        if len(atoms) == 0:
            raise StructureError("the structure has no atoms")
        self.check_elements(atoms.numbers)
        pos = torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64),
                              dtype=self.torch_dtype)
        return pos, atoms.cell.array, atoms.pbc

    def energy_forces(self, atoms, points=None, weights=None, forces: bool = True):
        """Energy and forces of one structure by autograd through featurizer and network.

        Parameters
        ----------
        atoms : ase.Atoms
        points, weights : array_like, optional
            Grid model: reference points (n, 3), Å, and quadrature weights (n,), Å³.
        forces : bool, default True

        Returns
        -------
        energy : float
            eV.
        forces : numpy.ndarray, shape (n_atoms, 3), or None
            eV/Å.
        """
        pos, cell, pbc = self._prepare(atoms)
        with torch.enable_grad():
            pos = pos.clone().requires_grad_(forces)
            pts, w = self.points_and_weights(pos, atoms, points, weights)
            g = self._featurize(pos, atoms, pts)
            eps, _ = self(g)
            energy = (w.to(torch.float64) * eps.to(torch.float64)).sum()
            f = None
            if forces:
                (grad,) = torch.autograd.grad(energy, pos)
                f = -grad.detach().to(torch.float64).numpy()
        return float(energy.detach()) + self._reference_energy(atoms), f

    def _reference_energy(self, atoms) -> float:
        """The fixed reference's (position-independent) share of the energy, eV (0 here)."""
        return 0.0

    def _reference(self, pos: torch.Tensor, atoms, pts):
        """Fixed reference added to the network's energy output at ``pts`` (0 here; see
        :class:`GridModel`)."""
        return 0.0

    def _featurize(self, pos: torch.Tensor, atoms, pts) -> torch.Tensor:
        """Features of the points ``pts`` (differentiable w.r.t. ``pos``)."""
        return self.featurizer.features_torch(pos, atoms.numbers, atoms.cell.array, atoms.pbc,
                                              points=pts)

    def structure_tensors(self, atoms, points=None, weights=None, jacobian: bool = True) -> dict:
        """Features, weights and their derivatives for training on one structure.

        The Jacobians come from ``3 n_atoms`` forward-mode passes (one per coordinate).

        Parameters
        ----------
        atoms : ase.Atoms
        points, weights : array_like, optional
            Grid model: fixed reference points (n, 3), Å, and weights (n,), Å³.
        jacobian : bool, default True
            Also compute ``∂G/∂R`` and ``∂w/∂R`` (needed for forces).

        Returns
        -------
        dict
            ``features`` (P, F); ``weights`` (P,); ``jacobian`` (P, F, n_atoms·3) or None;
            ``dweights`` (P, n_atoms·3) or None. Tensors of the model's dtype, no graph.
        """
        pos, cell, pbc = self._prepare(atoms)
        numbers = atoms.numbers
        with torch.no_grad():
            pts, w = self.points_and_weights(pos, atoms, points, weights)
            g = self.featurizer.features_torch(pos, numbers, cell, pbc, points=pts)
            out = {"features": g.detach(), "weights": w.detach().to(self.torch_dtype),
                   "jacobian": None, "dweights": None}
            if not jacobian:
                return out
            n3 = 3 * len(atoms)
            jac = g.new_zeros((g.shape[0], g.shape[1], n3))
            dw = g.new_zeros((g.shape[0], n3))
            for k in range(n3):
                tangent = torch.zeros_like(pos)
                tangent.view(-1)[k] = 1.0
                with fwAD.dual_level():
                    dual = fwAD.make_dual(pos, tangent)
                    pts_k, w_k = self.points_and_weights(dual, atoms, points, weights)
                    g_k = self.featurizer.features_torch(dual, numbers, cell, pbc, points=pts_k)
                    tg = fwAD.unpack_dual(g_k).tangent
                    tw = fwAD.unpack_dual(w_k).tangent
                if tg is not None:
                    jac[:, :, k] = tg
                if tw is not None:
                    dw[:, k] = tw
            out["jacobian"], out["dweights"] = jac, dw
        return out

    def energy_forces_from_tensors(self, features: torch.Tensor, weights: torch.Tensor,
                                   jacobian: torch.Tensor | None = None,
                                   dweights: torch.Tensor | None = None,
                                   create_graph: bool = False, forward=None):
        """Energy and forces of one structure from :meth:`structure_tensors`.

        Differentiable with respect to the network parameters (``create_graph=True`` for a
        force loss).

        Parameters
        ----------
        features : (P, F); weights : (P,); jacobian : (P, F, 3N) or None; dweights : (P, 3N)
        create_graph : bool
        forward : callable, optional
            Replaces ``self`` as the point function (e.g. a DistributedDataParallel wrapper).

        Returns
        -------
        energy : torch.Tensor, scalar (float64), eV
        forces : torch.Tensor (N, 3) eV/Å, or None when ``jacobian`` is None
        eps : torch.Tensor (P,)
            Energy output per point.
        density : torch.Tensor (P,)
        """
        g = features
        if jacobian is not None:
            g = features.detach().clone().requires_grad_(True)
        with torch.enable_grad() if jacobian is not None else contextlib.nullcontext():
            eps, rho = (forward or self)(g)
            energy = (weights.to(torch.float64) * eps.to(torch.float64)).sum()
            forces = None
            if jacobian is not None:
                (wg,) = torch.autograd.grad((weights * eps).sum(), g, create_graph=create_graph)
                f = torch.einsum("pf,pfk->k", wg, jacobian)
                if dweights is not None:
                    f = f + eps @ dweights
                forces = -f.view(-1, 3)
        return energy, forces, eps, rho

    def predict_fields(self, atoms, points) -> tuple[np.ndarray, np.ndarray]:
        """Predicted energy output and density at arbitrary points (no gradients).

        Parameters
        ----------
        atoms : ase.Atoms
        points : array_like, shape (n, 3), Å

        Returns
        -------
        energy : numpy.ndarray (n,)
            Energy density, eV/Å³ (meaningful for the grid model).
        density : numpy.ndarray (n,)
            e/Å³.
        """
        pos, _, _ = self._prepare(atoms)
        with torch.no_grad():
            pts = np.asarray(points, dtype=np.float64)
            g = self._featurize(pos, atoms, pts)
            eps, rho = self(g)
            eps = eps + self._reference(pos, atoms, pts)
        return eps.to(torch.float64).numpy(), rho.to(torch.float64).numpy()


class GridModel(CemtModel):
    """Grid-centred model: mesh nodes with quadrature weights, fixed in space;
    ``E = Σ_i w_i ε(G(r_i))`` with ε an energy density (eV/Å³). See :class:`CemtModel`.

    With a ``reference`` (:mod:`cemt._reference`), the energy density is the network's output
    plus ``ε_ref``; the network part is integrated with the weights and ``ε_ref`` analytically
    (a constant per atom): ``E = Σ_i w_i ε_θ(r_i) + Σ_I ∫ ε_ref,I``.

    Parameters
    ----------
    features : dict
    quadrature : {"trapezoid", "nodal"}, default "trapezoid"
        ``"trapezoid"``: when the points are a complete uniform grid of a periodic cell (the
        nodes of a ``meshes`` periodic mesh, P1 or P2), every weight is ``V/N``: the trapezoid
        rule, spectrally accurate for the smooth periodic fields of a model on smooth
        features, so the energy hardly ripples when the atoms move against the grid. The P2
        nodal weights instead alternate between node types and integrate such fields only as
        well as the coarser sub-lattices do (measured: ~6 meV/atom egg-box against 0.4 with
        the trapezoid rule on the same 0.19 Å nodes). Other points keep the given weights.
        ``"nodal"``: always the given weights.
    reference : dict, optional
        ``{symbol: {"B": [...], "beta": [...]}}``: the radial reference energy density
        (eV/Å³, 1/Å²) fitted by :func:`cemt._reference.fit_reference`.
    **kwargs
        As :class:`CemtModel`.
    """

    kind = "grid"

    def __init__(self, features: dict, quadrature: str = "trapezoid",
                 reference: dict | None = None, **kwargs) -> None:
        if quadrature not in ("trapezoid", "nodal"):
            raise ConfigError(f"quadrature must be 'trapezoid' or 'nodal', got {quadrature!r}")
        super().__init__(features, **kwargs)
        self.settings["quadrature"] = quadrature
        self.settings["reference"] = reference
        self._ref_feat = None
        if reference is not None:
            from ._reference import reference_featurizer
            # float64 whatever the network's dtype: the reference is large (tens of eV/Å³) and
            # its integral must be exact to far below the model's error
            self._ref_feat = reference_featurizer(reference, torch.float64)

    def _reference(self, pos, atoms, pts):
        """``ε_ref`` at ``pts`` (eV/Å³, differentiable w.r.t. ``pos``), or 0 without a
        reference (:mod:`cemt._reference`)."""
        if self._ref_feat is None:
            return 0.0
        match = self._grid_of(atoms, pts)
        cell, pbc = atoms.cell.array, atoms.pbc
        pos = pos.to(torch.float64)
        if match is None:
            return self._ref_feat.features_torch(pos, atoms.numbers, cell, pbc, points=pts)[:, 0]
        g = self._ref_feat.features_grid_torch(pos, atoms.numbers, cell, pbc, match.shape,
                                               shift=match.shift)[:, 0]
        return g[torch.as_tensor(match.index, device=g.device)]

    def _reference_energy(self, atoms) -> float:
        """``Σ_I ∫ ε_ref,I = Σ_I Σ_k B_k (π/β_k)^{3/2}`` (eV): the reference is integrated
        analytically, so it adds a constant per atom and no force (a quadrature of it would
        differ only by its egg-box, ~1e-8 eV at 0.15 Å)."""
        if self._ref_feat is None:
            return 0.0
        ref = self.settings["reference"]
        per = {s: float(sum(b * (math.pi / be) ** 1.5 for b, be in zip(v["B"], v["beta"])))
               for s, v in ref.items()}
        return float(sum(per[s] for s in atoms.get_chemical_symbols()))

    def reference_terms(self, atoms, points, weights) -> dict | None:
        """The reference's share of one structure's labels (None without a reference).

        Returns
        -------
        dict
            ``field`` (P,) eV/Å³ at the points, ``energy`` (eV, the analytic integral) and
            ``forces`` (n_atoms, 3) eV/Å (zero: the reference moves rigidly with the atoms).
        """
        if self._ref_feat is None:
            return None
        pos, _, _ = self._prepare(atoms)
        with torch.no_grad():
            ref = self._reference(pos, atoms, np.asarray(points, dtype=np.float64))
        return {"field": ref.to(torch.float64), "energy": self._reference_energy(atoms),
                "forces": np.zeros((len(atoms), 3))}

    def points_and_weights(self, positions, atoms, points=None, weights=None):
        if points is None or weights is None:
            raise StructureError("the grid model needs reference points (n, 3) Å and their "
                                 "quadrature weights (n,) Å³, e.g. a dataset record's "
                                 "points and weights")
        pts = np.asarray(points, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or w.shape != (pts.shape[0],):
            raise StructureError(f"points must be (n, 3) and weights (n,), got "
                                 f"{pts.shape} and {w.shape}")
        if self.settings["quadrature"] == "trapezoid" and self._grid_of(atoms, pts) is not None:
            w = np.full(pts.shape[0], abs(atoms.get_volume()) / pts.shape[0])
        return pts, torch.as_tensor(w, dtype=self.torch_dtype)

    def _grid_of(self, atoms, pts):
        """:func:`cemt.match_grid` of ``pts`` when they are a complete uniform grid of a fully
        periodic cell, else None. The last answer is kept (one evaluation asks for the
        weights, the features and the reference of the same points)."""
        if isinstance(pts, torch.Tensor) or not np.all(atoms.pbc):
            return None
        pts = np.ascontiguousarray(pts, dtype=np.float64)
        cell = np.ascontiguousarray(atoms.cell.array, dtype=np.float64)
        key = (pts.shape, hashlib.blake2b(pts.tobytes(), digest_size=16).digest(),
               cell.tobytes())
        cached = getattr(self, "_grid_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, match_grid(pts, cell))
            self._grid_cache = cached
        return cached[1]

    def energy_forces(self, atoms, points=None, weights=None, forces: bool = True,
                      adjoint: bool = True):
        """Energy and forces of one structure, see :meth:`CemtModel.energy_forces`.

        When the points are a complete uniform grid of a periodic cell (the calculator's
        evaluation mesh) and ``adjoint`` is true, the forces come from the FFT features'
        exact vector-Jacobian product (:class:`~cemt.GridFeatureAdjoint`): one backward pass
        through the network gives ``ḡ = w ∂ε/∂G`` at every point, and
        ``∂E/∂R = Σ_p ḡ_p · ∂G_p/∂R`` costs about as much as the features again, instead of
        autograd through the whole FFT pipeline. The weights do not depend on the
        positions (the points are fixed in space). ``adjoint=False`` forces the autograd path
        (same result to rounding).

        Parameters
        ----------
        atoms : ase.Atoms
        points : array_like, shape (P, 3)
            Reference points, Å.
        weights : array_like, shape (P,)
            Quadrature weights, Å³.
        forces : bool, default True
        adjoint : bool, default True

        Returns
        -------
        energy : float
            eV.
        forces : numpy.ndarray, shape (n_atoms, 3), or None
            eV/Å.
        """
        pts = None if points is None else np.asarray(points, dtype=np.float64)
        match = None if (pts is None or not (forces and adjoint)) else self._grid_of(atoms, pts)
        if match is None:
            return super().energy_forces(atoms, points, weights, forces=forces)
        pos, cell, pbc = self._prepare(atoms)
        _, w = self.points_and_weights(pos, atoms, pts, weights)
        adj = self.featurizer.features_grid_adjoint(pos, atoms.numbers, cell, pbc, match.shape,
                                                    shift=match.shift)
        index = torch.as_tensor(match.index)
        identity = _is_identity(match.index)
        g = adj.features if identity else adj.features[index]
        energy, gbar = self._energy_and_gradient(g, w)
        if not identity:  # back to the grid's C order (index is a permutation)
            gbar = torch.zeros_like(gbar).index_copy_(0, index, gbar)
        f = -adj.vjp(gbar).numpy()
        return energy + self._reference_energy(atoms), f

    def _energy_and_gradient(self, features: torch.Tensor, weights: torch.Tensor):
        """``E = Σ_p w_p ε(G_p)`` and ``∂E/∂G`` by forward and backward passes of the network
        over chunks of :data:`POINT_CHUNK` points (small arrays that stay in cache; the whole
        grid at once is about twice slower).

        Parameters
        ----------
        features : torch.Tensor, shape (P, n_features)
        weights : torch.Tensor, shape (P,)
            Å³.

        Returns
        -------
        energy : float
            eV (float64 accumulation).
        grad : torch.Tensor, shape (P, n_features)
            ``∂E/∂G``, eV per feature unit, the features' dtype; the transpose of a
            contiguous (n_features, P) tensor (the layout :meth:`~cemt.GridFeatureAdjoint.vjp`
            reads fastest).
        """
        grad_t = torch.empty((features.shape[1], features.shape[0]), dtype=features.dtype,
                             device=features.device)
        energy = 0.0
        with torch.enable_grad():
            for start in range(0, features.shape[0], POINT_CHUNK):
                part = slice(start, start + POINT_CHUNK)
                g = features[part].detach().requires_grad_(True)
                eps, _ = self(g)
                e = (weights[part].to(torch.float64) * eps.to(torch.float64)).sum()
                (dg,) = torch.autograd.grad(e, g)
                grad_t[:, part] = dg.T
                energy += float(e.detach())
        return energy, grad_t.T

    def _featurize(self, pos, atoms, pts):
        """Mesh nodes of a periodic cell form a uniform grid: use the FFT path there (exact
        lattice sums, far faster than the direct sum); other points use the direct sum."""
        match = self._grid_of(atoms, pts)
        if match is None:
            return super()._featurize(pos, atoms, pts)
        g = self.featurizer.features_grid_torch(pos, atoms.numbers, atoms.cell.array,
                                                atoms.pbc, match.shape, shift=match.shift)
        if _is_identity(match.index):
            return g
        return g[torch.as_tensor(match.index, device=g.device)]

    def structure_tensors(self, atoms, points=None, weights=None, jacobian: bool = True) -> dict:
        """As :meth:`CemtModel.structure_tensors`; on a uniform periodic grid the features and
        their Jacobian come from one analytic FFT pass
        (:meth:`~cemt.GMPFeaturizer.features_grid_jacobian`)."""
        pts = None if points is None else np.asarray(points, dtype=np.float64)
        match = None if pts is None else self._grid_of(atoms, pts)
        if match is None:
            return super().structure_tensors(atoms, points, weights, jacobian=jacobian)
        pos, cell, pbc = self._prepare(atoms)
        _, w = self.points_and_weights(pos, atoms, pts, weights)
        idx = torch.as_tensor(match.index)
        out = {"weights": w.detach(), "jacobian": None, "dweights": None}
        with torch.no_grad():
            if jacobian:
                g, jac = self.featurizer.features_grid_jacobian(
                    pos, atoms.numbers, cell, pbc, match.shape, shift=match.shift)
                out["jacobian"] = jac[idx]
            else:
                g = self.featurizer.features_grid_torch(pos, atoms.numbers, cell, pbc,
                                                        match.shape, shift=match.shift)
        out["features"] = g[idx]
        return out


class AtomModel(CemtModel):
    """Atom-centred model: ``E = Σ_a e(G(R_a))``; points move with their atom."""

    kind = "atom"

    def points_and_weights(self, positions, atoms, points=None, weights=None):
        return positions, torch.ones(positions.shape[0], dtype=self.torch_dtype)


class BondModel(CemtModel):
    """Bond-centred model: ``E = Σ_b f_c(r_b) e(G(m_b))`` over midpoints ``m_b`` of pairs closer
    than ``bond_cutoff`` (Å); the points move with both atoms."""

    kind = "bond"

    def __init__(self, features: dict, bond_cutoff: float = 3.0, **kwargs) -> None:
        if not (isinstance(bond_cutoff, (int, float)) and math.isfinite(bond_cutoff)
                and bond_cutoff > 0):
            raise ConfigError(f"bond_cutoff must be a distance > 0 Å, got {bond_cutoff!r}")
        super().__init__(features, bond_cutoff=float(bond_cutoff), **kwargs)

    def points_and_weights(self, positions, atoms, points=None, weights=None):
        rc = self.settings["bond_cutoff"]
        pts, pairs, offsets = bond_centred_points(positions, atoms.cell.array, atoms.pbc, rc)
        if pts.shape[0] == 0:
            raise StructureError(f"no atom pairs closer than bond_cutoff = {rc} Å")
        cell = torch.as_tensor(atoms.cell.array, dtype=positions.dtype)
        vec = positions[pairs[:, 1]] + offsets @ cell - positions[pairs[:, 0]]
        r = torch.sqrt((vec * vec).sum(-1))
        fc = 0.5 * (torch.cos(math.pi * r / rc) + 1.0)
        return pts, fc


def _is_identity(index: np.ndarray) -> bool:
    """Whether a :class:`~cemt.GridMatch` index keeps the grid's own order."""
    return bool(np.array_equal(index, np.arange(len(index))))


MODEL_KINDS = {"grid": GridModel, "atom": AtomModel, "bond": BondModel}


def build_model(config: dict) -> CemtModel:
    """Rebuild a model (untrained weights) from :attr:`CemtModel.config`."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    bond_cutoff = cfg.pop("bond_cutoff", None)
    kwargs = {k: cfg[k] for k in ("widths", "activation", "dtype", "data_spec") if k in cfg}
    if kind == "bond":
        return BondModel(cfg["features"], bond_cutoff=3.0 if bond_cutoff is None
                         else bond_cutoff, **kwargs)
    if kind == "grid":  # files written before the setting existed used the given weights
        return GridModel(cfg["features"], quadrature=cfg.get("quadrature") or "nodal",
                         reference=cfg.get("reference"), **kwargs)
    return MODEL_KINDS[kind](cfg["features"], **kwargs)
