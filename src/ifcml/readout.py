"""A sample's fraction of the readout class, corrected for the classifier's errors, with a 95 % interval.

Classify-and-count (CC) reports the share of a sample's cells called positive, so every error
shifts it: with true fraction p, a classifier of true-positive rate ``tpr`` and false-positive
rate ``fpr`` reports ``p * tpr + (1 - p) * fpr`` on average. Adjusted classify-and-count (ACC;
Forman 2008, "Quantifying counts and costs via classification") inverts that,
``p = (cc - fpr) / (tpr - fpr)``, with ``tpr`` and ``fpr`` measured on the design's held-out
cells; its probabilistic form (PACC; Bella et al. 2010) does the same with mean probabilities
instead of counts, where the model has probabilities and they correct better on the design's
held-out instances. The rates are a property of the design: measured once over the grid's
held-out folds, stored with the design and in the exported model.

The interval is a percentile bootstrap over both sources of error: the sample's cells (its
called share is resampled as a binomial; its mean probability by the normal law of a mean) and
the rates. A classifier's error rates differ from one patient to the next, and a new sample
has rates of its own: resampling cells alone gave intervals that held a held-out patient's
fraction in 67-75 % of patients instead of 95 % (the demo's simulated patients, two designs).
So each draw of a rate is the pooled rate of held-out units resampled with replacement (the
uncertainty of the mean) plus a new unit's deviation from it, normal with the between-unit
standard deviation (the units' spread beyond their own sampling noise, by the method of
moments, as in random-effects meta-analysis). With fewer than two held-out units the rates are
resampled by cell (binomial; normal for mean probabilities).
Calls against a cutoff are taken on the interval: above, below, or undecided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

CUTOFFS = (0.25, 0.10)  # the paper's slow-early-responder lines
DEFAULT_POSITIVE = "leukemic"  # the paper's readout class
BOOTSTRAP = 2000
MIN_SEPARATION = 0.05  # tpr - fpr below this: the correction would divide by (almost) nothing


def class_fractions(values: pd.Series, classes: list[str], prefix: str) -> dict[str, float]:
    """Each class's share of ``values`` (missing values left out) as ``{prefix}{class}``; NaN
    when no value is left. The one count behind every fraction: a held-out fold's, an
    instance's in the grid's readout, a new sample's in ``predict``."""
    known = values.dropna()
    return {
        f"{prefix}{name}": float((known == name).mean()) if len(known) else float("nan") for name in classes
    }


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
    # per held-out unit: positives, of them called positive, negatives, of them called positive,
    # and (with probabilities) the sums of P(positive) over its positives and its negatives
    units: tuple[tuple[float, ...], ...] = ()
    # which form corrects better, chosen by the design's held-out instances: PACC needs calibrated
    # probabilities (a random forest's are not, on the demo: its PACC error was above its count's)
    method: str = "pacc"

    def as_dict(self) -> dict:
        return asdict(self) | {"units": [list(u) for u in self.units]}

    @classmethod
    def from_dict(cls, values: dict) -> ErrorRates:
        return cls(**(values | {"units": tuple(tuple(u) for u in values.get("units") or ())}))


def error_rates(
    truth: np.ndarray,
    predicted: np.ndarray,
    positive: str,
    probability: np.ndarray | None = None,
    units: np.ndarray | None = None,
) -> ErrorRates:
    """The rates of held-out cells (reference ``truth``, calls ``predicted``, optionally each
    cell's probability of ``positive`` and the held-out unit it belongs to)."""
    truth, called = np.asarray(truth) == positive, np.asarray(predicted) == positive
    per_unit = _per_unit(truth, called, probability, units) if units is not None else ()
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
    return ErrorRates(positive, n_positive, n_negative, **rates, units=per_unit)


def _per_unit(truth, called, probability, units) -> tuple[tuple[float, ...], ...]:
    """Per unit, in order of appearance: positives, of them called, negatives, of them called,
    and the sums of P(positive) over its positives and its negatives (0 without probabilities)."""
    p = np.zeros(len(truth)) if probability is None else np.asarray(probability, np.float64)
    columns = pd.DataFrame({
        "positives": truth, "positives_called": truth & called,
        "negatives": ~truth, "negatives_called": ~truth & called,
        "p_positives": np.where(truth, p, 0.0), "p_negatives": np.where(truth, 0.0, p),
    })  # fmt: skip
    sums = columns.groupby(np.asarray(units), sort=False).sum()
    return tuple(
        (int(a), int(b), int(c), int(d), float(e), float(f)) for a, b, c, d, e, f in sums.itertuples(False)
    )


@dataclass(frozen=True)
class Estimate:
    """One sample's readout: classify-and-count, the corrected fraction and its interval."""

    cells: int
    classify_and_count: float
    corrected: float  # in the design's form (ErrorRates.method); NaN when not estimable
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
    probabilistic = probability is not None and rates.tpr_probability is not None and rates.method == "pacc"
    if probabilistic:
        observed, tpr, fpr = float(np.mean(probability)), rates.tpr_probability, rates.fpr_probability
    else:
        observed, tpr, fpr = cc, rates.tpr, rates.fpr
    method = "pacc" if probabilistic else "acc"
    if n == 0 or not np.isfinite(tpr - fpr) or tpr - fpr < MIN_SEPARATION:
        why = (
            "no cells" if n == 0
            else "no error rates (no held-out cells of both kinds)" if not np.isfinite(tpr - fpr)
            else f"tpr - fpr < {MIN_SEPARATION}: the design hardly separates the class"
        )  # fmt: skip
        return Estimate(n, cc, float("nan"), why, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if probabilistic:
        sd = float(np.std(probability))
        observed_draws = rng.normal(observed, sd / np.sqrt(n), BOOTSTRAP)
    else:
        observed_draws = rng.binomial(n, cc, BOOTSTRAP) / n
    tpr_draws, fpr_draws = _rate_draws(rates, probabilistic, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.clip((observed_draws - fpr_draws) / (tpr_draws - fpr_draws), 0, 1)
    draws = draws[np.isfinite(draws)]
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
    corrected = float(np.clip((observed - fpr) / (tpr - fpr), 0, 1))
    return Estimate(n, cc, corrected, method, float(low), float(high))


def _between_units_sd(cells: np.ndarray, hits: np.ndarray, cell_sd: float | None) -> float:
    """How much a unit's own rate spreads around the pooled one beyond its sampling noise (method of
    moments: weighted variance of the units' rates minus their mean sampling variance, at least 0).
    ``cell_sd``: the per-cell standard deviation for probabilities; binomial for counts."""
    keep = cells > 0
    if keep.sum() < 2:
        return 0.0
    cells, rates = cells[keep], hits[keep] / cells[keep]
    pooled = hits[keep].sum() / cells.sum()
    observed = np.average((rates - pooled) ** 2, weights=cells)
    per_cell = cell_sd**2 if cell_sd is not None else pooled * (1 - pooled)
    sampling = per_cell * len(cells) / cells.sum()  # the weighted mean of per_cell / n_unit
    return float(np.sqrt(max(0.0, observed - sampling)))


def _rate_draws(rates: ErrorRates, probabilistic: bool, rng: np.random.Generator):
    """Bootstrap draws of (tpr, fpr): held-out units resampled when there are two or more."""
    if len(rates.units) >= 2:
        units = np.asarray(rates.units, np.float64)
        sums = units[rng.integers(0, len(units), (BOOTSTRAP, len(units)))].sum(axis=1)
        draws = []
        for cells, hits, sd in ((0, 4 if probabilistic else 1, rates.tpr_probability_sd),
                                (2, 5 if probabilistic else 3, rates.fpr_probability_sd)):  # fmt: skip
            with np.errstate(divide="ignore", invalid="ignore"):
                means = sums[:, hits] / sums[:, cells]
            spread = _between_units_sd(units[:, cells], units[:, hits], sd if probabilistic else None)
            draws.append(means + rng.normal(0, spread, BOOTSTRAP))
        return draws[0], draws[1]
    if probabilistic:
        return (
            rng.normal(
                rates.tpr_probability, rates.tpr_probability_sd / np.sqrt(rates.n_positive), BOOTSTRAP
            ),
            rng.normal(
                rates.fpr_probability, rates.fpr_probability_sd / np.sqrt(rates.n_negative), BOOTSTRAP
            ),
        )
    return (
        rng.binomial(rates.n_positive, rates.tpr, BOOTSTRAP) / rates.n_positive,
        rng.binomial(rates.n_negative, rates.fpr, BOOTSTRAP) / rates.n_negative,
    )
