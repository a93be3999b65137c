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

    After a calculation, :attr:`result` holds the full :class:`fedft.Result` (fields included).
    Meshes, matrices and AMG hierarchies are reused while the cell stays the same, and the last
    density starts the next minimisation.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {"pseudopotentials": None, "kinetic_lambda": None,
                          "preset": "accurate", "gauge": "gradient", "settings": {}}
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
                              initial_guess=guess, **dict(p.get("settings") or {}))
        self.results = {"energy": self.result.energy, "free_energy": self.result.free_energy,
                        "forces": self.result.forces.copy()}
