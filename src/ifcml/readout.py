"""A sample's fraction of the readout class, corrected for the classifier's errors, with a 95 % interval.

Classify-and-count (CC) reports the share of a sample's cells called positive, so every error
shifts it: with true fraction p, a classifier of true-positive rate ``tpr`` and false-positive
rate ``fpr`` reports ``p * tpr + (1 - p) * fpr`` on average. Adjusted classify-and-count (ACC;
Forman 2008, "Quantifying counts and costs via classification") inverts that,
``p = (cc - fpr) / (tpr - fpr)``, with ``tpr`` and ``fpr`` measured on the design's held-out
cells; its probabilistic form (PACC; Bella et al. 2010) does the same with mean probabilities
instead of counts, where the model has probabilities. The rates are a property of the design:
measured once over the grid's held-out folds, stored with the design and in the exported model.

The interval is a percentile bootstrap over both sources of error: the sample's cells (its
called share is resampled as a binomial; its mean probability by the normal law of a mean) and
the rates (binomial over the held-out positives and negatives; normal for mean probabilities).
Calls against a cutoff are taken on the interval: above, below, or undecided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CUTOFFS = (0.25, 0.10)  # the paper's slow-early-responder lines
BOOTSTRAP = 2000
MIN_SEPARATION = 0.05  # tpr - fpr below this: the correction would divide by (almost) nothing


@dataclass(frozen=True)
class ErrorRates:
    """How often the design calls a cell positive, by its reference class, on held-out cells."""

    positive: str
    n_positive: int  # held-out cells of the readout class
    n_negative: int
    tpr: float  # share of positives called positive
    fpr: float  # share of negatives called positive
    # the same with probabilities: mean (and standard deviation) of P(positive) per group
    tpr_probability: float | None = None
    fpr_probability: float | None = None
    tpr_probability_sd: float | None = None
    fpr_probability_sd: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ErrorRates:
        return cls(**values)


def error_rates(
    truth: np.ndarray, predicted: np.ndarray, positive: str, probability: np.ndarray | None = None
) -> ErrorRates:
    """The rates of held-out cells (reference ``truth``, calls ``predicted``, and optionally each
    cell's probability of ``positive``)."""
    truth, called = np.asarray(truth) == positive, np.asarray(predicted) == positive
    n_positive, n_negative = int(truth.sum()), int((~truth).sum())
    rates = {
        "tpr": float(called[truth].mean()) if n_positive else float("nan"),
        "fpr": float(called[~truth].mean()) if n_negative else float("nan"),
    }
    if probability is not None and n_positive and n_negative:
        probability = np.asarray(probability, np.float64)
        rates |= {
            "tpr_probability": float(probability[truth].mean()),
            "fpr_probability": float(probability[~truth].mean()),
            "tpr_probability_sd": float(probability[truth].std()),
            "fpr_probability_sd": float(probability[~truth].std()),
        }
    return ErrorRates(positive, n_positive, n_negative, **rates)


@dataclass(frozen=True)
class Estimate:
    """One sample's readout: classify-and-count, the corrected fraction and its interval."""

    cells: int
    classify_and_count: float
    corrected: float  # PACC where the model has probabilities, else ACC; NaN when not estimable
    method: str  # "pacc", "acc", or why there is no corrected estimate
    low: float
    high: float

    def call(self, cutoff: float) -> str:
        """'above', 'below' or 'undecided' against ``cutoff``, taken on the interval."""
        if np.isnan(self.low):
            return "undecided"
        if self.low >= cutoff:
            return "above"
        return "below" if self.high < cutoff else "undecided"


def estimate(
    called: np.ndarray, rates: ErrorRates, probability: np.ndarray | None = None, seed: int = 0
) -> Estimate:
    """The corrected fraction of one sample from its cells' calls (``called``: True where the
    cell was called positive) and, when given, their probabilities of the positive class."""
    called = np.asarray(called, bool)
    n = len(called)
    cc = float(called.mean()) if n else float("nan")
    probabilistic = probability is not None and rates.tpr_probability is not None
    if probabilistic:
        observed, tpr, fpr = float(np.mean(probability)), rates.tpr_probability, rates.fpr_probability
    else:
        observed, tpr, fpr = cc, rates.tpr, rates.fpr
    method = "pacc" if probabilistic else "acc"
    if n == 0 or not np.isfinite(tpr - fpr) or tpr - fpr < MIN_SEPARATION:
        why = "no cells" if n == 0 else f"tpr - fpr < {MIN_SEPARATION}: the design hardly separates the class"
        return Estimate(n, cc, float("nan"), why, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if probabilistic:
        sd = float(np.std(probability))
        observed_draws = rng.normal(observed, sd / np.sqrt(n), BOOTSTRAP)
        tpr_draws = rng.normal(tpr, rates.tpr_probability_sd / np.sqrt(rates.n_positive), BOOTSTRAP)
        fpr_draws = rng.normal(fpr, rates.fpr_probability_sd / np.sqrt(rates.n_negative), BOOTSTRAP)
    else:
        observed_draws = rng.binomial(n, cc, BOOTSTRAP) / n
        tpr_draws = rng.binomial(rates.n_positive, tpr, BOOTSTRAP) / rates.n_positive
        fpr_draws = rng.binomial(rates.n_negative, fpr, BOOTSTRAP) / rates.n_negative
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.clip((observed_draws - fpr_draws) / (tpr_draws - fpr_draws), 0, 1)
    draws = draws[np.isfinite(draws)]
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
    corrected = float(np.clip((observed - fpr) / (tpr - fpr), 0, 1))
    return Estimate(n, cc, corrected, method, float(low), float(high))
