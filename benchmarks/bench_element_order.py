"""Unknowns per atom that finite elements of order p need for 1e-4 Ha/atom, against DFTpy.

Not a test. The question behind it (issue 7): can a tetrahedral finite-element OF-DFT solver
reach a target accuracy with fewer unknowns than a plane-wave code, and with which element
order? fcc Al (erf Z = 3, rc = 1 bohr, TF + 1·vW, LDA, a = 4.05 Å, the 4-atom cubic cell).

* DFTpy: the converged reference, then the coarsest FFT grid within ``--target`` of it
  (that grid and every finer one scanned): grid points per atom.
* The error model: the converged ``u = √ρ`` (DFTpy, a trigonometric polynomial) is
  interpolated by continuous P_p Lagrange elements on the Kuhn triangulation of an n³ grid of
  cubes (the meshes of :mod:`meshes`; p³ DOFs per cube), and
  ``δ_p(h) = (λ/2)∫|∇(u − I_h u)|²`` per atom is integrated exactly enough (collapsed Gauss
  rules of p + 4 points per direction on every tetrahedron; ``u`` and ``∇u`` from the Fourier
  series). Near the minimum the energy error of the Galerkin solution is the energy norm of
  its error, of which the von Weizsäcker seminorm is the leading part, so
  ``E_h − E ≈ κ δ_p(h)``.
* κ is measured, not assumed: fedft's own P1 and P2 errors on the same cell (uniform meshes)
  divided by δ_p at the same cubes. The run fails (exit 1) if the κ of P1 and P2 differ by
  more than 25 %, i.e. if the error model does not carry from one order to the next.
* For every order p the coarsest cube size h with ``κ δ_p(h) ≤ target`` (log-log
  interpolation between scanned cube counts) gives the DOFs per atom ``Ω_atom (p/h)³``; the
  ratio to DFTpy's grid points per atom is printed. Orders above 2 are the model's estimate
  (scikit-fem's tetrahedral Lagrange elements end at P2; fedft has P1 and P2).

Usage::

    python benchmarks/bench_element_order.py [--target 1e-4] [--orders 1 2 3 4 5 6]
        [--calibration 1:0.32 1:0.24 2:0.55 2:0.5]

Measured 2026-12-07 on this project's 2-core machine (twelfth session)::

    python benchmarks/bench_element_order.py    # the code of 53bcfda; 78 s, idle

        DFTpy converged: -2.693024284 Ha/atom (1200 eV, grid 24³)
        DFTpy grids: 8³ -2.2e-04, 10³ -1.7e-05, 12³ -7.6e-07, 14³ -2.6e-08, 16³ -4.9e-10, ...
        DFTpy: 250 grid points per atom within 0.0001 Ha/atom

        fedft (uniform meshes) against the error model, same cubes:
          P1 spacing 0.32: 24 cubes, 3456 DOFs/atom, E - E_ref +2.995e-03, δ 4.397e-03, κ 0.681
          P1 spacing 0.24: 32 cubes, 8192 DOFs/atom, E - E_ref +1.663e-03, δ 2.488e-03, κ 0.668
          P2 spacing 0.55: 14 cubes, 5488 DOFs/atom, E - E_ref +1.389e-04, δ 2.063e-04, κ 0.673
          P2 spacing 0.50: 16 cubes, 8192 DOFs/atom, E - E_ref +8.315e-05, δ 1.223e-04, κ 0.680
        κ per order: P1 0.675, P2 0.676 (spread 0 %)

        order  κ used  cube h at target (bohr)  DOFs/atom  / DFTpy points  (scanned n: δ)
          P1   0.675    0.058                      576668  2306.7x   (32: 2.5e-03, 48: 1.1e-03, ...)
          P2   0.676    0.502                        7081    28.3x   (12: 3.8e-04, 16: 1.2e-04)
          P3   0.676    1.106                        2238     9.0x   (6: 3.3e-04, 8: 6.6e-05)
          P4   0.676    1.736                        1371     5.5x   (4: 2.7e-04, 6: 2.1e-05)
          P5   0.676    2.223                        1275     5.1x   (3: 4.6e-04, 4: 4.3e-05)
          P6   0.676    2.541                        1476     5.9x   (3: 1.5e-04, 4: 8.9e-06)

The model carries from P1 to P2 with the same κ (0.675 and 0.676: fedft's errors are 2/3 of
the interpolant's vW seminorm at both orders). P2, fedft's order, needs ~28x DFTpy's unknowns
per atom at 1e-4 Ha/atom (7,081 by the model; the mesh fedft uses, 16 cubes, has 8,192 and
+8.3e-5). Higher orders help up to P4-P5 and then stop: even P5 needs ~5x DFTpy's unknowns
per atom (P6 rests on 3 and 4 cubes per 7.65 bohr, a coarse interpolation). A plane wave
resolves a wavelength with ~2 points; a tetrahedral P_p space needs several times that at
this accuracy.

What follows for Al55 (issue 7: fedft faster than DFTpy at 1e-4 Ha/atom). DFTpy's box that
reaches the target holds 64,000 points, 1,164 per atom, most of them vacuum. P2 needs at
least the bulk's ~7,000 per atom inside the cluster alone (the cluster's error is ~3x the
bulk's at equal spacing): > 390,000 DOFs, 6x DFTpy's whole grid, before any vacuum. So no P2
mesh, graded or not, has fewer unknowns than DFTpy's grid, and each of fedft's unknowns
costs more than a grid point (a sparse product and several quadrature points against a
share of an FFT).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
#: fcc lattice constant (Å) and atoms in the cubic cell
A_ANGSTROM, N_CELL = 4.05, 4


def tetrahedron_rule(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Collapsed (Duffy) Gauss-Legendre rule on the reference tetrahedron
    ``{x, y, z ≥ 0, x + y + z ≤ 1}``: ``k`` points per direction, exact for polynomials of
    degree ≤ 2k − 3. Returns points (k³, 3) and weights (k³,) summing to 1/6."""
    t, w = np.polynomial.legendre.leggauss(k)
    t, w = 0.5 * (t + 1.0), 0.5 * w
    a, b, c = np.meshgrid(t, t, t, indexing="ij")
    points = np.stack([(a * (1 - b) * (1 - c)).ravel(), (b * (1 - c)).ravel(), c.ravel()], 1)
    weights = (np.einsum("i,j,k->ijk", w, w, w) * (1 - b) * (1 - c) ** 2).ravel()
    return points, weights


def lagrange_basis(p: int, points: np.ndarray):
    """Degree-``p`` Lagrange basis on the reference tetrahedron.

    Returns
    -------
    values : (n_points, n_nodes), gradients : (n_points, n_nodes, 3) in reference
    coordinates, nodes : (n_nodes, 3) = multi-indices / p.
    """
    exps = np.array([(i, j, k) for i in range(p + 1) for j in range(p + 1 - i)
                     for k in range(p + 1 - i - j)])
    nodes = exps / p

    def monomials(x, e):
        return np.prod(x[:, None, :] ** e[None, :, :], axis=2)

    coeffs = np.linalg.inv(monomials(nodes, exps))  # column j: basis function j
    grads = []
    for d in range(3):
        lowered = exps.copy()
        lowered[:, d] = np.maximum(lowered[:, d] - 1, 0)
        grads.append(exps[:, d] * monomials(points, lowered))
    gradients = np.einsum("dqm,mn->qnd", np.array(grads), coeffs)
    return monomials(points, exps) @ coeffs, gradients, nodes


class PeriodicSpectrum:
    """A real trigonometric polynomial ``f(x) = Σ_m c_m exp(2πi m·x / a)`` on a cubic cell of
    edge ``a`` (bohr), from its values on an N³ grid, evaluated on translated n³ grids
    ``a j / n + offset`` by folding the coefficients modulo n (exact for any n)."""

    def __init__(self, values: np.ndarray, a: float):
        self.a = float(a)
        self.n_grid = values.shape[0]
        self.coeffs = np.fft.fftn(values) / values.size
        self.freq = np.fft.fftfreq(self.n_grid, 1.0 / self.n_grid)

    def on_grid(self, n: int, offset, derivative: int | None = None) -> np.ndarray:
        """f (or ∂f/∂x_derivative) at ``a j / n + offset`` (bohr) for j on the n³ grid."""
        c = self.coeffs
        wave = 2j * np.pi * self.freq / self.a
        for d in range(3):  # fold axis d: Σ_{m ≡ k mod n} c_m exp(2πi m offset_d / a)
            row = np.exp(wave * offset[d]) * (wave if derivative == d else 1.0)
            fold = np.zeros((n, self.n_grid), complex)
            fold[(self.freq % n).astype(int), np.arange(self.n_grid)] = row
            c = np.moveaxis(np.tensordot(fold, c, axes=([1], [d])), 0, d)
        return np.real(np.fft.ifftn(c)) * n**3


def interpolation_error(spectrum: PeriodicSpectrum, n: int, p: int,
                        kinetic_lambda: float = 1.0) -> float:
    """``(λ/2) ∫ |∇(f − I f)|²`` over the cell (Ha for f = √ρ) for the continuous P_p
    interpolant ``I f`` on the Kuhn triangulation of n³ cubes (:func:`meshes.kuhn_cube`'s)."""
    from meshes import kuhn_cube

    h = spectrum.a / n
    ref_points, ref_weights = tetrahedron_rule(p + 4)
    _, gradients, ref_nodes = lagrange_basis(p, ref_points)
    corners, tets = kuhn_cube((1, 1, 1))
    node_values = {}
    total = 0.0
    for v in corners[tets]:  # the six tetrahedra of one cube
        jac = (v[1:] - v[0]).T  # unit cube = v0 + jac @ reference
        lattice = np.rint((v[0] + ref_nodes @ jac.T) * p).astype(int)  # nodes on the p-grid
        for key in map(tuple, lattice):
            if key not in node_values:
                node_values[key] = spectrum.on_grid(n, h * np.array(key) / p).ravel()
        u_nodes = np.stack([node_values[tuple(key)] for key in lattice])  # (nodes, n³)
        grad_phys = np.einsum("qnd,ed->qne", gradients, np.linalg.inv(jac).T / h)
        points = v[0] + ref_points @ jac.T
        weights = ref_weights * abs(np.linalg.det(jac)) * h**3
        for q, (x, w) in enumerate(zip(points, weights)):
            interp = grad_phys[q].T @ u_nodes  # (3, n³)
            exact = np.stack([spectrum.on_grid(n, h * x, d).ravel() for d in range(3)])
            total += w * float(np.sum((exact - interp) ** 2))
    return 0.5 * kinetic_lambda * total


#: Cube counts per cell edge scanned for each order, coarse to fine.
CUBE_LADDER = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48)


def cube_size_at(spectrum, p: int, target: float, n_atoms: int) -> tuple[float, bool, list]:
    """Largest cube size h (bohr) with ``δ_p(h) / n_atoms ≤ target``: the cube counts of
    :data:`CUBE_LADDER` in turn, log δ interpolated linearly in log h between the last two;
    extrapolated from the finest two where even the finest misses the target (flag True)."""
    scanned = []
    for n in CUBE_LADDER:
        scanned.append((n, interpolation_error(spectrum, n, p) / n_atoms))
        if scanned[-1][1] <= target:
            break
    if len(scanned) == 1:
        return spectrum.a / scanned[0][0], False, scanned
    (n0, d0), (n1, d1) = scanned[-2:]
    slope = np.log(d0 / d1) / np.log(n1 / n0)
    return spectrum.a / n1 * (target / d1) ** (1.0 / slope), d1 > target, scanned


def _atoms():
    from ase.build import bulk

    return bulk("Al", "fcc", a=A_ANGSTROM, cubic=True)


def dftpy_points_per_atom(reference: float, target: float, grids) -> tuple[int, list]:
    """Coarsest cubic FFT grid whose energy, and every finer scanned one's, is within
    ``target`` Ha/atom of ``reference``; returns its points per atom and the scan."""
    from dftpy_reference import dftpy_reference

    scan = [(n, dftpy_reference(_atoms(), {"Al": ("erf", 3, 1.0)}, 1.0, nr=(n, n, n),
                                forces=False, tol=1e-9)["energy_per_atom"] - reference)
            for n in grids]
    ok = [n for i, (n, _) in enumerate(scan) if all(abs(e) <= target for _, e in scan[i:])]
    if not ok:
        raise RuntimeError(f"no DFTpy grid of {list(grids)} within {target} Ha/atom")
    return ok[0] ** 3 // N_CELL, scan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=1e-4, help="Ha/atom")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--calibration", nargs="+", default=["1:0.32", "1:0.24", "2:0.55",
                                                             "2:0.5"],
                        help="fedft runs ORDER:SPACING (bohr) that measure κ")
    parser.add_argument("--dftpy-grids", type=int, nargs="+",
                        default=[8, 10, 12, 14, 16, 18, 20])
    args = parser.parse_args(argv)

    import fedft
    from dftpy_reference import dftpy_converged_energy

    t0 = time.perf_counter()
    ref = dftpy_converged_energy(_atoms(), {"Al": ("erf", 3, 1.0)}, 1.0, target=1e-8)
    e_ref = ref["energy_per_atom"]
    spectrum = PeriodicSpectrum(np.sqrt(ref["rho"]), ref["cell"][0, 0])
    omega_atom = spectrum.a ** 3 / N_CELL
    print(f"DFTpy converged: {e_ref:.9f} Ha/atom ({ref['ecut_ev']:g} eV, grid "
          f"{ref['nr'][0]}³)", flush=True)
    pw_per_atom, scan = dftpy_points_per_atom(e_ref, args.target, args.dftpy_grids)
    print("DFTpy grids: " + ", ".join(f"{n}³ {e:+.1e}" for n, e in scan))
    print(f"DFTpy: {pw_per_atom} grid points per atom within {args.target:g} Ha/atom\n",
          flush=True)

    print("fedft (uniform meshes) against the error model, same cubes:")
    kappas = {}
    for item in args.calibration:
        order, spacing = int(item.split(":")[0]), float(item.split(":")[1])
        r = fedft.compute(_atoms(), {"Al": f"erf:3:{fedft.BOHR!r}"}, 1.0, preset="accurate",
                          order=order, spacing=spacing)
        n = round(r.mesh.n_dofs ** (1 / 3)) // order
        err = r.energy / fedft.HARTREE / N_CELL - e_ref
        delta = interpolation_error(spectrum, n, order) / N_CELL
        kappas.setdefault(order, []).append(err / delta)
        print(f"  P{order} spacing {spacing:.2f}: {n} cubes, {r.mesh.n_dofs // N_CELL} DOFs/atom,"
              f" E - E_ref {err:+.3e}, δ {delta:.3e}, κ {err / delta:.3f}", flush=True)
    kappa = {p: float(np.mean(k)) for p, k in kappas.items()}
    spread = max(kappa.values()) / min(kappa.values()) - 1.0
    print("κ per order: " + ", ".join(f"P{p} {k:.3f}" for p, k in kappa.items())
          + f" (spread {100 * spread:.0f} %)\n")
    k_high = kappa[max(kappa)]

    print("order  κ used  cube h at target (bohr)  DOFs/atom  / DFTpy points  (scanned n: δ)")
    for p in args.orders:
        k = kappa.get(p, k_high)
        h, extrapolated, scanned = cube_size_at(spectrum, p, args.target / k, N_CELL)
        dofs = omega_atom * (p / h) ** 3
        scans = ", ".join(f"{n}: {d:.1e}" for n, d in scanned[-2:])
        print(f"  P{p}   {k:.3f}   {h:6.3f}                   {dofs:9.0f}  "
              f"{dofs / pw_per_atom:6.1f}x        ({scans}"
              + (", extrapolated)" if extrapolated else ")"), flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if spread > 0.25:
        print(f"κ of the orders differ by {100 * spread:.0f} % (> 25 %): the error model does not "
              "carry over between orders", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
