"""Readers for the local channel of ``.upf`` (v1, v2) and ``.recpot`` pseudopotentials.

Every file here is generated from an analytic local potential with a known Fourier transform,

    V(r) = -Z erf(r/rc)/r + A exp(-r²/b²)                                  (Ha, bohr)
    V(q) = -4πZ exp(-q²rc²/4)/q² + A π^{3/2} b³ exp(-q²b²/4)                (Ha·bohr³)
    V(q=0) (non-Coulomb part) = πZrc² + A π^{3/2} b³,

written in each format's own units (UPF: Rydberg on a bohr mesh; recpot: eV·Å³ on a 1/Å grid),
read back through :func:`fedft._pseudo.load_pseudo` and compared with the analytic V(r). The
Gaussian bump (A, b) keeps the test honest: the recpot reader's Coulomb split width is chosen
from the file's kmax and never equals rc, so its transform has real work to do.

DFTpy reads the same files with its own readers; its reciprocal-space V(q) is compared with the
Fourier transform of our real-space tables, so the two codes agree on each file's convention.
"""

import numpy as np
import pytest
from scipy.integrate import simpson
from scipy.special import erf, spherical_jn

from fedft._errors import PseudopotentialError
from fedft._pseudo import BOHR, HARTREE, TabulatedPseudo, load_pseudo, read_recpot, read_upf

Z, RC, A, B = 3.0, 1.0, 1.5, 0.7
SYMBOL = "Al"
#: Radii (bohr) the tables are checked at: dense through the core, then out past every table.
R_CHECK = np.concatenate([np.linspace(0.0, 3.0, 1201), np.linspace(3.0, 15.0, 241)])


def v_exact(r):
    """Analytic V(r) (Ha) at r (bohr)."""
    r = np.asarray(r, float)
    rr = np.where(r == 0, 1.0, r)
    coul = np.where(r == 0, -2.0 * Z / (np.sqrt(np.pi) * RC), -Z * erf(rr / RC) / rr)
    return coul + A * np.exp(-(r / B) ** 2)


def dv_exact(r):
    """Analytic dV/dr (Ha/bohr)."""
    r = np.asarray(r, float)
    rr = np.where(r == 0, 1.0, r)
    coul = Z * (erf(rr / RC) / rr**2 - 2.0 / (np.sqrt(np.pi) * RC) * np.exp(-(rr / RC) ** 2) / rr)
    return np.where(r == 0, 0.0, coul) - 2.0 * A * r / B**2 * np.exp(-(r / B) ** 2)


def vq_exact(q):
    """Analytic V(q) (Ha·bohr³), with -4πZ/q² included for q > 0 and the non-Coulomb limit at 0."""
    q = np.asarray(q, float)
    qq = np.where(q == 0, 1.0, q)
    coul = np.where(q == 0, np.pi * Z * RC**2,
                    -4.0 * np.pi * Z * np.exp(-(qq * RC) ** 2 / 4) / qq**2)
    return coul + A * np.pi**1.5 * B**3 * np.exp(-(q * B) ** 2 / 4)


def forward_transform(pseudo, q, rmax=14.0, step=1e-3):
    """Fourier transform (Ha·bohr³) of our real-space table, in the recpot/DFTpy convention:
    ``4π ∫ r (r V(r) + Z) j0(qr) dr - 4πZ/q²`` (no Coulomb term at q = 0)."""
    r = np.arange(0.0, rmax + step / 2, step)
    rvz = r * pseudo.potential(r)[0] + pseudo.z
    out = np.array([4 * np.pi * simpson(r * rvz * spherical_jn(0, qi * r), x=r) for qi in q])
    qq = np.where(q == 0, 1.0, q)
    return out - np.where(q == 0, 0.0, 4 * np.pi * pseudo.z / qq**2)


# ---------------------------------------------------------------------------- file writers


def _columns(values, fmt="{:.15e}", ncol=4):
    return "\n".join("  " + "  ".join(fmt.format(x) for x in values[i: i + ncol])
                     for i in range(0, len(values), ncol))


def log_mesh(n=1000, xmin=-8.0, dx=0.0125):
    """ld1.x-style logarithmic mesh r_i = exp(xmin + i dx)/Z (bohr), starting just above 0."""
    return np.exp(xmin + dx * np.arange(n)) / Z


def linear_mesh(rmax=10.0, step=0.01):
    """ONCVPSP-style linear mesh starting at r = 0 (bohr)."""
    return np.arange(0.0, rmax + step / 2, step)


def write_upf_v1(path, r, z_line=True, local=None, element=SYMBOL, mesh_n=None):
    v_ry = 2.0 * v_exact(r) if local is None else local
    z_text = f"    {Z:.11f}      Z valence\n" if z_line else "\n"
    path.write_text(
        "<PP_INFO>\n  Generated analytically by the fedft test-suite\n"
        "  Author: fedft   Generation date: today\n  analytic erf + Gaussian\n</PP_INFO>\n"
        "<PP_HEADER>\n"
        "   0                   Version Number\n"
        f"  {element}                   Element\n"
        "   NC                  Norm - Conserving pseudopotential\n"
        "    F                  Nonlinear Core Correction\n"
        " SLA  PW   NOGX NOGC   PZ   Exchange-Correlation functional\n"
        f"{z_text}"
        "    0.00000000000      Total energy\n"
        "    0.0000000    0.0000000 Suggested cutoff for wfc and rho\n"
        "    0                  Max angular momentum component\n"
        f"  {mesh_n or len(r)}                  Number of points in mesh\n"
        "    0    0             Number of Wavefunctions, Number of Projectors\n"
        " Wavefunctions         nl  l   occ\n"
        "</PP_HEADER>\n"
        f"<PP_MESH>\n  <PP_R>\n{_columns(r)}\n  </PP_R>\n"
        f"  <PP_RAB>\n{_columns(np.gradient(r))}\n  </PP_RAB>\n</PP_MESH>\n"
        f"<PP_LOCAL>\n{_columns(v_ry) if not isinstance(v_ry, str) else v_ry}\n</PP_LOCAL>\n")
    return path


def write_upf_v2(path, r, header_extra='z_valence="3.000000000000000E+000"', local=None,
                 local_size=None, element=SYMBOL):
    v_ry = 2.0 * v_exact(r) if local is None else local
    n = len(r)
    path.write_text(
        '<UPF version="2.0.1">\n'
        "  <PP_INFO>\n    Generated analytically by the fedft test-suite\n  </PP_INFO>\n"
        f'  <PP_HEADER generated="fedft" author="fedft" date="" comment="" element="{element}"\n'
        '    pseudo_type="NC" relativistic="scalar" is_ultrasoft="F" is_paw="F"\n'
        '    is_coulomb="F" has_so="F" has_wfc="F" has_gipaw="F" core_correction="F"\n'
        f'    functional="PZ" {header_extra} total_psenergy="0.0"\n'
        '    wfc_cutoff="0.0" rho_cutoff="0.0" l_max="0" l_local="0"\n'
        f'    mesh_size="{n}" number_of_wfc="0" number_of_proj="0"/>\n'
        f'  <PP_MESH mesh="{n}">\n'
        f'    <PP_R type="real" size="{n}" columns="4">\n{_columns(r)}\n    </PP_R>\n'
        f'    <PP_RAB type="real" size="{n}" columns="4">\n{_columns(np.gradient(r))}\n'
        "    </PP_RAB>\n  </PP_MESH>\n"
        f'  <PP_LOCAL type="real" size="{local_size or n}" columns="4">\n'
        f"{_columns(v_ry) if not isinstance(v_ry, str) else v_ry}\n  </PP_LOCAL>\n"
        "</UPF>\n")
    return path


def write_recpot(path, n=1500, qmax=16.0, fmt="{:.15E}", nonlocal_block=False, values=None,
                 terminator="1000", version="3     5"):
    """CASTEP recpot: kmax in 1/Å, V(q) in eV·Å³ on q = 0..kmax, three values a line, '1000'.

    ``qmax`` is in 1/bohr."""
    q = np.linspace(0.0, qmax, n)
    vals = vq_exact(q) * HARTREE * BOHR**3 if values is None else values
    body = "\n".join("     " + "     ".join(fmt.format(x) for x in vals[i: i + 3])
                     for i in range(0, len(vals), 3))
    if nonlocal_block:  # an l = 0 projector block between the local table and the final '1000'
        body += "\n0\n" + "\n".join("  1.0E+00  2.0E+00  3.0E+00" for _ in range(5))
    path.write_text(f"START COMMENT\n  analytic erf + Gaussian, fedft tests\nEND COMMENT\n"
                    f"{version}\n{qmax / BOHR:.15f}\n{body}\n{terminator}\n")
    return path


# ---------------------------------------------------------------------------- UPF


@pytest.mark.parametrize("version, mesh", [(1, "log"), (2, "log"), (1, "linear"), (2, "linear")])
def test_upf_reproduces_analytic_potential(tmp_path, version, mesh):
    r = log_mesh() if mesh == "log" else linear_mesh()
    writer = write_upf_v1 if version == 1 else write_upf_v2
    path = writer(tmp_path / f"{SYMBOL}.v{version}.upf", r)
    pseudo = load_pseudo(path)
    assert isinstance(pseudo, TabulatedPseudo)
    assert pseudo.symbol == SYMBOL and pseudo.z == Z
    np.testing.assert_allclose(pseudo.r, r, rtol=1e-15, atol=0)  # 16 digits printed
    # The table itself is the file's numbers in Ha (Ry/2), to print precision.
    np.testing.assert_allclose(pseudo.v, v_exact(r), rtol=0, atol=1e-13)
    # Between the points: TabulatedPseudo's cubic spline. Measured max errors: V 3.7e-9 Ha (log
    # mesh), 1.7e-8 Ha (0.01-bohr linear mesh, at r = 0.0025 next to the not-a-knot end);
    # dV/dr 3.4e-6 / 1.2e-5 Ha/bohr, both at r = 0.
    v, dv = pseudo.potential(R_CHECK)
    assert np.max(np.abs(v - v_exact(R_CHECK))) < 5e-8
    assert np.max(np.abs(dv - dv_exact(R_CHECK))) < 5e-5
    assert pseudo.digest and pseudo.source == str(path)


def test_upf_v2_ignores_unparsable_pp_info_and_uppercase_suffix(tmp_path):
    """PP_INFO often holds a raw generator input with '&' namelists, which is not XML."""
    path = write_upf_v2(tmp_path / "al.UPF", linear_mesh())
    text = path.read_text().replace("Generated analytically",
                                    "<PP_INPUTFILE>\n &input  zed=13 & / \n</PP_INPUTFILE>")
    path.write_text(text)
    pseudo = load_pseudo(str(path))
    assert pseudo.z == Z
    assert np.max(np.abs(pseudo.potential(R_CHECK)[0] - v_exact(R_CHECK))) < 5e-8


def test_upf_rydberg_to_hartree(tmp_path):
    """A file whose PP_LOCAL is -2Z/r Ry (= -Z/r Ha) beyond the core reads as -Z/r Ha."""
    r = linear_mesh()
    pseudo = read_upf(write_upf_v2(tmp_path / "al.upf", r))
    far = r > 6
    np.testing.assert_allclose(pseudo.v[far], -Z / r[far], rtol=1e-12)


# ---------------------------------------------------------------------------- recpot


@pytest.mark.parametrize("n, node_tol", [
    (1500, 1e-12),   # dq = 0.011/bohr: trapezoid q-sum exact to rounding; measured 2.3e-13 Ha
    (121, 1e-12),    # dq = 0.133/bohr, 2π/dq = 47 bohr >= 2 rmax: measured 2.4e-13 Ha
    (61, 1e-12),     # 2π/dq = 23.6 bohr < 2 rmax, but r V_s(r) is negligible where its aliases
                     # come from, so the file's grid is kept: measured 2.5e-13 Ha (a spline
                     # refinement would cost 6e-9)
    (35, 1e-6),      # 2π/dq = 13.2 bohr: aliases would cost 1.5e-2 Ha; quintic-spline refinement
                     # of V_s(q) instead: measured 2.0e-7 Ha
])
def test_recpot_reproduces_analytic_potential(tmp_path, n, node_tol):
    path = write_recpot(tmp_path / "Al.lda.recpot", n=n, qmax=16.0)
    pseudo = load_pseudo(path)
    assert isinstance(pseudo, TabulatedPseudo)
    assert pseudo.z == Z and pseudo.symbol == SYMBOL
    assert pseudo.r[0] == 0.0 and pseudo.r[-1] == pytest.approx(12.0)
    assert np.max(np.diff(pseudo.r)) <= 0.005 + 1e-12
    # The transform at the table's nodes.
    assert np.max(np.abs(pseudo.v - v_exact(pseudo.r))) < node_tol
    # Between nodes TabulatedPseudo's spline adds at most 1.1e-9 Ha (measured, at r = 0.0025)
    # to V and 1.5e-6 Ha/bohr to dV/dr (at r = 0; 1e-9 beyond r = 0.1 bohr).
    v, dv = pseudo.potential(R_CHECK)
    assert np.max(np.abs(v - v_exact(R_CHECK))) < max(node_tol, 5e-9)
    assert np.max(np.abs(dv - dv_exact(R_CHECK))) < max(5e-6, 10 * node_tol)
    outer = R_CHECK > 0.1
    assert np.max(np.abs(dv - dv_exact(R_CHECK))[outer]) < max(10 * node_tol, 5e-9)


def test_recpot_file_truncation_error_is_what_the_file_omits(tmp_path):
    """kmax = 12/bohr cuts the Gaussian bump's V(q) at ~2e-8 of its peak: the error of the
    transform is then the file's own truncation (measured 1.6e-7 Ha), not ours."""
    pseudo = load_pseudo(write_recpot(tmp_path / "al.recpot", n=1500, qmax=12.0))
    err = np.max(np.abs(pseudo.potential(R_CHECK)[0] - v_exact(R_CHECK)))
    assert 1e-8 < err < 1e-6


def test_recpot_ignores_nonlocal_blocks_and_short_precision(tmp_path):
    ref = read_recpot(write_recpot(tmp_path / "al.recpot", n=600))
    other = read_recpot(write_recpot(tmp_path / "al2.recpot", n=600, nonlocal_block=True,
                                     fmt="{:.10E}"))
    # 11 significant digits in the file: measured 3e-12 Ha change.
    np.testing.assert_allclose(other.v, ref.v, rtol=0, atol=1e-10)
    assert other.z == ref.z == Z


def test_recpot_valence_from_coulomb_tail(tmp_path):
    """Z is not stated in a recpot file: it comes from q²(V(q) - V(0)) -> -4πZ."""
    q = np.linspace(0.0, 16.0, 800)
    for z in (1.0, 4.0, 11.0):
        vals = (vq_exact(q) + np.where(q == 0, np.pi * (z - Z) * RC**2,
                                       -4 * np.pi * (z - Z) * np.exp(-(q * RC) ** 2 / 4)
                                       / np.where(q == 0, 1, q) ** 2))
        p = read_recpot(write_recpot(tmp_path / "x.recpot", values=vals * HARTREE * BOHR**3))
        assert p.z == z
        assert p.potential(np.array([14.0]))[0][0] == pytest.approx(-z / 14.0, rel=1e-12)


# ---------------------------------------------------------------------------- DFTpy cross-check

Q_CHECK = np.array([0.0, 0.3, 0.7, 1.5, 3.0, 5.0])  # 1/bohr
#: Max |ΔV(q)|/(|V(q)| + 1 Ha·bohr³) measured: UPF 2.9e-9 (DFTpy's Simpson transform of the
#: 0.005-bohr table, worst at q = 5); recpot 5.1e-8 (DFTpy's spline through q > 0 near
#: q = 0.3, where -4πZ/q² dominates). Our own forward transform matches the exact V(q) to 4e-11.
DFTPY_TOL = {"upf1": 3e-8, "upf2": 3e-8, "recpot": 5e-7}


@pytest.mark.parametrize("kind", ["upf1", "upf2", "recpot"])
def test_dftpy_reads_the_same_reciprocal_potential(tmp_path, kind):
    """DFTpy's V(q) from its own readers (UPF: ReadPseudo's real->reciprocal transform of the
    file's table; recpot: the file's table itself), interpolated by DFTpy's own spline, equals
    the Fourier transform of our real-space table, and both equal the analytic V(q)."""
    from dftpy.functional.pseudo import ReadPseudo
    from scipy.interpolate import splev

    if kind == "recpot":
        path = write_recpot(tmp_path / "Al.recpot", n=1500, qmax=16.0)
    else:
        writer = write_upf_v1 if kind == "upf1" else write_upf_v2
        path = writer(tmp_path / "Al.upf", linear_mesh(rmax=12.0, step=0.005))
    ours = load_pseudo(path)
    theirs = ReadPseudo(PP_list={SYMBOL: str(path)})
    assert theirs.zval[SYMBOL] == ours.z
    assert theirs.gp[SYMBOL][0] == 0.0
    vp = np.concatenate([[theirs.vp[SYMBOL][0]], splev(Q_CHECK[1:], theirs.vloc_interp[SYMBOL])])
    mine = forward_transform(ours, Q_CHECK)
    exact = vq_exact(Q_CHECK)
    scale = np.abs(exact) + 1.0
    assert np.max(np.abs(mine - vp) / scale) < DFTPY_TOL[kind]
    assert np.max(np.abs(vp - exact) / scale) < DFTPY_TOL[kind]
    assert np.max(np.abs(mine - exact) / scale) < 1e-8


# ---------------------------------------------------------------------------- bad input


def test_missing_files(tmp_path):
    for name in ("none.upf", "none.recpot"):
        with pytest.raises(PseudopotentialError, match="does not exist"):
            load_pseudo(tmp_path / name)
    with pytest.raises(PseudopotentialError, match="does not exist"):
        read_upf(tmp_path / "none.upf")
    with pytest.raises(PseudopotentialError, match="does not exist"):
        read_recpot(tmp_path / "none.recpot")


def test_upf_truncated_tables(tmp_path):
    r = linear_mesh()
    short = 2.0 * v_exact(r)[:-7]
    with pytest.raises(PseudopotentialError, match=r"truncated table.*PP_LOCAL.*1001"):
        load_pseudo(write_upf_v1(tmp_path / "a.upf", r, local=short))
    with pytest.raises(PseudopotentialError, match=r"truncated table.*PP_LOCAL.*size attribute"):
        load_pseudo(write_upf_v2(tmp_path / "b.upf", r, local=short))
    # PP_R and PP_LOCAL cut alike: the header's mesh size notices
    with pytest.raises(PseudopotentialError, match=r"truncated table.*mesh size is 1001"):
        load_pseudo(write_upf_v1(tmp_path / "f.upf", r[:-9], mesh_n=r.size))
    path = write_upf_v2(tmp_path / "c.upf", r)
    path.write_text(path.read_text().split("<PP_LOCAL")[0] + "</UPF>\n")
    with pytest.raises(PseudopotentialError, match=r"c\.upf: no <PP_LOCAL>"):
        load_pseudo(path)
    path = write_upf_v1(tmp_path / "d.upf", r)
    path.write_text(path.read_text()[:-3000])  # cut mid-table: v1 is not XML
    with pytest.raises(PseudopotentialError, match=r"d\.upf: no <PP_LOCAL>"):
        load_pseudo(path)
    path = write_upf_v2(tmp_path / "e.upf", r)
    path.write_text(path.read_text()[:-3000])  # cut mid-table: broken XML
    with pytest.raises(PseudopotentialError, match=r"e\.upf: malformed UPF v2 XML"):
        load_pseudo(path)


def test_upf_missing_z_valence(tmp_path):
    with pytest.raises(PseudopotentialError, match=r"a\.upf.*z_valence"):
        load_pseudo(write_upf_v1(tmp_path / "a.upf", linear_mesh(), z_line=False))
    with pytest.raises(PseudopotentialError, match=r"b\.upf.*no z_valence attribute"):
        load_pseudo(write_upf_v2(tmp_path / "b.upf", linear_mesh(), header_extra=""))
    with pytest.raises(PseudopotentialError, match=r"z_valence 'three' is not a number"):
        load_pseudo(write_upf_v2(tmp_path / "c.upf", linear_mesh(),
                                 header_extra='z_valence="three"'))


def test_non_numeric_values(tmp_path):
    r = linear_mesh()
    bad = _columns(2.0 * v_exact(r)).replace("e-", "x-", 1)
    with pytest.raises(PseudopotentialError, match=r"a\.upf: non-numeric value"):
        load_pseudo(write_upf_v1(tmp_path / "a.upf", r, local=bad))
    with pytest.raises(PseudopotentialError, match=r"b\.upf: non-numeric value"):
        load_pseudo(write_upf_v2(tmp_path / "b.upf", r, local=bad))
    path = write_recpot(tmp_path / "c.recpot", n=300)
    path.write_text(path.read_text().replace("E-", "Q-", 1))
    with pytest.raises(PseudopotentialError, match=r"c\.recpot: non-numeric value"):
        load_pseudo(path)


def test_recpot_malformed(tmp_path):
    with pytest.raises(PseudopotentialError, match="not terminated by a '1000' line"):
        load_pseudo(write_recpot(tmp_path / "a.recpot", n=300, terminator=""))
    path = write_recpot(tmp_path / "b.recpot", n=300)
    path.write_text(path.read_text().replace("END COMMENT", "END"))
    with pytest.raises(PseudopotentialError, match=r"b\.recpot: no 'END COMMENT' line"):
        load_pseudo(path)
    with pytest.raises(PseudopotentialError, match="expected '3 5'"):
        load_pseudo(write_recpot(tmp_path / "c.recpot", n=300, version="2 5"))
    path = write_recpot(tmp_path / "d.recpot", n=300)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n")  # comment + version, no kmax
    with pytest.raises(PseudopotentialError, match="truncated after 'END COMMENT'"):
        load_pseudo(path)
    # V(q > 0) without the -4πZ/q² Coulomb term: no valence charge to be found.
    q = np.linspace(0.0, 16.0, 300)
    vals = A * np.pi**1.5 * B**3 * np.exp(-(q * B) ** 2 / 4) * HARTREE * BOHR**3
    with pytest.raises(PseudopotentialError, match="cannot infer the valence charge"):
        load_pseudo(write_recpot(tmp_path / "e.recpot", values=vals))


def test_dispatch_by_suffix(tmp_path, monkeypatch):
    """load_pseudo picks the reader from the suffix, case-insensitively."""
    import fedft._pseudo as mod

    calls = []
    for suffix in (".upf", ".recpot"):
        monkeypatch.setitem(mod._READERS, suffix, lambda p, s=suffix: calls.append((s, p.name)))
    for name in ("x.upf", "y.UPF", "z.Upf", "w.recpot", "v.RECPOT"):
        (tmp_path / name).write_text("anything")
        load_pseudo(tmp_path / name)
    assert calls == [(".upf", "x.upf"), (".upf", "y.UPF"), (".upf", "z.Upf"),
                     (".recpot", "w.recpot"), (".recpot", "v.RECPOT")]


def test_registered_readers():
    import fedft._pseudo as mod

    assert mod._READERS[".upf"] is read_upf and mod._READERS[".recpot"] is read_recpot


def test_not_a_upf_file(tmp_path):
    (tmp_path / "x.upf").write_text("hello\n")
    with pytest.raises(PseudopotentialError, match=r"x\.upf: not a UPF file"):
        load_pseudo(tmp_path / "x.upf")
