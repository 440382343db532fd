"""verdicts.py: the four outcomes follow their rules on constructed results, each claim on inputs
with a known answer, and inconclusive rows say how many units would decide them."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from safehil.report import published as pub
from safehil.report import verdicts as v
from safehil.report.stats import Interval, t_interval, units_to_decide


# ----------------------------------------------------------------------------- the outcomes

def test_judge_gives_each_outcome_against_the_published_effect():
    d = 0.09
    assert v.judge(Interval(0.05, 0.02, 0.08, 3), d)[0] == v.REPRODUCED          # above 0
    assert v.judge(Interval(-0.05, -0.08, -0.02, 3), d)[0] == v.CONTRADICTED     # the other side of 0
    assert v.judge(Interval(0.0, -0.02, 0.03, 3), d)[0] == v.CONTRADICTED        # holds 0, excludes d
    verdict, why = v.judge(Interval(0.04, -0.20, 0.28, 3), d)                     # holds both
    assert verdict == v.INCONCLUSIVE and "seeds would decide it" in why
    assert v.judge(Interval(0.04, math.nan, math.nan, 1), d)[0] == v.NOT_TESTABLE
    # below the null is the paper's side when side = -1; a comparable d excluded there contradicts
    assert v.judge(Interval(-0.7, -0.8, -0.6, 3), math.log(0.49), side=-1)[0] == v.REPRODUCED
    assert v.judge(Interval(-0.2, -0.3, -0.1, 3), math.log(0.49), side=-1, comparable=True)[0] == v.CONTRADICTED
    assert v.judge(Interval(-0.7, -0.8, -0.6, 3), math.log(0.49), side=-1, comparable=True)[0] == v.REPRODUCED
    # without a published size, holding the null is inconclusive, never contradicted
    assert v.judge(Interval(0.51, 0.45, 0.58, 300), math.nan, null=0.5, kind="bootstrap")[0] == v.INCONCLUSIVE


def test_level_claims_are_reproduced_inside_the_margin_and_contradicted_by_a_gap():
    assert v.judge_level(Interval(0.001, -0.004, 0.006, 3), 0.015)[0] == v.REPRODUCED
    assert v.judge_level(Interval(0.03, 0.01, 0.05, 3), 0.015)[0] == v.CONTRADICTED
    verdict, why = v.judge_level(Interval(0.0, -0.04, 0.04, 3), 0.015)
    assert verdict == v.INCONCLUSIVE and "would decide" in why


def test_units_to_decide_shrink_a_t_interval_to_the_distance():
    iv = t_interval([0.0, 0.1, 0.2])                  # sd 0.1, n 3
    m = units_to_decide(iv, 0.05, "t")
    half = lambda k: scipy_stats.t.ppf(0.975, k - 1) * 0.1 / math.sqrt(k)
    assert half(m) < 0.05 <= half(m - 1)
    assert units_to_decide(Interval(0.1, 0.0, 0.2, 100), 0.05, "bootstrap") == 400
    assert units_to_decide(iv, 0.0, "t") is None


# ----------------------------------------------------------------------------- claims

def test_augmentation_gain_and_the_share_the_extra_pass_explains():
    plain = [0.60, 0.70, 0.80]
    arms = {"plain": plain, "plain+augmented": [p + 0.10 + e for p, e in zip(plain, (0, .01, -.01))],
            "plain+plain": [p + 0.04 + e for p, e in zip(plain, (.005, 0, -.005))]}
    gain, beyond = v.augmentation_claims(arms)
    assert gain.verdict == v.REPRODUCED and gain.statistic.startswith("plain+augmented - plain: 10.0")
    assert beyond.verdict == v.REPRODUCED and "= 40 % of the gain" in beyond.statistic
    no_control = v.augmentation_claims({"plain": plain, "plain+augmented": arms["plain+augmented"]})
    assert no_control[1].verdict == v.NOT_TESTABLE and "Severstal" in gain.source
    assert v.augmentation_shifted_claim(plain, plain).ours


def grid(seed_effect, time_ratio, effort_slope):
    rows = []
    for i in (5, 10, 20):
        for s in (5, 10):
            rows.append({"initial_samples": i, "step_size": s, "hand_effort": 200, "initial_labelled": 6 * i,
                         "steps": math.ceil((40 - i) / s),
                         "correction_effort": 60 + effort_slope * math.log2(i) + seed_effect,
                         "loop_seconds": 100 * time_ratio ** math.log2(s / 5) * (1 + seed_effect / 100)})
    return pd.DataFrame(rows)


def slow_why(grids):
    slow = {k: grid(k, 0.9, 4) for k in range(3)}
    return v.hil_claims(slow)[0].why


def test_hil_claims_take_the_seed_as_the_unit():
    grids = {0: grid(0, 0.50, 4), 1: grid(2, 0.47, 5), 2: grid(-1, 0.52, 3)}
    time, initial, step = v.hil_claims(grids)
    assert time.verdict == v.REPRODUCED and time.statistic.startswith("loop-time ratio per doubling of the step: 0.50")
    assert "3 seed(s)" in time.statistic
    assert initial.verdict == v.REPRODUCED      # rising, as a share of the arriving images
    assert "excludes the published a time ratio 0.50" in slow_why(grids)   # 0.96 per round x this grid's rounds
    assert step.verdict == v.CONTRADICTED       # exactly flat: holds 0, excludes the paper's +0.3 %
    slow = {k: grid(k, 0.9, 4) for k in range(3)}
    assert v.hil_claims(slow)[0].verdict == v.CONTRADICTED  # falls but does not halve
    flat = {k: grid(k, 0.5, 0).assign(initial_labelled=0) for k in range(3)}   # arriving count fixed
    assert v.hil_claims(flat)[1].verdict == v.CONTRADICTED                    # flat excludes the paper's rise
    one = {0: grid(0, 0.5, 4)}
    assert all(c.verdict == v.NOT_TESTABLE for c in v.hil_claims(one))


def mc_frame(rng, n, separation, softmax_separation):
    correct = rng.random(n) < 0.8
    noise = rng.random(n)
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "correct": correct,
                         "predictive_entropy": noise + separation * ~correct,
                         "softmax_entropy": noise + softmax_separation * ~correct})


def test_mc_claims_pair_mc_and_softmax_entropy_over_images_and_seeds():
    rng = np.random.default_rng(0)
    per_seed = {s: mc_frame(rng, 400, 1.0, 0.2) for s in range(3)}
    auroc, diff = v.mc_claims(per_seed, "m")
    assert auroc.verdict == v.REPRODUCED and diff.verdict == v.REPRODUCED
    same = {s: f.assign(softmax_entropy=f["predictive_entropy"]) for s, f in per_seed.items()}
    assert v.mc_claims(same, "m")[1].verdict == v.INCONCLUSIVE      # identical scores: difference 0
    assert v.auroc(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    from sklearn.metrics import roc_auc_score
    wrong, score = rng.random(300) < 0.3, rng.integers(0, 5, 300).astype(float)   # many ties
    assert v.auroc(wrong, score) == pytest.approx(roc_auc_score(wrong, score))
    no_softmax = {0: per_seed[0].drop(columns="softmax_entropy")}
    assert v.mc_claims(no_softmax, "m")[1].verdict == v.NOT_TESTABLE


def saliency_rows(curve, n=80):
    shares = [5.0, 15.0, 25.0, 35.0, 55.0, 95.0]
    return pd.DataFrame([{"index": i, "order": "saliency", "share": s,
                          "predictive_entropy": c + 0.05 * np.sin(7 * i + s)} for i in range(n)
                         for s, c in zip(shares, curve)])


def test_saliency_shape_needs_an_interior_peak_above_both_ends():
    claim = v.saliency_claim(saliency_rows([0.3, 0.45, 0.56, 0.52, 0.4, 0.2]))
    assert claim.verdict == v.REPRODUCED and "at 25 %" in claim.statistic
    falling = v.saliency_claim(saliency_rows([0.6, 0.5, 0.4, 0.3, 0.2, 0.1]))
    assert falling.verdict == v.CONTRADICTED and "no interior peak" in falling.why
    assert v.saliency_claim(pd.DataFrame()).verdict == v.NOT_TESTABLE


def al_rounds(gaps):
    rows = []
    for seed, base in enumerate([0.60, 0.70, 0.80]):
        for r, n in enumerate([10, 20]):
            rows.append({"strategy": "random", "seed": seed, "round": r, "labelled": n, "share": n / 100,
                         "test_accuracy": base + r / 10})
            for name, gap in gaps.items():
                rows.append({"strategy": name, "seed": seed, "round": r, "labelled": n, "share": n / 100,
                             "test_accuracy": base + r / 10 + gap * r + 0.001 * (seed - 1)})
    return pd.DataFrame(rows)


def test_each_strategy_is_judged_against_the_toolkits_own_gap():
    rounds = al_rounds({"bald": 0.03, "vaal": 0.0, "ensemble_variation_ratio": 0.05})
    claims, diffs = v.al_claims(rounds, ("random", "bald", "vaal", "ensemble_variation_ratio", "coreset"))
    verdict = {c.claim.split(": ")[1].split(" ")[0]: c.verdict for c in claims}
    assert verdict == {"bald": v.REPRODUCED, "vaal": v.REPRODUCED, "ensemble_variation_ratio": v.CONTRADICTED,
                       "coreset": v.NOT_TESTABLE}
    assert "level with random" in claims[1].claim and len(diffs) == 6
    table = "\n".join(v.strategy_table(diffs))
    assert "toolkit, CIFAR-10 at 60 %" in table and f"{100 * pub.al_gap('bald'):.2f}" in table


def safety_inputs(calib_n, test_k, certified=True, referral=0.3, seen=False):
    def split(n, k):
        return {"cascade": {"n": n, "undetected": k, "undetected_rate": k / n, "undetected_upper": 0.0,
                            "referral_rate": referral}}
    thresholds = {"calib_split": "valid", "calibration": {"certified": certified, "delta": 0.05,
                                                          "calib_used_in_training": seen}}
    return {"target": 0.001, "splits": {"valid": split(calib_n, 0), "test": split(3000, test_k)}}, thresholds


def test_safety_verdict_is_the_certificate_and_the_test_split_can_only_refute_it():
    assert v.safety_claim(*safety_inputs(3000, 1)).verdict == v.REPRODUCED     # one test error does not refute
    refuted = v.safety_claim(*safety_inputs(3000, 12))
    assert refuted.verdict == v.CONTRADICTED and "12/3000" in refuted.statistic
    assert v.safety_claim(*safety_inputs(360, 0)).verdict == v.NOT_TESTABLE
    assert v.safety_claim(*safety_inputs(3000, 0, referral=1.0)).verdict == v.INCONCLUSIVE
    assert v.safety_claim(*safety_inputs(3000, 0, seen=True)).verdict == v.INCONCLUSIVE
    table = "\n".join(v.verdict_table([v.safety_claim(*safety_inputs(3000, 1))]))
    assert "| **reproduced** |" in table and "Rules:" in table


@pytest.mark.parametrize("fn", [pub.hil_time_ratio_per_step_doubling])
def test_published_effects_are_derived_from_the_tables(fn):
    assert fn("efficientnet_b0") == pytest.approx(0.50, abs=0.005)
    assert fn("resnet18") == pytest.approx(0.48, abs=0.005)
    assert pub.augmentation_gain() == pytest.approx(np.mean([0.088, 0.077, 0.129, 0.091]), abs=1e-9)
