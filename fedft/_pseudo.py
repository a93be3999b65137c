"""Local pseudopotentials: the analytic erf form and tabulated radial potentials.

Every pseudopotential is a radial electron-ion potential ``V(r)`` (Ha, r in bohr) that equals
``-Z/r`` beyond a core radius. The electrostatics split it as

    V(r) = -Z erf(r/s)/r  +  V_sr(r),     V_sr(r) = V(r) + Z erf(r/s)/r,

where the first part is the potential of a Gaussian compensation charge of width ``s``
(solved for on the mesh with every periodic image) and ``V_sr`` is short-ranged and evaluated
analytically at the quadrature points (see :mod:`fedft._ions`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from scipy.special import erf

from ._errors import PseudopotentialError
from ._units import BOHR, HARTREE

log = logging.getLogger(__name__)

#: |V(r) + Z/r| below this (Ha) counts as "outside the core".
CORE_TOLERANCE = 1e-8


def _erf_over_r(r: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """``erf(r/s)/r`` and its r-derivative, finite at r = 0."""
    r = np.asarray(r, dtype=float)
    small = r < 1e-6 * s
    rr = np.where(small, 1.0, r)
    f = erf(rr / s) / rr
    df = 2.0 / (np.sqrt(np.pi) * s) * np.exp(-(rr / s) ** 2) / rr - f / rr
    f0 = 2.0 / (np.sqrt(np.pi) * s)
    return np.where(small, f0 * (1 - (r / s) ** 2 / 3), f), np.where(
        small, -f0 * 2 * r / (3 * s**2), df)


@dataclass(frozen=True)
class ErfPseudo:
    """Analytic local pseudopotential ``V(r) = -Z erf(r/rc)/r`` (its ion is a Gaussian charge).

    Parameters
    ----------
    z : float
        Valence charge (e).
    rc : float
        Width (bohr).
    """

    z: float
    rc: float
    symbol: str | None = None

    def __post_init__(self):
        if not (np.isfinite(self.z) and self.z > 0):
            raise PseudopotentialError(f"erf pseudopotential: Z must be positive, got {self.z}")
        if not (np.isfinite(self.rc) and self.rc > 0):
            raise PseudopotentialError(f"erf pseudopotential: rc must be positive, got {self.rc}")

    @property
    def core_radius(self) -> float:
        """Radius (bohr) beyond which ``|V + Z/r| < CORE_TOLERANCE``."""
        return 6.5 * self.rc

    @property
    def length_scale(self) -> float:
        """Shortest length (bohr) on which the potential varies; the mesh must resolve it."""
        return self.rc

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"erf:{self.z!r}:{self.rc!r}".encode()).hexdigest()

    @property
    def spec(self) -> str:
        return f"erf:{self.z:g}:{self.rc * BOHR:.10g}"

    def potential(self, r) -> tuple[np.ndarray, np.ndarray]:
        """``V(r)`` (Ha) and ``dV/dr`` (Ha/bohr) at radii ``r`` (bohr)."""
        f, df = _erf_over_r(r, self.rc)
        return -self.z * f, -self.z * df


@dataclass(frozen=True)
class TabulatedPseudo:
    """A local pseudopotential tabulated on a radial grid.

    Parameters
    ----------
    symbol : str
        Chemical symbol.
    z : float
        Valence charge (e).
    r : (n,) array
        Radial grid (bohr), increasing, starting at or near 0.
    v : (n,) array
        ``V(r)`` (Ha) on the grid; ``-Z/r`` is assumed beyond the last point.
    source : str
        Where it came from (file path).
    digest : str
        SHA-256 of the source file.
    """

    symbol: str
    z: float
    r: np.ndarray
    v: np.ndarray
    source: str = ""
    digest: str = ""
    _spline: object = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        r = np.asarray(self.r, float)
        v = np.asarray(self.v, float)
        where = f" ({self.source})" if self.source else ""
        if r.ndim != 1 or r.shape != v.shape or r.size < 10:
            raise PseudopotentialError(f"pseudopotential table{where} needs matching r, V arrays"
                                       " of at least 10 points")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(v))):
            raise PseudopotentialError(f"pseudopotential table{where} contains NaN or inf")
        if np.any(np.diff(r) <= 0) or r[0] < 0:
            raise PseudopotentialError(f"pseudopotential radial grid{where} must increase from 0")
        if not (np.isfinite(self.z) and self.z > 0):
            raise PseudopotentialError(f"pseudopotential{where}: valence charge must be > 0")
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "v", v)
        # V is even in r: a table that starts at the origin gets a zero slope there
        bc = ((1, 0.0), "not-a-knot") if r[0] == 0.0 else "not-a-knot"
        from scipy.interpolate import CubicSpline  # tables only: the import takes ~0.07 s

        object.__setattr__(self, "_spline", CubicSpline(r, v, bc_type=bc))
        if abs(v[-1] + self.z / r[-1]) > CORE_TOLERANCE:
            log.warning("pseudopotential%s is not -Z/r at the end of its table (r=%.3g bohr,"
                        " |V+Z/r|=%.2g Ha)", where, r[-1], abs(v[-1] + self.z / r[-1]))

    @property
    def core_radius(self) -> float:
        """Radius (bohr) beyond which ``|V + Z/r| < CORE_TOLERANCE`` in the table."""
        with np.errstate(divide="ignore"):
            dev = np.abs(self.v + self.z / self.r)
        dev[self.r == 0] = np.inf
        outside = np.nonzero(dev > CORE_TOLERANCE)[0]
        return float(self.r[min(outside[-1] + 1, self.r.size - 1)]) if outside.size else 0.0

    @property
    def length_scale(self) -> float:
        """Shortest length (bohr) on which the potential varies: 0.3 × the radius beyond which
        ``|V + Z/r| < 1e-3 Z``."""
        with np.errstate(divide="ignore"):
            dev = np.abs(self.v + self.z / self.r)
        dev[self.r == 0] = np.inf
        outside = np.nonzero(dev > 1e-3 * self.z)[0]
        return 0.3 * float(self.r[outside[-1]]) if outside.size else float(self.r[1])

    @property
    def spec(self) -> str:
        return self.source

    def potential(self, r) -> tuple[np.ndarray, np.ndarray]:
        """``V(r)`` (Ha) and ``dV/dr`` (Ha/bohr) at radii ``r`` (bohr); ``-Z/r`` beyond the
        table."""
        r = np.asarray(r, dtype=float)
        inside = r <= self.r[-1]
        rin = np.where(inside, r, self.r[-1])
        rout = np.where(inside, 1.0, r)
        v = np.where(inside, self._spline(rin), -self.z / rout)
        dv = np.where(inside, self._spline(rin, 1), self.z / rout**2)
        return v, dv


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(text: str, path: Path) -> np.ndarray:
    try:
        return np.array(text.replace("D", "E").replace("d", "e").split(), dtype=float)
    except ValueError as exc:
        raise PseudopotentialError(f"{path}: non-numeric value in the table ({exc})") from exc


def read_psp8(path) -> TabulatedPseudo:
    """Read the local channel of an ABINIT/ONCVPSP ``.psp8`` file.

    The local potential is the ``lloc`` block (``lloc = 4``: the separate local block after the
    projectors; ``lloc <= lmax`` with no projectors on that channel: that channel itself).

    Raises
    ------
    PseudopotentialError
        If the file is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise PseudopotentialError(f"pseudopotential file {path} does not exist")
    lines = path.read_text(errors="replace").splitlines()
    try:
        zatom, zion = (float(x) for x in lines[1].split()[:2])
        pspcod, _pspxc, lmax, lloc, mmax = (int(float(x)) for x in lines[2].split()[:5])
        nproj = [int(x) for x in lines[4].split()[: lmax + 1]]
        ext = int(lines[5].split()[0])
    except (IndexError, ValueError) as exc:
        raise PseudopotentialError(f"{path}: malformed psp8 header ({exc})") from exc
    if pspcod != 8:
        raise PseudopotentialError(f"{path}: pspcod is {pspcod}, expected 8 for a psp8 file")
    if ext == 2:
        raise PseudopotentialError(f"{path}: spin-orbit psp8 files are not supported")
    body = lines[6:]

    def block(start: int, ncol: int) -> tuple[np.ndarray, int]:
        rows = body[start + 1: start + 1 + mmax]
        if len(rows) < mmax:
            raise PseudopotentialError(f"{path}: truncated table (expected {mmax} rows)")
        data = _numbers(" ".join(rows), path)
        if data.size != mmax * ncol:
            raise PseudopotentialError(f"{path}: table rows do not have {ncol} columns")
        return data.reshape(mmax, ncol), start + 1 + mmax

    at = 0
    local = None
    for ell in range(lmax + 1):
        if nproj[ell] > 0:
            _, at = block(at, 2 + nproj[ell])
        elif ell == lloc:
            local, at = block(at, 3)
    if local is None:
        local, at = block(at, 3)
    r, v = local[:, 1], local[:, 2]
    log.debug("read psp8 %s: Z=%g zatom=%g mmax=%d", path, zion, zatom, mmax)
    return TabulatedPseudo(symbol=lines[0].split()[0], z=zion, r=r, v=v, source=str(path),
                           digest=_file_digest(path))


#: Ry per Ha: UPF tables are in Rydberg.
_RY_PER_HA = 2.0


def _tag_text(text: str, tag: str) -> str | None:
    """Contents of the first ``<tag ...> ... </tag>`` element (exact tag name), or ``None``."""
    m = re.search(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}\s*>", text, flags=re.S | re.I)
    return m.group(1) if m else None


def _float(word: str, what: str, path: Path) -> float:
    try:
        return float(word.strip().replace("D", "E").replace("d", "e"))
    except (ValueError, AttributeError) as exc:
        raise PseudopotentialError(f"{path}: {what} {word!r} is not a number") from exc


def _upf_v1(text: str, path: Path) -> tuple[str, float, str, str, dict]:
    """Symbol, Z, radial-mesh text, local-potential text and declared sizes of a UPF v1 file."""
    header = _tag_text(text, "PP_HEADER")
    if header is None:
        raise PseudopotentialError(f"{path}: UPF v1 file without a <PP_HEADER> block")
    lines = [ln for ln in header.splitlines() if ln.strip()]
    symbol = z = None
    sizes = {}
    for ln in lines:
        low = ln.strip().lower()
        if low.endswith("element"):
            symbol = ln.split()[0]
        elif low.endswith("z valence"):
            z = _float(ln.split()[0], "z_valence", path)
        elif low.endswith("number of points in mesh"):
            sizes["mesh_size"] = int(_float(ln.split()[0], "mesh size", path))
        elif ln.split()[0] == "1/r":  # pseudo_type line of a bare Coulomb potential
            raise PseudopotentialError(f"{path}: bare Coulomb (1/r) UPF files have no finite "
                                       "local potential and are not supported")
    if z is None:
        raise PseudopotentialError(f"{path}: UPF v1 <PP_HEADER> has no line ending in "
                                   "'Z valence' (z_valence missing)")
    if symbol is None:
        raise PseudopotentialError(f"{path}: UPF v1 <PP_HEADER> has no line ending in 'Element'")
    mesh = _tag_text(_tag_text(text, "PP_MESH") or "", "PP_R")
    local = _tag_text(text, "PP_LOCAL")
    return symbol, z, mesh, local, sizes


def _upf_v2(text: str, path: Path) -> tuple[str, float, str, str, dict]:
    """Symbol, Z, radial-mesh text, local-potential text and declared sizes of a UPF v2 file."""
    # PP_INFO is free text (input files, '&' namelists) and often not valid XML: drop it.
    body = re.sub(r"<PP_INFO\b.*?</PP_INFO\s*>", "", text, flags=re.S | re.I)
    try:
        root = ET.fromstring(body.strip())
    except ET.ParseError as exc:
        raise PseudopotentialError(f"{path}: malformed UPF v2 XML ({exc})") from exc
    header = root.find("PP_HEADER")
    if header is None:
        raise PseudopotentialError(f"{path}: UPF v2 file without a <PP_HEADER> element")
    if "z_valence" not in header.attrib:
        raise PseudopotentialError(f"{path}: UPF v2 <PP_HEADER> has no z_valence attribute")
    z = _float(header.attrib["z_valence"], "z_valence", path)
    symbol = header.attrib.get("element", "").strip()
    if not symbol:
        raise PseudopotentialError(f"{path}: UPF v2 <PP_HEADER> has no element attribute")
    if header.attrib.get("is_coulomb", "F").strip().lower().lstrip(".").startswith("t"):
        raise PseudopotentialError(f"{path}: bare Coulomb (is_coulomb) UPF files have no finite "
                                   "local potential and are not supported")
    r_el, v_el = root.find("PP_MESH/PP_R"), root.find("PP_LOCAL")
    sizes = {name: int(_float(el.attrib["size"], f"{name} size", path))
             for name, el in (("PP_R", r_el), ("PP_LOCAL", v_el))
             if el is not None and "size" in el.attrib}
    if "mesh_size" in header.attrib:
        sizes["mesh_size"] = int(_float(header.attrib["mesh_size"], "mesh_size", path))
    return (symbol, z, None if r_el is None else (r_el.text or ""),
            None if v_el is None else (v_el.text or ""), sizes)


def read_upf(path) -> TabulatedPseudo:
    """Read the local channel of a Quantum ESPRESSO ``.upf`` file (UPF v1 or v2).

    UPF v1 is recognised by its text ``<PP_HEADER>`` (valence charge on the line ending in
    ``Z valence``, symbol on the line ending in ``Element``); UPF v2 by its ``<UPF version="2...">``
    root (``z_valence`` and ``element`` attributes of ``<PP_HEADER>``). The radial mesh
    ``<PP_MESH><PP_R>`` is in bohr; ``<PP_LOCAL>`` is ``V_loc(r)`` in **Rydberg** and is
    converted to Hartree (× 1/2).

    Parameters
    ----------
    path : str or Path
        The ``.upf`` file.

    Returns
    -------
    TabulatedPseudo
        ``r`` (bohr) and ``v`` (Ha) as tabulated in the file.

    Raises
    ------
    PseudopotentialError
        If the file is missing, is not UPF, or a needed piece is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise PseudopotentialError(f"pseudopotential file {path} does not exist")
    text = path.read_text(errors="replace")
    if re.search(r"<UPF\b", text, flags=re.I):
        symbol, z, mesh, local, sizes = _upf_v2(text, path)
        version = 2
    elif re.search(r"<PP_HEADER\s*>", text, flags=re.I):
        symbol, z, mesh, local, sizes = _upf_v1(text, path)
        version = 1
    else:
        raise PseudopotentialError(f"{path}: not a UPF file (neither a <UPF> root nor a "
                                   "<PP_HEADER> block)")
    if mesh is None:
        raise PseudopotentialError(f"{path}: no <PP_MESH><PP_R> radial mesh")
    if local is None:
        raise PseudopotentialError(f"{path}: no <PP_LOCAL> local potential")
    r, v = _numbers(mesh, path), _numbers(local, path)
    for name, arr in (("PP_R", r), ("PP_LOCAL", v)):
        if name in sizes and arr.size != sizes[name]:
            raise PseudopotentialError(f"{path}: truncated table: <{name}> has {arr.size} values,"
                                       f" its size attribute says {sizes[name]}")
    if "mesh_size" in sizes and r.size != sizes["mesh_size"]:
        raise PseudopotentialError(f"{path}: truncated table: the radial mesh <PP_R> has {r.size}"
                                   f" values, the header's mesh size is {sizes['mesh_size']}")
    if r.size != v.size:
        raise PseudopotentialError(f"{path}: truncated table: <PP_LOCAL> has {v.size} values but"
                                   f" the radial mesh <PP_R> has {r.size}")
    log.debug("read UPF v%d %s: %s Z=%g mesh=%d", version, path, symbol, z, r.size)
    return TabulatedPseudo(symbol=symbol.capitalize(), z=z, r=r, v=v / _RY_PER_HA,
                           source=str(path), digest=_file_digest(path))


#: Real-space table a .recpot file is transformed onto: ``r = 0, RECPOT_STEP, ..., RECPOT_RMAX``
#: (bohr). ``-Z/r`` is assumed beyond ``RECPOT_RMAX``.
RECPOT_RMAX = 12.0
RECPOT_STEP = 0.005
#: The trapezoidal q-sum puts odd images of ``r V_s(r)`` at ``r ± 2πk/dq``. If ``2π/dq < 2 rmax``
#: they can reach ``r <= rmax``; the file's own q grid is then kept only if
#: ``|r V_s(r)| < _ALIAS_TOLERANCE`` (Ha·bohr, per unit Z) on ``[2π/dq - rmax, π/dq]`` (where the
#: images would come from), else ``V_s(q)`` is refined by a quintic spline until
#: ``2π/dq >= 2 rmax``.
_ALIAS_TOLERANCE = 1e-11
#: ``exp(-(qmax·rc/2)²)`` at the end of the q table for the Coulomb split width ``rc``: the
#: Gaussian tail the transform omits beyond ``qmax`` is below 1e-16 relative.
_SPLIT_EXPONENT = 37.0


def _recpot_local_block(path: Path) -> tuple[float, np.ndarray]:
    """``kmax`` (1/Å) and the local ``V(q)`` values (eV·Å³) of a CASTEP ``.recpot`` file."""
    lines = path.read_text(errors="replace").splitlines()
    end = next((i for i, ln in enumerate(lines) if "END COMMENT" in ln.upper()), None)
    if end is None:
        raise PseudopotentialError(f"{path}: no 'END COMMENT' line: not a CASTEP .recpot file")
    rest = [(i, ln) for i, ln in enumerate(lines[end + 1:], end + 1) if ln.strip()]
    if len(rest) < 2:
        raise PseudopotentialError(f"{path}: truncated after 'END COMMENT' (expected the version"
                                   " line '3 5' and the kmax line)")
    version = rest[0][1].split()
    if version[:2] != ["3", "5"]:
        raise PseudopotentialError(f"{path}: version line is {rest[0][1].strip()!r}, expected "
                                   "'3 5' (the only recpot layout supported)")
    kmax = _float(rest[1][1].split()[0], "kmax", path)
    if not (np.isfinite(kmax) and kmax > 0):
        raise PseudopotentialError(f"{path}: kmax must be a positive number (1/Å), got {kmax}")
    values = []
    for _, ln in rest[2:]:
        words = ln.split()
        # The local table ends at a line holding one integer: '1000' (end of the potential) or
        # the angular momentum that opens a nonlocal block (ignored here).
        if len(words) == 1 and re.fullmatch(r"[+-]?\d+", words[0]):
            break
        values.append(ln)
    else:
        raise PseudopotentialError(f"{path}: truncated table: the local V(q) block is not "
                                   "terminated by a '1000' line")
    v = _numbers(" ".join(values), path)
    if v.size < 16:
        raise PseudopotentialError(f"{path}: the local V(q) table has only {v.size} values")
    return kmax, v


def _recpot_valence(q: np.ndarray, vq: np.ndarray, path: Path) -> float:
    """Valence charge from ``V(q) = -4πZ/q² + V0 + a q² + ...`` at small q.

    ``q²(V(q) - V(0)) = -4πZ + a q⁴ + O(q⁶)`` at q1 and q2 = 2 q1; Richardson extrapolation
    removes the ``q⁴`` term. Recpot files do not state Z, so it must be an integer.
    """
    f1, f2 = (q[i] ** 2 * (vq[i] - vq[0]) for i in (1, 2))
    z_est = -(16.0 * f1 - f2) / 15.0 / (4.0 * np.pi)
    z = float(np.rint(z_est))
    if not (np.isfinite(z_est) and z > 0 and abs(z_est - z) < 1e-3 * max(z, 1.0)):
        raise PseudopotentialError(
            f"{path}: cannot infer the valence charge: V(q) near q=0 gives Z ≈ {z_est:.6g}, not "
            "a positive integer (is V(q>0) missing the -4πZ/q² Coulomb term?)")
    return z


def recpot_to_real(q: np.ndarray, vq: np.ndarray, z: float, r: np.ndarray) -> np.ndarray:
    """Radial ``V(r)`` (Ha) from a reciprocal-space local potential.

    Parameters
    ----------
    q : (n,) array
        Uniform grid ``0, dq, ..., qmax`` (1/bohr).
    vq : (n,) array
        ``V(q) = ∫ V(r) exp(-i q·r) d³r`` (Ha·bohr³) *including* the Coulomb term ``-4πZ/q²``
        for ``q > 0``; ``vq[0]`` is the finite non-Coulomb ``q = 0`` limit
        ``4π ∫ r (r V(r) + Z) dr``.
    z : float
        Valence charge (e).
    r : (m,) array
        Radii (bohr); ``V_s`` is assumed to vanish beyond ``r.max()``.

    Returns
    -------
    (m,) array
        ``V(r) = V_s(r) - Z erf(r/rc)/r`` with the smooth remainder
        ``V_s(q) = V(q) + 4πZ exp(-q²rc²/4)/q²`` (``V_s(0) = V(0) - πZrc²``) transformed by
        ``V_s(r) = (2π²)⁻¹ ∫ q² V_s(q) j0(qr) dq`` and ``rc = 2√37/qmax`` so that the Gaussian
        left out beyond ``qmax`` is ``exp(-37)`` small.

    Notes
    -----
    ``q V_s(q) sin(qr)`` is even in q, so the trapezoidal rule on ``[0, qmax]`` has no
    endpoint error at 0 and is exact up to aliases (images of ``r V_s(r)`` at ``r ± 2πk/dq``,
    see ``_ALIAS_TOLERANCE``); the other errors are the file's own truncation at ``qmax`` and,
    for a coarse file grid whose aliases would matter, the quintic-spline refinement of V_s(q).
    """
    qmax = q[-1]
    rc = 2.0 * np.sqrt(_SPLIT_EXPONENT) / qmax
    vs = np.empty_like(vq)
    vs[0] = vq[0] - np.pi * z * rc**2
    vs[1:] = vq[1:] + 4.0 * np.pi * z * np.exp(-(q[1:] * rc) ** 2 / 4.0) / q[1:] ** 2
    dq = q[1] - q[0]
    rmax = max(float(np.max(r)), 1.0)
    period = 2.0 * np.pi / dq
    if period < 2.0 * rmax:
        probe = np.linspace(max(period - rmax, 0.0), period / 2, 64)
        safe = period > rmax and np.max(np.abs(probe * _trapezoid_j0(q, vs, probe))) < (
            _ALIAS_TOLERANCE * max(z, 1.0))
        if not safe:
            refine = int(np.ceil(2.0 * rmax / period))
            # V_s is even in q: interpolate on the mirrored grid, quintic spline
            qq = np.concatenate([-q[:0:-1], q])
            from scipy.interpolate import make_interp_spline

            spline = make_interp_spline(qq, np.concatenate([vs[:0:-1], vs]), k=5)
            q = np.linspace(0.0, qmax, (q.size - 1) * refine + 1)
            vs = spline(q)
    return _trapezoid_j0(q, vs, r) - z * _erf_over_r(r, rc)[0]


def _trapezoid_j0(q: np.ndarray, fq: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``(2π²)⁻¹ ∫ q² f(q) j0(qr) dq`` by the trapezoidal rule on the uniform grid ``q``."""
    w = np.full(q.size, q[1] - q[0])
    w[-1] *= 0.5
    wq2f = w * q**2 * fq / (2.0 * np.pi**2)
    out = np.empty(r.shape)
    for lo in range(0, r.size, 256):  # chunks keep the (r, q) matrix small
        out[lo: lo + 256] = np.sinc(np.outer(r[lo: lo + 256], q) / np.pi) @ wq2f
    return out


def read_recpot(path, rmax: float = RECPOT_RMAX, step: float = RECPOT_STEP) -> TabulatedPseudo:
    """Read the local potential of a CASTEP ``.recpot`` file and transform it to real space.

    Layout: a comment block ending in ``END COMMENT``; the version line ``3 5``; ``kmax`` (1/Å);
    the local ``V(q)`` (eV·Å³) on the uniform grid ``q = 0 .. kmax``; a line ``1000`` (or the
    ``l`` of a nonlocal block, which is ignored). Convention (DFTpy's recpot reader and writer):
    ``V(q) = ∫ V(r) exp(-i q·r) d³r`` includes ``-4πZ/q²`` for ``q > 0``, and ``V(0)`` is the
    finite non-Coulomb part ``4π ∫ r (r V(r) + Z) dr``. The file does not state Z: it is the
    integer nearest ``-lim q²(V(q) - V(0))/4π`` (see :func:`_recpot_valence`).

    Parameters
    ----------
    path : str or Path
        The ``.recpot`` file.
    rmax, step : float
        Real-space table ``r = 0, step, ..., rmax`` (bohr).

    Returns
    -------
    TabulatedPseudo
        ``V(r)`` (Ha) on the table, from :func:`recpot_to_real`.

    Raises
    ------
    PseudopotentialError
        If the file is missing or malformed, or Z cannot be inferred.
    """
    path = Path(path)
    if not path.is_file():
        raise PseudopotentialError(f"pseudopotential file {path} does not exist")
    kmax, values = _recpot_local_block(path)
    q = np.linspace(0.0, kmax * BOHR, values.size)              # 1/Å -> 1/bohr
    vq = values / HARTREE / BOHR**3                              # eV·Å³ -> Ha·bohr³
    z = _recpot_valence(q, vq, path)
    r = np.arange(0.0, rmax + 0.5 * step, step)
    v = recpot_to_real(q, vq, z, r)
    log.debug("read recpot %s: Z=%g kmax=%g/bohr n=%d", path, z, q[-1], q.size)
    return TabulatedPseudo(symbol=_recpot_symbol(path), z=z, r=r, v=v,
                           source=str(path), digest=_file_digest(path))


def _recpot_symbol(path: Path) -> str:
    """Element symbol: the file name's leading letters (``Al.lda.recpot``, ``al_pbe.recpot``);
    recpot headers are free text."""
    m = re.match(r"[A-Za-z]{1,2}", path.name)
    sym = m.group(0).capitalize() if m else ""
    return sym if sym in chemical_symbols else (sym[:1] if sym[:1] in chemical_symbols else "X")


_READERS = {".psp8": read_psp8, ".upf": read_upf, ".recpot": read_recpot}


def load_pseudo(spec, symbol: str | None = None):
    """Build a pseudopotential from a spec.

    Parameters
    ----------
    spec : str, Path, ErfPseudo or TabulatedPseudo
        ``"erf:Z:RC"`` (RC in Å, as everywhere in the public API) or a path to a ``.psp8``,
        ``.recpot`` or ``.upf`` file.
    symbol : str, optional
        Element the pseudopotential is for (used in messages).

    Raises
    ------
    PseudopotentialError
    """
    if isinstance(spec, (ErfPseudo, TabulatedPseudo)):
        return spec
    text = str(spec).strip()
    if text.lower().startswith("erf:"):
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError("expected erf:Z:RC")
            z, rc_ang = float(parts[1]), float(parts[2])
        except ValueError as exc:
            raise PseudopotentialError(
                f"bad erf pseudopotential spec {text!r}: write erf:Z:RC with the valence charge Z "
                "and the width RC in Å, e.g. erf:3:0.529"
            ) from exc
        return ErfPseudo(z=z, rc=rc_ang / BOHR, symbol=symbol)
    path = Path(text)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise PseudopotentialError(
            f"cannot tell the format of pseudopotential {text!r}: use a .psp8, .recpot or .upf "
            "file, or erf:Z:RC"
        )
    if not path.is_file():
        raise PseudopotentialError(f"pseudopotential file {path} does not exist")
    try:
        return reader(path)
    except PseudopotentialError:
        raise
    except Exception as exc:  # any parsing failure becomes a clear error
        raise PseudopotentialError(f"cannot read pseudopotential {path}: {exc}") from exc


#: Step (bohr) of radial tables; linear interpolation errs by ~step²/8·|f''| (< 1e-7 Ha here).
TABLE_STEP = 5e-4


@dataclass(frozen=True)
class RadialTable:
    """A radial function tabulated on a fine uniform grid and linearly interpolated (values
    and derivatives are tabulated separately); zero beyond ``cutoff`` (bohr)."""

    cutoff: float
    step: float
    values: np.ndarray
    derivatives: np.ndarray

    @classmethod
    def from_function(cls, func, reach: float, tolerance: float,
                      step: float = TABLE_STEP) -> "RadialTable":
        """Tabulate ``func(r) -> (f, df/dr)`` on ``[0, reach]`` and cut it where
        ``|f| · 4πr²`` (the weight a shell gives it) stays below ``tolerance``."""
        r = np.arange(0.0, reach + 2 * step, step)
        f, df = func(r)
        big = np.nonzero(np.abs(f) * 4 * np.pi * np.maximum(r, 1.0) ** 2 > tolerance)[0]
        cutoff = float(r[min(big[-1] + 2, r.size - 1)]) if big.size else 0.0
        f = np.where(r < cutoff, f, 0.0)
        df = np.where(r < cutoff, df, 0.0)
        return cls(cutoff=cutoff, step=float(step), values=f, derivatives=df)

    @property
    def is_zero(self) -> bool:
        return not np.any(self.values)

    def resampled(self, cutoff: float) -> "RadialTable":
        """The same table padded with zeros up to a larger ``cutoff`` (same step)."""
        n = int(np.ceil(cutoff / self.step)) + 2
        pad = max(n - self.values.size, 0)
        return RadialTable(cutoff=max(cutoff, self.cutoff), step=self.step,
                           values=np.pad(self.values, (0, pad)),
                           derivatives=np.pad(self.derivatives, (0, pad)))

    def __call__(self, r, derivative: bool = False):
        """Values (and, with ``derivative``, r-derivatives) at radii ``r`` (bohr)."""
        x = np.minimum(np.asarray(r, dtype=float) * (1.0 / self.step), self.values.size - 1.0)
        i = np.minimum(x.astype(np.intp), self.values.size - 2)
        t = x - i
        f0 = self.values[i]
        val = f0 + t * (self.values[i + 1] - f0)
        if not derivative:
            return val
        d0 = self.derivatives[i]
        return val, d0 + t * (self.derivatives[i + 1] - d0)


@dataclass(frozen=True)
class SpeciesTable:
    """The Gaussian compensation charge ``g`` and short-range remainder ``V_sr`` of one species
    on one radial grid, interpolated together (one index computation and one gather per
    pair): columns of ``data`` are g, V_sr, g', V_sr'."""

    cutoff: float
    step: float
    data: np.ndarray  # (m, 4)
    has_short_range: bool

    def __post_init__(self):
        # contiguous copies: row gathers (np.take) from them are several times faster than
        # fancy indexing of a (strided) view, the hot spot of the ion fields
        object.__setattr__(self, "data", np.ascontiguousarray(self.data, dtype=np.float64))
        object.__setattr__(self, "_values", np.ascontiguousarray(self.data[:, :2]))

    @classmethod
    def build(cls, gauss: "RadialTable", short: "RadialTable") -> "SpeciesTable":
        cutoff = max(gauss.cutoff, short.cutoff)
        g, v = gauss.resampled(cutoff), short.resampled(cutoff)
        m = min(g.values.size, v.values.size)
        data = np.stack([g.values[:m], v.values[:m], g.derivatives[:m], v.derivatives[:m]],
                        axis=1)
        return cls(cutoff=cutoff, step=gauss.step, data=np.ascontiguousarray(data),
                   has_short_range=not short.is_zero)

    def __call__(self, r, derivative: bool = False) -> np.ndarray:
        """(n, 2) [g, V_sr] or, with ``derivative``, (n, 4) [g, V_sr, g', V_sr'] at ``r``."""
        cols = self.data if derivative else self._values
        n = cols.shape[0]
        x = np.asarray(r, dtype=np.float64) * (1.0 / self.step)  # a new array
        np.minimum(x, n - 1.0, out=x)
        i = x.astype(np.intp)
        np.minimum(i, n - 2, out=i)
        x -= i  # the fraction t within the interval
        lo = np.take(cols, i, axis=0)
        out = np.take(cols, i + 1, axis=0)
        out -= lo  # lo + t (hi − lo), in place
        out *= x[:, None]
        out += lo
        return out


def short_range(pseudo, width: float, tolerance: float = 1e-8,
                step: float = TABLE_STEP) -> RadialTable:
    """Short-range remainder ``V_sr(r) = V(r) + Z erf(r/s)/r`` (Ha) of ``pseudo`` for a
    compensation Gaussian of ``width`` s (bohr), tabulated up to where it vanishes."""
    if isinstance(pseudo, ErfPseudo) and abs(pseudo.rc - width) < 1e-14:
        return RadialTable(cutoff=0.0, step=step, values=np.zeros(2), derivatives=np.zeros(2))
    reach = max(pseudo.core_radius, 7.0 * width)

    def vsr(r):
        v, dv = pseudo.potential(r)
        f, df = _erf_over_r(r, width)
        return v + pseudo.z * f, dv + pseudo.z * df

    return RadialTable.from_function(vsr, reach, tolerance, step)


def gaussian_charge(z: float, width: float, tolerance: float = 1e-9,
                    step: float = TABLE_STEP) -> RadialTable:
    """Gaussian charge ``Z (π s²)^{-3/2} exp(-r²/s²)`` (e/bohr³), cut where a shell of it
    holds less than ``tolerance`` electrons per bohr."""
    norm = z * (np.pi * width**2) ** -1.5

    def g(r):
        e = norm * np.exp(-(r / width) ** 2)
        return e, -2.0 * r / width**2 * e

    return RadialTable.from_function(g, 7.0 * width, tolerance, step)
