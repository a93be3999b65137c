"""Point-ion Ewald energy, per-atom energies and forces for any (triclinic) periodic cell, the
plain Coulomb sum of an isolated set of ions, and the energies of Gaussian charges (isolated,
or periodic with zero-mean potential).

    E = ½ Σ'_{i,j,L} Z_i Z_j erfc(η r)/r + (2π/Ω) Σ_{G≠0} e^{-G²/4η²}/G² |S(G)|²
        - η/√π Σ_i Z_i² - π Z_tot²/(2Ω η²)

with S(G) = Σ_j Z_j e^{iG·R_j}. The last term is the uniform compensating background (the
convention DFTpy reports). Atomic units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf, erfc

_DIGITS = 5.3  # erfc(5.3) ~ 1e-13, exp(-5.3²) ~ 6e-13


@dataclass(frozen=True)
class EwaldResult:
    """Ewald energy (Ha), per-atom energies (Ha, summing to it) and forces (Ha/bohr)."""

    energy: float
    per_atom: np.ndarray
    forces: np.ndarray


def _lattice_shifts(cell: np.ndarray, radius: float) -> np.ndarray:
    """Integer triples n with |n·cell| possibly below ``radius`` (a superset)."""
    recip = np.linalg.inv(cell).T  # rows b_k / 2π
    nmax = np.ceil(radius * np.linalg.norm(recip, axis=1)).astype(int)
    grids = [np.arange(-k, k + 1) for k in nmax]
    return np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)


def _reciprocal_vectors(cell: np.ndarray, gcut: float) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal lattice vectors G ≠ 0 with |G| < ``gcut`` (bohr⁻¹) and their squares."""
    B = 2 * np.pi * np.linalg.inv(cell).T
    m = _lattice_shifts(B, gcut)
    G = m[np.any(m != 0, axis=1)] @ B
    G2 = np.einsum("ij,ij->i", G, G)
    keep = G2 < gcut**2
    return G[keep], G2[keep]


def ewald(positions: np.ndarray, charges: np.ndarray, cell: np.ndarray,
          eta: float | None = None) -> EwaldResult:
    """Point-charge Ewald sum.

    Parameters
    ----------
    positions : (n, 3) bohr
    charges : (n,) e
    cell : (3, 3) bohr, lattice vectors as rows
    eta : float, optional
        Splitting parameter (1/bohr); a balanced value by default.
    """
    pos = np.asarray(positions, float)
    Z = np.asarray(charges, float)
    n = Z.size
    volume = abs(np.linalg.det(cell))
    if eta is None:
        eta = np.sqrt(np.pi) * (max(n, 1) / volume**2) ** (1.0 / 6.0)
    rcut = _DIGITS / eta
    gcut = 2.0 * eta * _DIGITS

    # real space, chunked over lattice shifts
    shifts = _lattice_shifts(cell, rcut + np.ptp(pos @ np.linalg.inv(cell), axis=0).max()
                             * np.linalg.norm(cell, axis=1).max())
    e_real = np.zeros(n)
    f_real = np.zeros((n, 3))
    diff = pos[:, None, :] - pos[None, :, :]  # R_i - R_j
    zz = Z[:, None] * Z[None, :]
    for chunk in np.array_split(shifts, max(1, shifts.shape[0] * n * n // 2_000_000)):
        L = chunk @ cell
        d = diff[None] - L[:, None, None, :]  # (nL, n, n, 3)
        r = np.linalg.norm(d, axis=-1)
        mask = (r < rcut) & (r > 1e-12)
        rr = np.where(mask, r, 1.0)
        pair = np.where(mask, zz[None] * erfc(eta * rr) / rr, 0.0)
        e_real += 0.5 * pair.sum(axis=(0, 2))
        dpair = np.where(mask, zz[None] * (erfc(eta * rr) / rr + 2 * eta / np.sqrt(np.pi)
                                           * np.exp(-(eta * rr) ** 2)) / rr**2, 0.0)
        f_real += np.einsum("lij,lijk->ik", dpair, d)

    # reciprocal space
    G, G2 = _reciprocal_vectors(cell, gcut)
    coef = (2 * np.pi / volume) * np.exp(-G2 / (4 * eta**2)) / G2
    phase = np.exp(1j * (pos @ G.T))  # (n, nG)
    S = phase.T @ Z  # (nG,)
    e_rec = Z * (np.real(np.conj(phase) * S[None, :]) @ coef)
    f_rec = 2 * Z[:, None] * (np.imag(np.conj(S)[None, :] * phase) * coef[None, :]) @ G

    ztot = Z.sum()
    e_self = -eta / np.sqrt(np.pi) * Z**2 - np.pi * ztot * Z / (2 * volume * eta**2)
    per_atom = e_real + e_rec + e_self
    return EwaldResult(energy=float(per_atom.sum()), per_atom=per_atom, forces=f_real + f_rec)


def _pairs(positions: np.ndarray, Z: np.ndarray):
    """Isolated atom pairs: ``d`` (n, n, 3) = R_i − R_j, distances ``rr`` (n, n) with 1 on the
    diagonal, and charge products ``zz`` (n, n) with 0 there (no self pair)."""
    pos = np.asarray(positions, float)
    d = pos[:, None, :] - pos[None, :, :]
    off = ~np.eye(Z.size, dtype=bool)
    rr = np.where(off, np.linalg.norm(d, axis=-1), 1.0)
    zz = np.where(off, Z[:, None] * Z[None, :], 0.0)
    return d, rr, zz


def coulomb(positions: np.ndarray, charges: np.ndarray) -> EwaldResult:
    """Ion-ion energy ``Σ_{I<J} Z_I Z_J / R_IJ`` of isolated point ions (no images, no
    background), its per-atom halves and the forces.

    Parameters
    ----------
    positions : (n, 3) bohr
    charges : (n,) e
    """
    Z = np.asarray(charges, float)
    d, rr, zz = _pairs(positions, Z)
    pair = zz / rr
    per_atom = 0.5 * pair.sum(axis=1)
    forces = np.einsum("ij,ijk->ik", pair / rr**2, d)
    return EwaldResult(energy=float(per_atom.sum()), per_atom=per_atom, forces=forces)


def gaussian_coulomb(positions: np.ndarray, charges: np.ndarray,
                     widths: np.ndarray) -> EwaldResult:
    """Electrostatic energy ``½ ∫∫ g(x) g(y) / |x − y|`` of isolated Gaussian charges
    ``g = Σ_I Z_I (π s_I²)^{-3/2} exp(−|x − R_I|²/s_I²)``, self-energies included:
    ``Σ_{I<J} Z_I Z_J erf(R_IJ/√(s_I² + s_J²))/R_IJ + Σ_I Z_I²/(√(2π) s_I)``; per-atom shares
    (half of each pair and the atom's own self-energy) and the forces ``−∂E/∂R_I``.

    Parameters
    ----------
    positions : (n, 3) bohr
    charges, widths : (n,) e and bohr
    """
    Z = np.asarray(charges, float)
    s = np.asarray(widths, float)
    d, rr, zz = _pairs(positions, Z)
    width = np.sqrt(s[:, None] ** 2 + s[None, :] ** 2)
    x = rr / width
    pair = zz * erf(x) / rr
    per_atom = 0.5 * pair.sum(axis=1) + Z**2 / (np.sqrt(2.0 * np.pi) * s)
    # d/dr [erf(r/w)/r] = 2 exp(−r²/w²)/(√π w r) − erf(r/w)/r²
    slope = zz * (2.0 / np.sqrt(np.pi) * np.exp(-x * x) / (width * rr) - erf(x) / rr**2)
    forces = -np.einsum("ij,ijk->ik", slope / rr, d)
    return EwaldResult(energy=float(per_atom.sum()), per_atom=per_atom, forces=forces)


def gaussian_ewald(positions: np.ndarray, charges: np.ndarray, widths: np.ndarray,
                   cell: np.ndarray) -> EwaldResult:
    """Electrostatic energy of periodic Gaussian charges ``Z_I (π s_I²)^{-3/2}
    exp(−|x − R_I|²/s_I²)`` in their zero-mean periodic potential (a neutralising background,
    the G = 0 term dropped): ``(2π/Ω) Σ_{G≠0} |S(G)|²/G²`` with
    ``S(G) = Σ_I Z_I exp(−G²s_I²/4 + iG·R_I)``; the self-energies are included. Per-atom
    shares ``(2π/Ω) Σ_G Re[a_I e^{−iG·R_I} S(G)]/G²`` and forces ``−∂E/∂R_I``.

    Parameters
    ----------
    positions : (n, 3) bohr
    charges, widths : (n,) e and bohr
    cell : (3, 3) bohr, lattice vectors as rows
    """
    pos = np.asarray(positions, float)
    Z = np.asarray(charges, float)
    s = np.asarray(widths, float)
    volume = abs(np.linalg.det(cell))
    # exp(−G²(s_I² + s_J²)/4) < exp(−2·5.3²) ~ 4e-25 beyond the cutoff
    G, G2 = _reciprocal_vectors(cell, 2.0 * _DIGITS / s.min())
    per_atom = np.zeros(Z.size)
    forces = np.zeros((Z.size, 3))
    for sel in np.array_split(np.arange(G2.size), max(1, G2.size * Z.size // 2_000_000)):
        g, g2 = G[sel], G2[sel]
        a = Z[:, None] * np.exp(-0.25 * g2[None, :] * s[:, None] ** 2)  # (n, nG)
        phase = np.exp(1j * (pos @ g.T))
        S = np.sum(a * phase, axis=0)
        coef = (2 * np.pi / volume) / g2
        per_atom += (a * np.real(np.conj(phase) * S[None, :])) @ coef
        forces += 2 * (a * np.imag(np.conj(S)[None, :] * phase) * coef[None, :]) @ g
    return EwaldResult(energy=float(per_atom.sum()), per_atom=per_atom, forces=forces)


def gaussian_overlap_energy(positions: np.ndarray, charges: np.ndarray, widths: np.ndarray,
                            cell: np.ndarray, periodic: bool = True) -> np.ndarray:
    """Per-atom share of ``E_corr = Σ_{I<J} Z_I Z_J erfc(R_IJ/√(s_I²+s_J²))/R_IJ`` (Ha): the
    difference between point ions and Gaussian ions ``Z (π s²)^{-3/2} exp(-r²/s²)`` over all
    periodic images (BACKGROUND §1); short-ranged, and negligible unless the Gaussians overlap.

    Parameters
    ----------
    positions : (n, 3) bohr
    charges, widths : (n,) e and bohr
    cell : (3, 3) bohr
    periodic : bool
        Sum over the images of the cell (False: the atoms only).
    """
    pos = np.asarray(positions, float)
    Z = np.asarray(charges, float)
    s = np.asarray(widths, float)
    width = np.sqrt(s[:, None] ** 2 + s[None, :] ** 2)  # (n, n)
    rcut = _DIGITS * 1.4 * width.max()  # erfc(7.4) ~ 1e-25
    shifts = np.zeros((1, 3), dtype=int)
    if periodic:
        shifts = _lattice_shifts(cell, rcut + np.ptp(pos @ np.linalg.inv(cell), axis=0).max()
                                 * np.linalg.norm(cell, axis=1).max())
    per_atom = np.zeros(Z.size)
    diff = pos[:, None, :] - pos[None, :, :]
    zz = Z[:, None] * Z[None, :]
    for chunk in np.array_split(shifts, max(1, shifts.shape[0] * Z.size**2 // 2_000_000)):
        r = np.linalg.norm(diff[None] - (chunk @ cell)[:, None, None, :], axis=-1)
        mask = (r < rcut) & (r > 1e-12)
        rr = np.where(mask, r, 1.0)
        per_atom += 0.5 * np.where(mask, zz[None] * erfc(rr / width[None]) / rr, 0.0).sum(
            axis=(0, 2))
    return per_atom


def point_ion_energy(atoms, charges) -> tuple[float, np.ndarray, np.ndarray]:
    """Point-ion Ewald energy of a periodic structure in ASE units (the ``ewald`` component
    of a fedft result: ions of valence charge ``Z`` in a uniform compensating background).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic along all three axes.
    charges : mapping of str -> float, or array_like (n_atoms,)
        Valence charge per chemical symbol, or per atom (e).

    Returns
    -------
    energy : float
        eV.
    per_atom : numpy.ndarray, shape (n_atoms,)
        eV, summing to ``energy``.
    forces : numpy.ndarray, shape (n_atoms, 3)
        eV/Å.

    Raises
    ------
    StructureError
        Not periodic along all axes, or a symbol without a charge.
    """
    from ._errors import StructureError
    from ._units import BOHR, FORCE, HARTREE

    if not np.all(atoms.pbc):
        raise StructureError("the point-ion Ewald energy needs a cell periodic along all "
                             "three axes")
    if hasattr(charges, "keys"):
        missing = sorted(set(atoms.get_chemical_symbols()) - set(charges))
        if missing:
            raise StructureError(f"no ion charge for {missing}; give one per element")
        z = np.array([float(charges[s]) for s in atoms.get_chemical_symbols()])
    else:
        z = np.asarray(charges, dtype=float)
        if z.shape != (len(atoms),):
            raise StructureError(f"charges must have one value per atom ({len(atoms)}), got "
                                 f"shape {z.shape}")
    res = ewald(atoms.positions / BOHR, z, atoms.cell.array / BOHR)
    return res.energy * HARTREE, res.per_atom * HARTREE, res.forces * FORCE
