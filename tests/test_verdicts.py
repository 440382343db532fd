"""verdicts.py: each claim's verdict follows its stated rule on results with a known answer."""
import numpy as np
import pandas as pd

import verdicts as v


def test_augmentation_verdict_follows_the_sign_of_the_paired_interval():
    assert v.augmentation_helps([0.50, 0.60, 0.70], [0.55, 0.66, 0.74]).verdict == v.REPRODUCED
    assert v.augmentation_helps([0.55, 0.66, 0.74], [0.50, 0.60, 0.70]).verdict == v.NOT_REPRODUCED
    assert v.augmentation_helps([0.5], [0.6]).verdict == v.NOT_TESTABLE


def test_hil_claims_use_doublings_of_the_initial_set_and_of_the_step():
    grid = pd.DataFrame([{"initial_samples": i, "step_size": s, "total_effort": 100 - 2 * i + s / 10 + (s == 10),
                          "seconds": 200 / s + i / 100} for i in (5, 10, 20) for s in (5, 10)])
    effort = v.hil_effort_falls(grid)
    assert effort.verdict == v.REPRODUCED and effort.statistic.startswith("effort change per doubling: -15.0")
    time = v.hil_time_halves(grid)
    assert time.verdict == v.REPRODUCED and time.statistic.startswith("time ratio per doubling: 0.5")


def test_mc_auroc_verdict_and_a_model_without_errors_is_not_testable():
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.8
    entropy = np.where(correct, rng.gamma(1, 0.1, 400), rng.gamma(4, 0.2, 400))
    frame = pd.DataFrame({"correct": correct, "predictive_entropy": entropy})
    assert v.mc_dropout_separates(frame, "m").verdict == v.REPRODUCED
    frame["predictive_entropy"] = rng.random(400)                 # entropy says nothing about errors
    assert v.mc_dropout_separates(frame, "m").verdict == v.NOT_REPRODUCED
    frame["correct"] = True
    assert v.mc_dropout_separates(frame, "m").verdict == v.NOT_TESTABLE


def test_saliency_peak_bootstrap_over_images():
    shares = [5.0, 15.0, 25.0, 35.0, 55.0]
    bump = {5.0: 0.5, 15.0: 0.8, 25.0: 1.2, 35.0: 0.9, 55.0: 0.3}
    rows = [{"index": i, "order": "saliency", "share": s, "predictive_entropy": bump[s] + 0.05 * np.sin(i * s)}
            for i in range(60) for s in shares]
    claim = v.saliency_entropy_peak(pd.DataFrame(rows), {"saliency": 35.0, "random": None})
    assert claim.verdict == v.REPRODUCED and claim.statistic.startswith("peak at 25 % [25, 25]")
    assert "random never" in claim.statistic
    early = [dict(r, predictive_entropy=2.0 if r["share"] == 5.0 else r["predictive_entropy"]) for r in rows]
    assert v.saliency_entropy_peak(pd.DataFrame(early), {}).verdict == v.NOT_REPRODUCED


def test_strategies_are_paired_with_random_by_seed():
    rows = []
    for seed, base in enumerate([0.60, 0.70, 0.80]):     # a large seed effect, a steady +3 points for bald
        for r, n in enumerate([10, 20]):
            rows += [{"strategy": "random", "seed": seed, "round": r, "labelled": n, "share": n / 100,
                      "test_accuracy": base + r / 10},
                     {"strategy": "bald", "seed": seed, "round": r, "labelled": n, "share": n / 100,
                      "test_accuracy": base + r / 10 + 0.03 * r + 0.001 * seed}]
    claim, diffs = v.strategies_beat_random(pd.DataFrame(rows))
    assert claim.verdict == v.REPRODUCED and "bald +3.1" in claim.statistic
    assert len(diffs) == 2 and diffs.loc[diffs["round"] == 0, "estimate"].abs().max() < 0.01
    assert "| bald |" in "\n".join(v.strategy_table(diffs))


def test_cascade_needs_thousands_of_images_a_certificate_and_a_test_bound():
    def split(n, undetected, upper, referral=0.3):
        return {"cascade": {"n": n, "undetected": undetected, "undetected_rate": undetected / n,
                            "undetected_upper": upper, "referral_rate": referral}}
    thresholds = {"calib_split": "valid", "calibration": {"certified": True, "delta": 0.05, "n": 3000}}
    good = {"target": 0.001, "splits": {"valid": split(3000, 0, 0.000998), "test": split(3000, 0, 0.000998)}}
    assert v.cascade_undetected(good, thresholds).verdict == v.REPRODUCED
    leaky = {"target": 0.001, "splits": {"valid": split(3000, 0, 0.000998), "test": split(3000, 2, 0.0021)}}
    assert v.cascade_undetected(leaky, thresholds).verdict == v.NOT_REPRODUCED
    small = {"target": 0.001, "splits": {"valid": split(360, 0, 0.008), "test": split(360, 0, 0.008)}}
    assert v.cascade_undetected(small, thresholds).verdict == v.NOT_TESTABLE
    table = "\n".join(v.verdict_table([v.cascade_undetected(good, thresholds)]))
    assert "| **reproduced** |" in table and "Verdict rules" in table
