"""ASE calculator around :func:`fedft.compute`."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from ._compute import DiscretisationCache, check_lambda, compute
from ._errors import SettingsError
from ._settings import PRESETS


class FedftCalculator(Calculator):
    """Finite-element orbital-free DFT as an ASE calculator.

    Parameters
    ----------
    pseudopotentials : dict
        Chemical symbol -> ``"erf:Z:RC"`` (RC in Å) or a ``.psp8``/``.recpot``/``.upf`` path.
    kinetic_lambda : float
        λ of TF + λ·vW (required).
    preset : str
        ``"fast"``, ``"accurate"`` (default) or ``"tight"``.
    gauge : str
        Energy-density gauge of :attr:`result` (``"gradient"`` or ``"laplacian"``).
    settings : dict
        Overrides of individual solver settings (bohr, Ha).
    charge : float or None
        Net charge Q (e) of an isolated structure (``pbc=False``); default: the sum of the
        atoms' initial charges.

    Isolated structures (``pbc=False``) also give ``dipole`` (e·Å, about the origin). After a
    calculation, :attr:`result` holds the full :class:`fedft.Result` (its nodal fields are
    computed when first read, so energy and force calls do not pay for them).
    Meshes, matrices and AMG hierarchies are reused while the mesh stays the same (a graded
    mesh follows the atoms, so it is rebuilt when they move), and the last density starts the
    next minimisation when it lives on the same mesh.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]
    default_parameters = {"pseudopotentials": None, "kinetic_lambda": None,
                          "preset": "accurate", "gauge": "gradient", "settings": {},
                          "charge": None}
    discard_results_on_any_change = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.parameters.get("pseudopotentials"):
            raise SettingsError("FedftCalculator needs pseudopotentials={symbol: spec}")
        check_lambda(self.parameters.get("kinetic_lambda"))
        if self.parameters["preset"] not in PRESETS:
            raise SettingsError(f"unknown preset {self.parameters['preset']!r}; choose one of "
                                f"{sorted(PRESETS)}")
        self._cache = DiscretisationCache(size=1)
        self.result = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.parameters
        guess = self.result if "cell" not in system_changes else None
        self.result = compute(self.atoms, p["pseudopotentials"], p["kinetic_lambda"],
                              preset=p["preset"], gauge=p["gauge"], cache=self._cache,
                              initial_guess=guess, charge=p.get("charge"),
                              **dict(p.get("settings") or {}))
        self.results = {"energy": self.result.energy, "free_energy": self.result.free_energy,
                        "forces": self.result.forces.copy()}
        if self.result.dipole is not None:
            self.results["dipole"] = self.result.dipole.copy()
