"""Seed statistics: mean +/- sample sd, and a paired difference with its 95% t interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..10; beyond that the normal 1.96 is
# within 0.2 of the truth and we use the df=10 value (2.228) as a conservative stand-in.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Paired:
    """Mean of ``a - b`` over seeds with its 95% interval."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below 0."""
        return self.low > 0 or self.high < 0


def mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def t975(df: int) -> float:
    """The 97.5% Student-t quantile for ``df`` degrees of freedom (see _T975)."""
    if df < 1:
        raise ValueError("need at least 2 paired seeds for an interval")
    return _T975[min(df, len(_T975)) - 1]


def paired(a: np.ndarray, b: np.ndarray) -> Paired:
    """95% t interval of the mean paired difference ``a - b`` (same seeds in the same order)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, sd = mean_sd(d)
    half = t975(d.size - 1) * sd / math.sqrt(d.size)
    return Paired(mean, mean - half, mean + half)
