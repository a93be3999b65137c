"""Gaussian pseudodensities: per-element models of the valence electron density.

An element's pseudodensity is a sum of primitive Gaussians centred on the nucleus,

    rho(r) = sum_k B_k exp(-beta_k |r|^2)          (B in electrons/Å^3, beta in 1/Å^2),

whose integral ``sum_k B_k (pi/beta_k)^{3/2}`` is the valence electron count. Sets of them are
stored in the ``.gpsp`` text format (see :func:`read_gpsp`), and :func:`fit_pseudodensity`
builds one from a radial valence-density table.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize

from ._errors import GpspFormatError, MissingElementError, PseudodensityError

__all__ = [
    "ElementPseudodensity",
    "PseudodensitySet",
    "read_gpsp",
    "write_gpsp",
    "fit_pseudodensity",
]

logger = logging.getLogger(__name__)

try:  # ASE is a dependency of the project; keep the module importable without it anyway.
    from ase.data import atomic_numbers as _ATOMIC_NUMBERS
    from ase.data import chemical_symbols as _CHEMICAL_SYMBOLS
except ImportError:  # pragma: no cover
    _ATOMIC_NUMBERS, _CHEMICAL_SYMBOLS = {}, []


@dataclass(frozen=True)
class ElementPseudodensity:
    """Gaussian model of one element's valence density.

    Parameters
    ----------
    symbol : str
        Chemical symbol, e.g. ``"C"``.
    Z : int
        Atomic number (0 for the dummy element ``X``).
    B : array_like, shape (n_primitives,)
        Prefactors of the primitives, electrons/Å^3 (may be negative in published sets).
    beta : array_like, shape (n_primitives,)
        Exponents of the primitives, 1/Å^2, all > 0.
    """

    symbol: str
    Z: int
    B: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        B = np.array(self.B, dtype=np.float64, ndmin=1)
        beta = np.array(self.beta, dtype=np.float64, ndmin=1)
        if B.ndim != 1 or B.shape != beta.shape or B.size == 0:
            raise PseudodensityError(
                f"pseudodensity of {self.symbol!r}: B and beta must be 1-d arrays of the same "
                f"non-zero length, got shapes {B.shape} and {beta.shape}"
            )
        if not (np.all(np.isfinite(B)) and np.all(np.isfinite(beta))):
            raise PseudodensityError(
                f"pseudodensity of {self.symbol!r}: B and beta must be finite numbers"
            )
        if np.any(beta <= 0):
            raise PseudodensityError(
                f"pseudodensity of {self.symbol!r}: every exponent beta must be > 0 (1/Å^2), "
                f"got {beta.tolist()}"
            )
        B.setflags(write=False)
        beta.setflags(write=False)
        object.__setattr__(self, "B", B)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "Z", int(self.Z))

    @property
    def n_primitives(self) -> int:
        """Number of Gaussian primitives."""
        return int(self.B.size)

    @property
    def electrons(self) -> float:
        """Integral of the density over all space (the valence electron count)."""
        return float(np.sum(self.B * (np.pi / self.beta) ** 1.5))

    def density(self, r: np.ndarray) -> np.ndarray:
        """Density at distances ``r`` (Å) from the nucleus, electrons/Å^3; same shape as ``r``."""
        r = np.asarray(r, dtype=np.float64)
        return np.sum(self.B * np.exp(-self.beta * r[..., None] ** 2), axis=-1)


class PseudodensitySet(Mapping):
    """Read-only mapping from chemical symbol to :class:`ElementPseudodensity`.

    Parameters
    ----------
    elements : iterable of ElementPseudodensity
        The elements of the set; symbols must be unique.
    source : str, optional
        Where the set came from (a file name), used in error messages.
    """

    def __init__(self, elements, source: str | None = None) -> None:
        self._by_symbol: dict[str, ElementPseudodensity] = {}
        for element in elements:
            if not isinstance(element, ElementPseudodensity):
                raise PseudodensityError(
                    f"a pseudodensity set holds ElementPseudodensity objects, got {element!r}"
                )
            if element.symbol in self._by_symbol:
                raise PseudodensityError(
                    f"element {element.symbol!r} is defined twice in the pseudodensity set"
                    + (f" {source}" if source else "")
                )
            self._by_symbol[element.symbol] = element
        self._by_number = {el.Z: el for el in self._by_symbol.values()}
        self.source = source

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> "PseudodensitySet":
        """Build a set from ``{symbol: ElementPseudodensity | (B, beta) | {"B":.., "beta":..}}``."""
        if isinstance(mapping, PseudodensitySet):
            return mapping
        elements = []
        for symbol, value in mapping.items():
            if isinstance(value, ElementPseudodensity):
                elements.append(value)
                continue
            if isinstance(value, Mapping):
                B, beta = value.get("B"), value.get("beta")
            else:
                try:
                    B, beta = value
                except (TypeError, ValueError):
                    B = beta = None
            if B is None or beta is None:
                raise PseudodensityError(
                    f"pseudodensity mapping entry {symbol!r}: give an ElementPseudodensity, a "
                    f"(B, beta) pair or a dict with keys 'B' and 'beta', got {value!r}"
                )
            Z = _ATOMIC_NUMBERS.get(symbol)
            if Z is None:
                raise PseudodensityError(
                    f"pseudodensity mapping key {symbol!r} is not a chemical symbol"
                )
            elements.append(ElementPseudodensity(symbol, Z, B, beta))
        return cls(elements, source="<mapping>")

    def __getitem__(self, symbol: str) -> ElementPseudodensity:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise MissingElementError(self._missing_message(repr(symbol))) from None

    def by_number(self, Z: int) -> ElementPseudodensity:
        """Element with atomic number ``Z``; raises :class:`MissingElementError` if absent."""
        try:
            return self._by_number[int(Z)]
        except KeyError:
            sym = _CHEMICAL_SYMBOLS[int(Z)] if 0 <= int(Z) < len(_CHEMICAL_SYMBOLS) else "?"
            raise MissingElementError(self._missing_message(f"{sym!r} (Z={int(Z)})")) from None

    def _missing_message(self, what: str) -> str:
        where = f" {self.source}" if self.source else ""
        return (
            f"element {what} is not in the pseudodensity set{where} "
            f"(it defines {', '.join(sorted(self._by_symbol)) or 'nothing'}); "
            "use a set that covers every element of the structure, or add one with "
            "fit_pseudodensity()"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_symbol)

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __repr__(self) -> str:
        return f"PseudodensitySet({len(self)} elements, source={self.source!r})"


def _fail(path, lineno: int, what: str) -> GpspFormatError:
    return GpspFormatError(f"{path}: line {lineno}: {what}")


def read_gpsp(path: str | os.PathLike) -> PseudodensitySet:
    """Read a ``.gpsp`` pseudodensity file.

    Format: lines starting with ``#`` are comments; a line ``! N ...`` declares the number of
    element blocks; blocks are separated by lines ``****``; each block is a header ``Sym Z nG``
    followed by ``nG`` lines ``B beta`` (electrons/Å^3 and 1/Å^2).

    Parameters
    ----------
    path : str or path-like
        File to read.

    Returns
    -------
    PseudodensitySet

    Raises
    ------
    GpspFormatError
        If the file does not follow the format (the message gives the line number).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GpspFormatError(f"cannot read pseudodensity file {path}: {exc}") from exc
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]

    declared = None
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] | None = None
    for lineno, ln in lines:
        if ln.startswith("!"):
            parts = ln[1:].split()
            if declared is not None or blocks or current:
                raise _fail(path, lineno, "the '! N elements' line must come once, before blocks")
            try:
                declared = int(parts[0])
            except (IndexError, ValueError):
                raise _fail(path, lineno, f"expected '! N elements' with an integer N, got {ln!r}")
        elif set(ln) == {"*"}:
            if current:
                blocks.append(current)
            current = []
        else:
            if current is None:
                raise _fail(path, lineno, f"data before the first '****' separator: {ln!r}")
            current.append((lineno, ln))
    if current:
        blocks.append(current)
    if declared is None:
        raise GpspFormatError(
            f"{path}: no '! N elements' line; a .gpsp file declares its element count"
        )

    elements = []
    for block in blocks:
        (lineno, header), body = block[0], block[1:]
        parts = header.split()
        if len(parts) != 3:
            raise _fail(path, lineno, f"expected a block header 'Symbol Z nG', got {header!r}")
        symbol = parts[0]
        try:
            Z, n_g = int(parts[1]), int(parts[2])
        except ValueError:
            raise _fail(path, lineno, f"Z and nG must be integers in header {header!r}")
        if n_g < 1:
            raise _fail(path, lineno, f"element {symbol}: nG must be >= 1, got {n_g}")
        if len(body) != n_g:
            raise _fail(
                path, lineno,
                f"element {symbol} declares {n_g} primitives but its block has {len(body)} "
                "lines 'B beta' (blocks are separated by '****')",
            )
        B, beta = [], []
        for ln_no, ln in body:
            fields = ln.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                b, e = float(fields[0]), float(fields[1])
            except ValueError:
                raise _fail(path, ln_no, f"expected two numbers 'B beta', got {ln!r}")
            if not (math.isfinite(b) and math.isfinite(e)) or e <= 0:
                raise _fail(path, ln_no, f"B must be finite and beta finite and > 0, got {ln!r}")
            B.append(b)
            beta.append(e)
        elements.append(ElementPseudodensity(symbol, Z, np.array(B), np.array(beta)))
    if len(elements) != declared:
        raise GpspFormatError(
            f"{path}: the '!' line declares {declared} elements but the file has "
            f"{len(elements)} blocks; fix the count or the '****' separators"
        )
    try:
        result = PseudodensitySet(elements, source=str(path))
    except PseudodensityError as exc:
        raise GpspFormatError(f"{path}: {exc}") from exc
    logger.debug("read %d pseudodensities from %s", len(result), path)
    return result


def write_gpsp(pseudodensities: Mapping, path: str | os.PathLike, comment: str = "") -> None:
    """Write a pseudodensity set in the ``.gpsp`` format read by :func:`read_gpsp`.

    Parameters
    ----------
    pseudodensities : mapping
        Anything accepted by :meth:`PseudodensitySet.from_mapping`.
    path : str or path-like
        Output file.
    comment : str, optional
        Text written as leading ``#`` comment lines.
    """
    pset = PseudodensitySet.from_mapping(pseudodensities)
    out = [f"# {c}" for c in comment.splitlines()] if comment else []
    out.append(f"! {len(pset)} elements")
    for symbol, el in pset.items():
        out.append("****")
        out.append(f"{symbol}\t{el.Z}\t{el.n_primitives}")
        out.extend(f"{b!r}\t{e!r}" for b, e in zip(el.B.tolist(), el.beta.tolist()))
    Path(path).write_text("\n".join(out) + "\n")


def _trapz(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def fit_pseudodensity(
    r: np.ndarray,
    rho_r: np.ndarray,
    n_primitives: int,
    *,
    symbol: str = "X",
    Z: int | None = None,
    electrons: float | None = None,
) -> ElementPseudodensity:
    """Fit ``n_primitives`` positive Gaussians to a radial valence-density table.

    The fit minimises the squared error of ``4 pi r^2 rho(r)`` (the radial electron distribution)
    on the table, subject to exact conservation of the electron count: the parameters are
    ``log beta_k`` and softmax weights ``f_k`` with ``B_k (pi/beta_k)^{3/2} = N f_k``, so every
    ``B_k`` and ``beta_k`` is positive and ``sum_k B_k (pi/beta_k)^{3/2} = N`` holds by
    construction.

    Parameters
    ----------
    r : array_like, shape (m,)
        Radii in Å, strictly increasing, starting at or near 0 and reaching the density's tail.
    rho_r : array_like, shape (m,)
        Spherically averaged valence density at ``r``, electrons/Å^3 (non-negative).
    n_primitives : int
        Number of Gaussians, 2 to 6.
    symbol : str, optional
        Chemical symbol stored in the result.
    Z : int, optional
        Atomic number stored in the result (looked up from ``symbol`` by default).
    electrons : float, optional
        Electron count to preserve; by default the table's integral ``∫ 4 pi r^2 rho dr``.

    Returns
    -------
    ElementPseudodensity
    """
    r = np.asarray(r, dtype=np.float64)
    rho_r = np.asarray(rho_r, dtype=np.float64)
    if not isinstance(n_primitives, (int, np.integer)) or not 2 <= n_primitives <= 6:
        raise PseudodensityError(f"n_primitives must be an integer from 2 to 6, got {n_primitives!r}")
    if r.ndim != 1 or r.shape != rho_r.shape or r.size < 3 * n_primitives:
        raise PseudodensityError(
            f"r and rho_r must be 1-d arrays of the same length >= 3*n_primitives, got shapes "
            f"{r.shape} and {rho_r.shape}"
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(rho_r))):
        raise PseudodensityError("r and rho_r must be finite")
    if np.any(np.diff(r) <= 0) or r[0] < 0:
        raise PseudodensityError("r must be non-negative and strictly increasing (Å)")
    if Z is None:
        Z = _ATOMIC_NUMBERS.get(symbol, 0)

    radial = 4.0 * np.pi * r**2 * rho_r
    n_table = _trapz(radial, r)
    n_el = float(electrons) if electrons is not None else n_table
    if not n_el > 0:
        raise PseudodensityError(f"the density integrates to {n_el} electrons; it must be > 0")

    # Characteristic radii: spread the initial exponents over the range the table covers.
    r_mean = _trapz(radial * r, r) / n_table if n_table > 0 else float(r[-1]) / 4.0
    r_lo = max(r_mean / 6.0, r[1] if r.size > 1 else r_mean / 6.0)
    r_hi = max(1.5 * r_mean, r_lo * 2)
    scale = np.max(np.abs(radial)) or 1.0

    def unpack(p):
        log_beta, v = p[:n_primitives], p[n_primitives:]
        beta = np.exp(np.clip(log_beta, -12.0, 12.0))
        f = np.exp(v - v.max())
        f /= f.sum()
        B = n_el * f / (np.pi / beta) ** 1.5
        return B, beta

    def residual(p):
        B, beta = unpack(p)
        model = np.sum(B * np.exp(-beta * r[:, None] ** 2), axis=1)
        return (4.0 * np.pi * r**2 * model - radial) / scale

    best = None
    for spread in (1.0, 0.6, 1.6):
        radii = np.geomspace(r_lo * spread, r_hi * spread, n_primitives)
        p0 = np.concatenate([np.log(1.0 / radii**2), np.zeros(n_primitives)])
        sol = optimize.least_squares(residual, p0, method="lm", max_nfev=600 * n_primitives,
                                     xtol=1e-12, ftol=1e-12)
        if best is None or sol.cost < best.cost:
            best = sol
    B, beta = unpack(best.x)
    order = np.argsort(-beta)
    logger.info("fit %d Gaussians to %s: rms error %.3e (relative to max 4 pi r^2 rho)",
                n_primitives, symbol, math.sqrt(2 * best.cost / r.size))
    return ElementPseudodensity(symbol, Z, B[order], beta[order])
