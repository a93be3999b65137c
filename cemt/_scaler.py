"""Feature standardisation fitted on training data and saved with a model."""

from __future__ import annotations

import torch

from ._errors import CemtError, FeatureSettingsError

__all__ = ["FeatureScaler"]


class FeatureScaler:
    """Per-column standardisation ``(x - mean) / std``.

    Fit on training features (at once with :meth:`fit`, or batch by batch with
    :meth:`partial_fit`, which merges running moments exactly), then apply with
    :meth:`transform`. :meth:`state_dict` / :meth:`load_state_dict` store it with a model.

    Parameters
    ----------
    eps : float, default 1e-12
        Columns whose standard deviation is below ``eps`` are only centred (std set to 1).
    """

    def __init__(self, eps: float = 1e-12) -> None:
        if not eps >= 0:
            raise FeatureSettingsError(f"eps must be >= 0, got {eps!r}")
        self.eps = float(eps)
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    @property
    def fitted(self) -> bool:
        """True once at least one sample has been seen."""
        return self.count > 0

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation per column (1 where below ``eps``)."""
        self._require_fit()
        std = torch.sqrt(self._m2 / self.count)
        return torch.where(std > self.eps, std, torch.ones_like(std))

    def fit(self, features) -> "FeatureScaler":
        """Fit mean and std on ``features`` of shape (n_samples, n_features), replacing any
        previous fit."""
        self.count, self.mean, self._m2 = 0, None, None
        return self.partial_fit(features)

    def partial_fit(self, features) -> "FeatureScaler":
        """Update the fit with another batch (n_samples, n_features)."""
        x = self._as_2d(features).detach().to(torch.float64)
        if x.shape[0] == 0:
            return self
        if not torch.isfinite(x).all():
            raise CemtError("features contain NaN or inf; fix the inputs before fitting a scaler")
        n_b = x.shape[0]
        mean_b = x.mean(dim=0)
        m2_b = ((x - mean_b) ** 2).sum(dim=0)
        if self.mean is None:
            self.count, self.mean, self._m2 = n_b, mean_b, m2_b
            return self
        if mean_b.shape != self.mean.shape:
            raise CemtError(f"batch has {mean_b.shape[0]} features, the scaler was fitted on "
                            f"{self.mean.shape[0]}")
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (self.count * n_b / n)
        self.count = n
        return self

    def transform(self, features) -> torch.Tensor:
        """Standardise ``features`` (n, n_features); keeps dtype, device and autograd graph."""
        x = self._as_2d(features)
        self._check_width(x)
        mean = self.mean.to(dtype=x.dtype, device=x.device)
        std = self.std.to(dtype=x.dtype, device=x.device)
        return (x - mean) / std

    def inverse_transform(self, features) -> torch.Tensor:
        """Undo :meth:`transform`."""
        x = self._as_2d(features)
        self._check_width(x)
        return x * self.std.to(dtype=x.dtype, device=x.device) + \
            self.mean.to(dtype=x.dtype, device=x.device)

    def state_dict(self) -> dict:
        """Tensors and settings to save with a model (``torch.save``-able)."""
        self._require_fit()
        return {"count": self.count, "mean": self.mean.clone(), "m2": self._m2.clone(),
                "eps": self.eps}

    def load_state_dict(self, state: dict) -> "FeatureScaler":
        """Restore a fit saved with :meth:`state_dict`."""
        try:
            count, mean, m2 = int(state["count"]), state["mean"], state["m2"]
        except (KeyError, TypeError) as exc:
            raise CemtError(f"not a FeatureScaler state dict (missing {exc})") from None
        mean = torch.as_tensor(mean, dtype=torch.float64)
        m2 = torch.as_tensor(m2, dtype=torch.float64)
        if count < 1 or mean.ndim != 1 or m2.shape != mean.shape:
            raise CemtError("invalid FeatureScaler state dict: count must be >= 1 and mean, m2 "
                            "1-d of equal length")
        self.count, self.mean, self._m2 = count, mean, m2
        self.eps = float(state.get("eps", self.eps))
        return self

    def _require_fit(self) -> None:
        if not self.fitted:
            raise CemtError("the FeatureScaler is not fitted; call fit() on training features "
                            "or load_state_dict() first")

    def _check_width(self, x: torch.Tensor) -> None:
        self._require_fit()
        if x.shape[1] != self.mean.shape[0]:
            raise CemtError(f"features have {x.shape[1]} columns, the scaler was fitted on "
                            f"{self.mean.shape[0]}")

    @staticmethod
    def _as_2d(features) -> torch.Tensor:
        x = features if isinstance(features, torch.Tensor) else torch.as_tensor(features)
        if x.ndim != 2:
            raise CemtError(f"features must have shape (n_samples, n_features), got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(torch.float64)
        return x
