"""Finite-element orbital-free DFT (Thomas-Fermi + λ·von Weizsäcker + LDA) on tetrahedral meshes.

Public API speaks ASE units (Å, eV, e); the solver works in atomic units (bohr, Hartree).
"""
