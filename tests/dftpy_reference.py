"""Independent plane-wave OF-DFT reference (DFTpy) for tests and benchmarks.

This module is test/benchmark infrastructure only: the ``fedft`` toolkit itself must
never import DFTpy. Import it from a test with ``from dftpy_reference import ...``
(``tests/`` is on ``sys.path`` under pytest) or from a benchmark script after
``sys.path.insert(0, "<repo>/tests")``.

Functional (BACKGROUND.md section 1):

    E = T_TF + lambda * T_vW + E_xc^LDA(Slater + PZ81) + E_H + E_eI + E_II(Ewald)

built from DFTpy's ``Functional(type='KEDF', name='TFvW', y=lambda)``,
``Functional(type='XC', name='LDA', libxc=False)``, ``Functional(type='HARTREE')`` and
``Functional(type='PSEUDO', PP_list=...)``; the density is found by DFTpy's direct
minimisation (``Optimization``, truncated Newton by default).

Units: input ``atoms`` is an ``ase.Atoms`` in angstrom (as always in ASE). Everything
returned is atomic units: hartree, bohr, Ha/bohr, electrons/bohr^3. ``spacing`` is in
bohr, ``ecut_ev`` in eV.

Conventions worth knowing when comparing to a real-space code:

* DFTpy drops the G=0 term of the Hartree energy and keeps the G=0 term of the local
  pseudopotential, i.e. its non-Coulomb part  N_e/Omega * sum_I alpha_I  with
  alpha_I = lim_{G->0} [V_I(G) + 4 pi Z_I / G^2]  (pi Z rc^2 for the erf potential).
  The ion-ion term is the point-ion Ewald energy *including* the compensating-background
  term  -pi (sum Z)^2 / (2 Omega eta).  Only the sum hartree + electron_ion + ewald
  ('electrostatic') is convention independent; compare individual electrostatic terms
  with another code only after mapping conventions.
* The von Weizsaecker energy is the integrated (gauge-free) value, the TF energy is
  C_F int rho^(5/3); both are reported separately.
* The plane-wave grid is the FFT grid implied by ``ecut`` (DFTpy's convention
  h = pi / sqrt(2 ecut_Ha), i.e. the FFT box contains |G|^2/2 <= ecut along each axis).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Mapping, Sequence

import numpy as np

from dftpy.constants import Units, environ as _dftpy_environ
from dftpy.field import DirectField
from dftpy.functional import Functional, TotalFunctional
from dftpy.functional.pseudo import ReadPseudo
from dftpy.functional.pseudo.abstract_pseudo import BasePseudo
from dftpy.grid import DirectGrid
from dftpy.ions import Ions
from dftpy.optimization import Optimization

#: DFTpy's (== ASE's) unit constants; use these to build inputs given in bohr.
BOHR_IN_ANGSTROM = Units.Bohr
HARTREE_IN_EV = Units.Ha

# DFTpy split-energy keys -> our component names
_COMPONENT_KEYS = {
    "KEDF-TF": "tf",
    "KEDF-VW": "vw",
    "XC": "xc",
    "HARTREE": "hartree",
    "PSEUDO": "electron_ion",
    "II": "ewald",
}

#: Default cutoff. Measured discretisation error of E/atom for fcc Al (even FFT sizes, as
#: chosen by ``grid_shape``):
#:   erf Z=3 rc=1 bohr, TF+1vW, a=4.05 A: <1e-6 at h<=0.64 bohr (~330 eV),
#:                                          <1e-8 at h<=0.48 bohr (~590 eV);
#:   GNH psp8, TF+0.2vW, a=8 bohr:          <1e-6 at h<=0.40 bohr (~840 eV),
#:                                          <1e-8 at h<=0.333 bohr (~1210 eV).
#: 1600 eV (h~0.29 bohr) is converged to ~1e-10 Ha/atom for both. Harder (more
#: localised) pseudopotentials need more: use ``dftpy_converged_energy``.
DEFAULT_ECUT_EV = 1600.0
DEFAULT_TOL = 1.0e-10


class ErfLocalPseudo(BasePseudo):
    """Analytic local pseudopotential V(r) = -Z erf(r/rc)/r for DFTpy's ``PP_list``.

    DFTpy accepts a ``BasePseudo`` instance in ``PP_list``. With ``direct=False`` the
    radial table is read as reciprocal space: ``r`` holds |G| (1/bohr) and ``v`` holds
    V(G) = -4 pi Z exp(-G^2 rc^2/4) / G^2 (Ha bohr^3), with v[0] = pi Z rc^2, the
    non-Coulomb G->0 limit. DFTpy cubic-spline interpolates v(q) on q >= r[1] and uses a
    quartic through v[0..2] below r[1]; a logarithmic q table keeps the spline of the
    1/q^2 singularity accurate to ~1e-12 relative (checked in the tests).
    """

    def __init__(self, zval: float, rc: float, qmin: float = 1.0e-4, qmax: float | None = None,
                 npoints: int = 20000):
        super().__init__(fname=None, direct=False)
        if rc <= 0:
            raise ValueError("rc must be positive (bohr)")
        self.rc = float(rc)
        self._zval = float(zval)
        if qmax is None:
            # exp(-q^2 rc^2 / 4) < e^-60: far below double precision relevance
            qmax = max(30.0, np.sqrt(240.0) / self.rc)
        q = np.empty(npoints)
        q[0] = 0.0
        q[1:] = np.logspace(np.log10(qmin), np.log10(qmax), npoints - 1)
        self.r = q
        self.v = self.vq(q)
        self.info = {"comment": f"erf local pseudopotential Z={zval} rc={rc} bohr"}

    def vq(self, q):
        """Analytic V(q) (Ha bohr^3) including the G=0 limit pi Z rc^2 at q == 0."""
        q = np.asarray(q, dtype=float)
        out = np.empty_like(q)
        zero = q == 0.0
        qq = q[~zero] ** 2
        out[~zero] = -4.0 * np.pi * self._zval * np.exp(-qq * self.rc ** 2 / 4.0) / qq
        out[zero] = np.pi * self._zval * self.rc ** 2
        return out


def _pp_list(pseudo: Mapping[str, object]) -> tuple[dict, tuple | None]:
    """DFTpy PP_list plus a hashable cache key (None if not cacheable)."""
    pp, key = {}, []
    for sym, spec in sorted(pseudo.items()):
        if isinstance(spec, BasePseudo):
            pp[sym] = spec
            key.append((sym, "object", id(spec)))
        elif isinstance(spec, (tuple, list)):
            if len(spec) != 3 or str(spec[0]).lower() != "erf":
                raise ValueError(f"pseudo[{sym!r}]: expected ('erf', Z, rc_bohr), got {spec!r}")
            pp[sym] = ErfLocalPseudo(float(spec[1]), float(spec[2]))
            key.append((sym, "erf", float(spec[1]), float(spec[2])))
        else:
            path = os.path.abspath(os.fspath(spec))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"pseudopotential file for {sym}: {path}")
            pp[sym] = path
            st = os.stat(path)
            key.append((sym, "file", path, st.st_mtime_ns, st.st_size))
    return pp, tuple(key)


# DFTpy's ReadPseudo (radial table -> reciprocal-space spline) costs ~3 s for a psp8 file;
# it depends only on the pseudopotentials, so reuse it across structures/grids.
_READPP_CACHE: dict = {}


def _read_pseudo(pseudo: Mapping[str, object]):
    pp_list, key = _pp_list(pseudo)
    readpp = _READPP_CACHE.get(key)
    if readpp is None:
        readpp = ReadPseudo(pp_list)
        if len(_READPP_CACHE) > 16:
            _READPP_CACHE.clear()
        _READPP_CACHE[key] = readpp
    return readpp


def _good_fft_size(n: int) -> int:
    """Smallest even integer >= n whose prime factors are all in {2, 3, 5, 7}."""
    from meshes import fft_size

    return 2 * fft_size(-(-max(2, int(n)) // 2), factors=(2, 3, 5, 7))


def grid_shape(cell_bohr, ecut_ev: float | None = None, spacing: float | None = None) -> tuple:
    """FFT grid for a cell (rows = lattice vectors, bohr).

    ``spacing`` (bohr) wins over ``ecut_ev``; ecut -> spacing by h = pi/sqrt(2 ecut_Ha).
    Each direction gets the smallest FFT-friendly even size with L/n <= h.
    """
    if spacing is None:
        if ecut_ev is None:
            raise ValueError("give ecut_ev or spacing")
        spacing = np.pi / np.sqrt(2.0 * ecut_ev / HARTREE_IN_EV)
    lengths = np.linalg.norm(np.asarray(cell_bohr, dtype=float), axis=1)
    return tuple(_good_fft_size(int(np.ceil(L / spacing - 1e-9))) for L in lengths)


@contextlib.contextmanager
def _dftpy_quiet(verbose: bool):
    old = _dftpy_environ.get("LOGLEVEL", 2)
    if not verbose:
        _dftpy_environ["LOGLEVEL"] = 100
    try:
        yield
    finally:
        _dftpy_environ["LOGLEVEL"] = old


def dftpy_reference(atoms, pseudo: Mapping[str, object], kinetic_lambda: float,
                    ecut_ev: float | None = DEFAULT_ECUT_EV, spacing: float | None = None,
                    tol: float = DEFAULT_TOL, nr: Sequence[int] | None = None,
                    method: str = "TN", pme: bool = False, forces: bool = True,
                    maxiter: int = 500, rho0=None, verbose: bool = False) -> dict:
    """Ground state of TF + lambda vW + LDA(PZ81) with DFTpy.

    Parameters
    ----------
    atoms : ase.Atoms, periodic, positions/cell in angstrom.
    pseudo : {symbol: path | ('erf', Z, rc_bohr) | BasePseudo}. Paths: psp8/recpot/upf/...
    kinetic_lambda : vW prefactor lambda.
    ecut_ev : plane-wave (density) cutoff in eV; ignored if ``spacing`` or ``nr`` given.
    spacing : maximum grid spacing in bohr (overrides ecut_ev).
    nr : explicit FFT grid shape (overrides both).
    tol : minimiser stopping tolerance in Ha/atom (DFTpy ``econv`` = tol * natoms on the
        total energy, over ``ncheck`` = 2 successive steps).
    method : DFTpy optimiser, 'TN' (truncated Newton), 'LBFGS' or 'CG-HS'.
    pme : use DFTpy's smooth-PME B-spline structure factors for the pseudopotential and
        Ewald. Default False (exact structure factors). PME's error depends on the grid;
        measured for erf fcc Al: 4e-5 Ha/atom at h=0.85 bohr, 3e-6 at h=0.70 bohr,
        1e-7 at h=0.43 bohr, so it is not a reference-quality option on coarse grids.
    rho0 : optional initial density (array of the grid shape, electrons/bohr^3).

    Returns
    -------
    dict with (atomic units): energy, energy_per_atom, components (tf, vw, xc, hartree,
    electron_ion, ewald, electrostatic), components_per_atom, forces (nat, 3) and
    forces_split, rho (ndarray, shape nr), nr, spacing (bohr, per lattice vector),
    cell (bohr), positions (bohr), ecut_ha (the cutoff implied by the coarsest spacing),
    mu (chemical potential), niter, wall_time and wall_time_scf (seconds), settings.
    """
    t_start = time.perf_counter()
    if not np.all(atoms.pbc):
        raise ValueError("DFTpy reference needs a fully periodic cell")
    ions = Ions.from_ase(atoms)  # -> bohr, via DFTpy's Units.Bohr (== ase.units.Bohr)
    cell = np.array(ions.cell.array, dtype=float)
    if nr is None:
        nr = grid_shape(cell, ecut_ev=ecut_ev, spacing=spacing)
    nr = tuple(int(n) for n in nr)
    nat = len(ions)

    with _dftpy_quiet(verbose):
        grid = DirectGrid(lattice=cell, nr=np.array(nr), full=False)
        pp = Functional(type="PSEUDO", grid=grid, ions=ions, readpp=_read_pseudo(pseudo), PME=pme)
        ke = Functional(type="KEDF", name="TFvW", y=float(kinetic_lambda))
        xc = Functional(type="XC", name="LDA", libxc=False)
        hartree = Functional(type="HARTREE")
        evaluator = TotalFunctional(KineticEnergyFunctional=ke, XCFunctional=xc,
                                    HARTREE=hartree, PSEUDO=pp)

        nelec = float(ions.get_ncharges())
        rho = DirectField(grid=grid)
        if rho0 is None:
            rho[:] = nelec / grid.volume
        else:
            rho[:] = np.asarray(rho0, dtype=float).reshape(nr)
            rho *= nelec / rho.integral()

        opt = Optimization(EnergyEvaluator=evaluator, optimization_method=method,
                           optimization_options={"econv": tol * nat, "maxiter": maxiter})
        t_scf = time.perf_counter()
        rho = opt.optimize_rho(guess_rho=rho)
        wall_scf = time.perf_counter() - t_scf
        if opt.converged != 0:
            raise RuntimeError(f"DFTpy density optimisation did not converge (flag {opt.converged})")

        ep = evaluator.get_energy_potential(rho, calcType={"E"}, split=True)
        comps = {}
        for key, out in ep.items():
            if key == "TOTAL":
                continue
            if key not in _COMPONENT_KEYS:
                raise RuntimeError(f"unexpected DFTpy energy term {key!r}")
            comps[_COMPONENT_KEYS[key]] = float(out.energy)
        missing = set(_COMPONENT_KEYS.values()) - set(comps)
        if missing:
            raise RuntimeError(f"DFTpy did not report {sorted(missing)}")
        comps["electrostatic"] = comps["hartree"] + comps["electron_ion"] + comps["ewald"]
        energy = float(ep["TOTAL"].energy)

        f_total, f_split = None, None
        if forces:
            fs = evaluator.get_forces(rho, split=True)
            f_total = np.array(fs["TOTAL"], dtype=float)
            f_split = {k: np.array(v, dtype=float) for k, v in fs.items() if k != "TOTAL"}

    wall = time.perf_counter() - t_start
    spacings = np.linalg.norm(cell, axis=1) / np.array(nr)
    return {
        "energy": energy,
        "energy_per_atom": energy / nat,
        "components": comps,
        "components_per_atom": {k: v / nat for k, v in comps.items()},
        "forces": f_total,
        "forces_split": f_split,
        "rho": np.array(rho, dtype=float).reshape(nr),
        "nr": nr,
        "spacing": spacings,
        "ecut_ha": float(np.pi ** 2 / (2.0 * spacings.max() ** 2)),
        "cell": cell,
        "positions": np.array(ions.positions, dtype=float),
        "natoms": nat,
        "nelec": nelec,
        "mu": float(np.ravel(opt.mu)[0]),
        "wall_time": wall,
        "wall_time_scf": wall_scf,
        "settings": {"kinetic_lambda": float(kinetic_lambda), "method": method, "tol": tol,
                     "pme": pme, "xc": "LDA (Slater + PZ81, DFTpy built-in)",
                     "pseudo": {k: (v if isinstance(v, (str, tuple)) else repr(v))
                                for k, v in pseudo.items()}},
    }


def dftpy_converged_energy(atoms, pseudo, kinetic_lambda, target: float = 1.0e-7,
                           ecuts_ev: Sequence[float] = (400, 800, 1200, 1600, 2400, 3200),
                           **kwargs) -> dict:
    """Raise ecut until two successive energies agree to ``target`` Ha/atom.

    Returns the result at the last ecut with extra keys ``ecut_ev`` and ``ecut_history``
    [(ecut_ev, nr, E/atom), ...]. Raises if the ladder is exhausted. Successive grids
    differ, so the energy change is an honest (slightly pessimistic) error estimate for the
    coarser of the two; the finer one is returned.
    """
    history = []
    prev = None
    kwargs.setdefault("forces", False)
    kwargs.setdefault("tol", min(DEFAULT_TOL, target * 1e-2))
    for ec in ecuts_ev:
        res = dftpy_reference(atoms, pseudo, kinetic_lambda, ecut_ev=ec, **kwargs)
        if prev is not None and res["nr"] == prev["nr"]:
            continue
        history.append((float(ec), res["nr"], res["energy_per_atom"]))
        if prev is not None and abs(res["energy_per_atom"] - prev["energy_per_atom"]) < target:
            res["ecut_ev"] = float(ec)
            res["ecut_history"] = history
            return res
        prev = res
    raise RuntimeError(f"not converged to {target} Ha/atom over ecuts {list(ecuts_ev)}: {history}")
