"""The corrected readout: adjusted classify-and-count, its probabilistic form, intervals and calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ifcml.experiments.metrics import corrected_readout, held_out_rates
from ifcml.readout import ErrorRates, error_rates, estimate

TPR, FPR = 0.85, 0.10


def classified(rng, n: int, fraction: float):
    """Cells of a sample: truth, calls by a classifier of rates TPR / FPR, and probabilities."""
    truth = rng.random(n) < fraction
    called = np.where(truth, rng.random(n) < TPR, rng.random(n) < FPR)
    probability = np.where(truth, rng.beta(6, 2, n), rng.beta(1.2, 6, n))
    return truth, called, probability


def test_the_correction_inverts_the_classifiers_errors():
    rates = ErrorRates("leukemic", 10**6, 10**6, tpr=0.8, fpr=0.1)
    called = np.r_[np.ones(380, bool), np.zeros(620, bool)]  # 38 % called = 0.4 * 0.8 + 0.6 * 0.1
    result = estimate(called, rates)
    assert result.classify_and_count == pytest.approx(0.38)
    assert result.corrected == pytest.approx(0.40) and result.method == "acc"
    assert result.low < 0.40 < result.high and result.high - result.low < 0.1  # 1000 cells


def test_intervals_cover_known_fractions_and_the_correction_beats_counting():
    rng = np.random.default_rng(0)
    truth, called, probability = classified(rng, 3000, 0.3)  # the design's held-out cells
    rates = error_rates(np.where(truth, "leukemic", "normal"), np.where(called, "leukemic", "normal"),
                        "leukemic", probability)  # fmt: skip
    errors = {"cc": [], "acc": [], "pacc": []}
    inside = {"acc": 0, "pacc": 0}
    samples = 300
    for k in range(samples):
        truth, called, probability = classified(rng, 300, rng.uniform(0, 0.6))
        known = truth.mean()
        hard, soft = estimate(called, rates, seed=k), estimate(called, rates, probability, seed=k)
        errors["cc"].append(abs(hard.classify_and_count - known))
        for name, result in (("acc", hard), ("pacc", soft)):
            errors[name].append(abs(result.corrected - known))
            inside[name] += result.low <= known <= result.high
    assert inside["acc"] / samples >= 0.9 and inside["pacc"] / samples >= 0.9
    assert np.mean(errors["acc"]) < np.mean(errors["cc"]) / 1.5
    assert np.mean(errors["pacc"]) < np.mean(errors["cc"]) / 1.5


def test_calls_are_taken_on_the_interval():
    rates = ErrorRates("leukemic", 10**6, 10**6, tpr=1.0, fpr=0.0)
    low = estimate(np.r_[np.ones(5, bool), np.zeros(995, bool)], rates)  # 0.5 %
    middle = estimate(np.r_[np.ones(250, bool), np.zeros(750, bool)], rates)  # 25 %
    high = estimate(np.r_[np.ones(600, bool), np.zeros(400, bool)], rates)
    assert (low.call(0.25), low.call(0.10)) == ("below", "below")
    assert middle.call(0.25) == "undecided" and middle.call(0.10) == "above"
    assert (high.call(0.25), high.call(0.10)) == ("above", "above")


def test_a_design_that_does_not_separate_the_class_gives_no_corrected_estimate():
    rates = ErrorRates("leukemic", 500, 500, tpr=0.52, fpr=0.50)
    result = estimate(np.ones(100, bool), rates)
    assert np.isnan(result.corrected) and "hardly separates" in result.method
    assert result.call(0.25) == "undecided" and result.classify_and_count == 1.0


def test_each_held_out_instance_is_corrected_with_the_other_instances_rates():
    rng = np.random.default_rng(1)
    parts = []
    for instance, fraction in (("a", 0.1), ("b", 0.4), ("c", 0.7)):
        truth, called, probability = classified(rng, 400, fraction)
        parts.append(pd.DataFrame({
            "instance": instance,
            "label": np.where(truth, "leukemic", "normal"),
            "predicted": np.where(called, "leukemic", "normal"),
            "probability_leukemic": probability,
        }))  # fmt: skip
    predictions = pd.concat(parts, ignore_index=True)
    table = corrected_readout(predictions, "leukemic").set_index("instance")
    others = held_out_rates(predictions[predictions["instance"] != "b"], "leukemic")
    own = predictions[predictions["instance"] == "b"]
    expected = estimate(own["predicted"] == "leukemic", others, own["probability_leukemic"], seed=1)
    assert table.loc["b", "corrected_fraction_leukemic"] == pytest.approx(expected.corrected)
    assert table.loc["b", "corrected_low_leukemic"] == pytest.approx(expected.low)
    assert (table["correction"] == "pacc").all()


def test_intervals_hold_new_patients_whose_error_rates_differ_from_the_pooled_ones():
    """Each patient has rates of its own: the interval must allow for a new one's, not just for
    the uncertainty of the pooled rates (which would cover far less often than it claims)."""
    rng = np.random.default_rng(2)

    def patient(name: str):
        tpr, fpr, fraction = rng.normal(0.85, 0.06), max(0.01, rng.normal(0.10, 0.05)), rng.uniform(0, 0.6)
        truth = rng.random(300) < fraction
        called = np.where(truth, rng.random(300) < tpr, rng.random(300) < fpr)
        return pd.DataFrame({"instance": name, "label": np.where(truth, "leukemic", "normal"),
                             "predicted": np.where(called, "leukemic", "normal")})  # fmt: skip

    inside = 0
    for k in range(100):
        predictions = pd.concat([patient(f"p{i}") for i in range(12)], ignore_index=True)
        table = corrected_readout(predictions, "leukemic", seed=k)
        known = predictions.groupby("instance")["label"].apply(lambda x: (x == "leukemic").mean())
        row = table.set_index("instance").loc["p0"]
        inside += row["corrected_low_leukemic"] <= known["p0"] <= row["corrected_high_leukemic"]
    assert inside >= 90
