"""verdicts.py and power.py: one rule reads every interval against its claim's region, each
claim on inputs with a known answer, and each rule's operating characteristics are pinned by a
simulation (under no effect it contradicts at most 5 %, at a stated n it reproduces the effect at
least 80 %), so a later change cannot quietly make a rule a coin flip again."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from safehil.report import published as pub
from safehil.report import verdicts as v
from safehil.report.power import Band, Power, t_outcomes, t_power, z_power, z_rates
from safehil.report.stats import Interval

ABOVE_0 = Band(0.0, math.inf)
ENOUGH = Power(0.9, 0.02, "test")


# ----------------------------------------------------------------------------- the one rule

def test_an_interval_inside_the_region_reproduces_wholly_outside_contradicts():
    assert v.decide(Interval(0.05, 0.02, 0.08, 3), ABOVE_0, ENOUGH)[0] == v.REPRODUCED
    assert v.decide(Interval(-0.05, -0.08, -0.02, 3), ABOVE_0, ENOUGH)[0] == v.CONTRADICTED
    # holding the null is never a contradiction, whatever a published d from other data says
    assert v.decide(Interval(0.0, -0.02, 0.03, 3), ABOVE_0, ENOUGH)[0] == v.INCONCLUSIVE
    flat = Band(-0.05, math.inf)                                    # "does not fall", margin 5 points
    assert v.decide(Interval(0.0, -0.02, 0.02, 3), flat, ENOUGH)[0] == v.REPRODUCED   # a flat truth
    assert v.decide(Interval(-0.1, -0.12, -0.08, 3), flat, ENOUGH)[0] == v.CONTRADICTED
    assert v.decide(Interval(0.04, math.nan, math.nan, 1), ABOVE_0, ENOUGH)[0] == v.NOT_TESTABLE


def test_a_rule_without_power_at_this_scale_is_not_testable_and_says_what_would_do():
    weak = Power(0.27, 0.02, "test", "about 9 seeds would give power 0.8")
    verdict, why = v.decide(Interval(0.15, 0.02, 0.28, 3), ABOVE_0, weak)
    assert verdict == v.NOT_TESTABLE and "power 0.27" in why and "about 9 seeds" in why
    assert "alone would read reproduced" in why
    table = "\n".join(v.verdict_table([v.Claim("c", "s", "p", "x", verdict, why, "r", power=weak)]))
    assert "**not testable at this scale (power 0.27)**" in table and "| paper |" in table
    row = next(line for line in table.splitlines() if line.startswith("| c |"))
    assert row.count("|") == 9                                      # 8 cells: no '|' inside one


# ----------------------------------------------------------------------------- operating characteristics

def test_a_directional_rule_contradicts_no_effect_at_most_5_percent_and_reaches_power_at_12_seeds():
    no_effect = t_outcomes(ABOVE_0, 0.0, sd=1.0, n=3, sd_df=2)
    assert np.mean(no_effect == -1) <= 0.05 and np.mean(no_effect == 1) <= 0.05
    assert t_power(ABOVE_0, 1.0, 0.0, sd=1.0, n=12, sd_df=0, at="").reproduce >= 0.8   # d = 1 sd, 12 seeds
    weak = t_power(ABOVE_0, 1.0, 0.0, sd=1.0, n=3, sd_df=0, at="")
    assert weak.reproduce < 0.3 and "seeds would give power 0.8" in weak.needed


def test_a_flat_truth_is_reproduced_by_non_inferiority_at_6_seeds():
    flat = Band(-v.EFFORT_MARGIN, math.inf)
    power = t_power(flat, 0.0, 0.0, sd=0.03, n=6, sd_df=0, at="")    # 3-point seed sd, 6 seeds
    assert power.reproduce >= 0.8 and power.contradict <= 0.05
    assert np.mean(t_outcomes(flat, -v.EFFORT_MARGIN, 0.03, 6, 0) == 1) <= 0.05   # a real fall is not passed


def test_the_extra_pass_and_level_rules_reproduce_no_effect_and_refuse_the_margin():
    extra = Band(-math.inf, v.EXTRA_PASS_MARGIN)
    assert t_power(extra, 0.0, 0.0, sd=0.01, n=5, sd_df=0, at="").reproduce >= 0.8
    assert np.mean(t_outcomes(extra, v.EXTRA_PASS_MARGIN, 0.01, 5, 0) == 1) <= 0.05
    m = pub.al_level_margin()
    level = Band(-m, m)
    assert t_power(level, 0.0, 0.0, sd=0.005, n=5, sd_df=0, at="").reproduce >= 0.8
    assert np.mean(t_outcomes(level, m, 0.005, 5, 0) == 1) <= 0.05


def test_the_time_rule_reproduces_the_expected_ratio_and_never_an_unchanged_time():
    low, high = pub.hil_time_tolerance()
    d = 0.6
    band = Band(math.log(d * low), math.log(d * high))
    assert t_power(band, math.log(d), 0.0, sd=0.05, n=3, sd_df=0, at="").reproduce >= 0.8
    assert np.mean(t_outcomes(band, 0.0, 0.05, 3, 0) == 1) <= 0.05       # ratio 1: the time does not fall


def test_closed_form_image_level_power_matches_a_simulation():
    rng = np.random.default_rng(1)
    band = Band(0.5, math.inf)
    for effect in (0.5, 0.55, 0.6):
        est = effect + 0.03 * rng.standard_normal(20000)
        codes = band.outcome(est - 1.96 * 0.03, est + 1.96 * 0.03)
        rep, con = z_rates(band, effect, 0.03)
        assert rep == pytest.approx(np.mean(codes == 1), abs=0.01) and con == pytest.approx(np.mean(codes == -1), abs=0.01)
    assert z_rates(band, 0.5, 0.03)[1] <= 0.05
    weak = z_power(band, 0.55, 0.5, se=0.03, n=300, at="")
    m = int(weak.needed.split()[1].replace(",", ""))
    assert z_rates(band, 0.55, 0.03 * math.sqrt(300 / m))[0] >= 0.8 > z_rates(band, 0.55, 0.03 * math.sqrt(300 / (m - 1)))[0]


def test_saliency_rules_contradict_a_flat_curve_at_most_5_percent_and_find_a_real_peak():
    rng = np.random.default_rng(0)
    flat_contradicted, peak_found = 0, 0
    for _ in range(300):
        flat = 0.5 + 0.3 * rng.standard_normal((80, 5))
        flat_contradicted += v.end_above_every_interior(flat) is not None
        peaked = flat + np.array([0.0, 0.15, pub.saliency_published_rise(), 0.1, 0.0])
        peak_found += bool(np.all(v.lower_bounds(peaked[:, [2]] - peaked[:, [0, -1]], v.SALIENCY_ALPHA) > 0))
    assert flat_contradicted / 300 <= 0.05 and peak_found / 300 >= 0.8      # 80 test images, per-image sd 0.3


def test_safety_with_uninformative_scores_beats_random_referral_at_most_5_percent():
    rng = np.random.default_rng(0)
    n, alpha, delta = 3000, pub.SAFETY_ALPHA, 0.05
    for p in (0.02, 0.1, 0.3):
        errors = rng.binomial(n, p, 20000)
        accepted = rng.geometric(p, 20000) - 1       # uninformative scores: the walk accepts until its first error
        beats = 1 - accepted / n < v.random_referral_rate(errors, n, alpha, delta)
        assert np.mean(beats) <= 0.05, p


def test_safety_power_and_the_smallest_refuting_count_are_binomial():
    assert v.refuting_errors(3000, 0.001) == 7                                  # 7 in 3,000 refute 0.1 %
    assert scipy_stats.beta.ppf(0.05, 7, 3000 - 7 + 1) > 0.001 > scipy_stats.beta.ppf(0.05, 6, 3000 - 6 + 1)
    power = v.safety_power(3000, 3000, 0.001, 0.05)
    assert power.reproduce == pytest.approx(math.exp(-1.5), abs=0.01)           # zero of Binomial(3000, 0.05 %)
    assert power.contradict <= 0.05 and "calibration images would give power 0.8" in power.needed


# ----------------------------------------------------------------------------- claims

def test_augmentation_gain_and_the_extra_pass_against_its_margin():
    plain = [0.60, 0.70, 0.80, 0.65, 0.75, 0.72]
    arms = {"plain": plain, "plain+augmented": [p + 0.10 + e for p, e in zip(plain, (0, .01, -.01, .005, 0, -.005))],
            "plain+plain": [p + 0.04 + e for p, e in zip(plain, (.005, 0, -.005, 0, .002, -.002))]}
    gain, extra = v.augmentation_claims(arms)
    assert gain.verdict == v.REPRODUCED and gain.statistic.startswith("plain+augmented - plain: 10.0")
    assert extra.verdict == v.CONTRADICTED          # the pass alone adds 4 points, beyond the 2-point margin
    assert "share of the gain the pass explains: 40 % [" in extra.statistic and "unbounded" not in extra.statistic
    small = dict(arms, **{"plain+plain": [p + 0.002 * (-1) ** k for k, p in enumerate(plain)]})
    assert v.augmentation_claims(small)[1].verdict == v.REPRODUCED             # no gain from the pass
    no_control = v.augmentation_claims({"plain": plain, "plain+augmented": arms["plain+augmented"]})
    assert no_control[1].verdict == v.NOT_TESTABLE and "Severstal" in gain.source
    assert v.augmentation_shifted_claim(plain, plain).ours and not gain.ours


def test_fieller_ratio_is_unbounded_when_the_denominator_holds_zero():
    est, low, high = v.fieller_ratio([4.0, 4.5, 4.2], [10.0, 10.5, 11.0])
    assert low < est < high and est == pytest.approx(12.7 / 31.5)
    assert math.isnan(v.fieller_ratio([1.0, 2.0, 3.0], [1.0, -1.0, 0.5])[1])


def grid(seed_effect, work_ratio, effort_slope, seconds_load=1.0):
    rows = []
    for i in (5, 10, 20):
        for s in (5, 10):
            rows.append({"initial_samples": i, "step_size": s, "hand_effort": 200, "initial_labelled": 6 * i,
                         "steps": 4 if s == 5 else 2,
                         "correction_effort": 60 + effort_slope * math.log2(i) + seed_effect,
                         "finetune_work": 1000 * work_ratio ** math.log2(s / 5) * (1 + seed_effect / 100),
                         "loop_seconds": seconds_load * 100 * work_ratio ** math.log2(s / 5)})
    return pd.DataFrame(rows)


def test_hil_claims_judge_the_work_done_so_the_machines_load_cannot_flip_them():
    d = pub.hil_time_ratio_per_round() * 0.5                                   # this grid halves its rounds
    grids = {0: grid(0, d, 4), 1: grid(2, d * 1.01, 5), 2: grid(-1, d * 0.99, 3)}
    time, initial, step = v.hil_claims(grids)
    assert time.verdict == v.REPRODUCED and time.statistic.startswith("fine-tuning work ratio per doubling")
    assert time.power.enough and initial.power is not None
    rng = np.random.default_rng(0)
    loaded = {k: grid(e, r, s, seconds_load=float(rng.uniform(0.5, 3))) for k, (e, r, s) in
              enumerate([(0, d, 4), (2, d * 1.01, 5), (-1, d * 0.99, 3)])}
    assert v.verdict_table(v.hil_claims(loaded)) == v.verdict_table(v.hil_claims(grids))
    slow = {k: grid(k, 0.9, 4) for k in range(3)}
    assert v.hil_claims(slow)[0].verdict == v.CONTRADICTED                      # the work hardly falls
    assert "points of the arriving images" in initial.statistic
    one = {0: grid(0, 0.5, 4)}
    assert all(c.verdict == v.NOT_TESTABLE for c in v.hil_claims(one))
    # with the labelled images per round recorded, d follows this grid's work per epoch (a short last round)
    d_work = pub.hil_time_ratio_per_work() * 0.7
    sized = {k: grid(e, r, 4).assign(finetune_images=lambda g: np.where(g["step_size"] == 10, 70.0, 100.0))
             for k, (e, r) in enumerate([(0, d_work), (2, d_work * 1.01), (-1, d_work * 0.99)])}
    by_work = v.hil_claims(sized)[0]
    assert by_work.verdict == v.REPRODUCED and f"per unit of work {pub.hil_time_ratio_per_work():.2f}" in by_work.paper
    old = {k: g.drop(columns="finetune_work") for k, g in grids.items()}
    assert "seconds are not judged" in v.hil_claims(old)[0].why


def mc_frame(rng, n, separation, softmax_separation):
    correct = rng.random(n) < 0.8
    noise = rng.random(n)
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "correct": correct,
                         "predictive_entropy": noise + separation * ~correct,
                         "softmax_entropy": noise + softmax_separation * ~correct})


def test_mc_rows_pair_mc_and_softmax_entropy_and_the_comparison_is_ours():
    rng = np.random.default_rng(0)
    per_seed = {s: mc_frame(rng, 400, 1.0, 0.2) for s in range(3)}
    auroc, diff = v.mc_claims(per_seed, "m")
    assert auroc.verdict == v.REPRODUCED and diff.ours and not auroc.ours
    assert diff.verdict == v.NOT_TESTABLE and "alone would read reproduced" in diff.why   # a 0.02 gain: power 0.19
    same = {s: f.assign(softmax_entropy=f["predictive_entropy"]) for s, f in per_seed.items()}
    assert v.mc_claims(same, "m")[1].verdict == v.INCONCLUSIVE      # identical scores: [0, 0] touches the null
    assert v.auroc(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    from sklearn.metrics import roc_auc_score
    wrong, score = rng.random(300) < 0.3, rng.integers(0, 5, 300).astype(float)   # many ties
    assert v.auroc(wrong, score) == pytest.approx(roc_auc_score(wrong, score))
    no_softmax = {0: per_seed[0].drop(columns="softmax_entropy")}
    assert v.mc_claims(no_softmax, "m")[1].verdict == v.NOT_TESTABLE


def saliency_rows(curve, n=160, random_accuracy=0.9):
    shares = [5.0, 15.0, 25.0, 35.0, 55.0, 95.0]
    rng = np.random.default_rng(3)
    rows = [{"index": i, "order": "saliency", "share": s, "label": i % 6, "correct": True,
             "predictive_entropy": c + 0.1 * rng.standard_normal()} for i in range(n) for s, c in zip(shares, curve)]
    rows += [{"index": i, "order": "full_image", "share": 100.0, "label": i % 6, "correct": True,
              "predictive_entropy": 0.1} for i in range(n)]
    rows += [{"index": i, "order": "random", "share": s, "label": i % 6, "correct": rng.random() < random_accuracy,
              "predictive_entropy": 0.5} for i in range(n) for s in shares]
    return pd.DataFrame(rows)


def test_saliency_peak_is_tested_against_each_end_and_an_end_peak_is_no_interior_peak():
    claim = v.saliency_claim(saliency_rows([0.3, 0.45, 0.56, 0.52, 0.4, 0.2]))
    assert claim.verdict == v.REPRODUCED and "peak chosen at 25 %" in claim.statistic
    u_shaped = v.saliency_claim(saliency_rows([0.6, 0.5, 0.45, 0.5, 0.55, 0.58]))
    assert u_shaped.verdict == v.CONTRADICTED and "the 5 % end lies above every interior share" in u_shaped.why
    end_peak = v.saliency_claim(saliency_rows([0.61, 0.45, 0.6, 0.45, 0.45, 0.2]))
    assert end_peak.verdict == v.INCONCLUSIVE and "no interior peak found" in end_peak.why
    ood = v.saliency_claim(saliency_rows([0.3, 0.45, 0.56, 0.52, 0.4, 0.2], random_accuracy=0.3))
    assert ood.verdict == v.NOT_TESTABLE and "out of distribution" in ood.why
    assert v.saliency_claim(saliency_rows([0.3, 0.45, 0.56, 0.52, 0.4, 0.2]), fill=0.5).ours
    assert v.saliency_claim(pd.DataFrame()).verdict == v.NOT_TESTABLE


def al_rounds(gaps, seeds=8):
    rows = []
    for seed in range(seeds):
        base = 0.6 + 0.02 * seed
        for r, n in enumerate([10, 20]):
            rows.append({"strategy": "random", "seed": seed, "round": r, "labelled": n, "share": n / 100,
                         "test_accuracy": base + r / 10})
            for name, gap in gaps.items():
                rows.append({"strategy": name, "seed": seed, "round": r, "labelled": n, "share": n / 100,
                             "test_accuracy": base + r / 10 + gap * r + 0.001 * (seed % 3 - 1)})
    return pd.DataFrame(rows)


def test_each_strategy_is_judged_against_random_the_toolkits_gap_only_sizing_the_power():
    rounds = al_rounds({"bald": 0.03, "vaal": 0.0, "ensemble_variation_ratio": 0.05, "entropy": 0.0})
    claims, diffs = v.al_claims(rounds, ("random", "bald", "vaal", "ensemble_variation_ratio", "entropy", "coreset"))
    verdict = {c.claim.split(": ")[1].split(" ")[0]: c.verdict for c in claims}
    assert verdict == {"bald": v.REPRODUCED, "vaal": v.REPRODUCED, "ensemble_variation_ratio": v.CONTRADICTED,
                       "entropy": v.INCONCLUSIVE, "coreset": v.NOT_TESTABLE}    # holding 0 is not a contradiction
    assert "level with random" in claims[1].claim and len(diffs) == 8
    table = "\n".join(v.strategy_table(diffs))
    assert "toolkit, CIFAR-10 at 60 %" in table and f"{100 * pub.al_gap('bald'):.2f}" in table


def safety_inputs(calib_n, test_k, certified=True, referral=0.3, seen=False, single=0.5, automatic_errors=300):
    def split(n, k):
        return {"cascade": {"n": n, "undetected": k, "undetected_rate": k / n, "undetected_upper": 0.0,
                            "referral_rate": referral},
                "model_a_alone": {"n": n, "errors": automatic_errors}}
    modes = {m: {"certified": True, "referral_rate": single} for m in v.SINGLE_MECHANISMS}
    thresholds = {"calib_split": "valid", "modes": modes,
                  "calibration": {"certified": certified, "delta": 0.05, "calib_used_in_training": seen}}
    return {"target": 0.001, "splits": {"valid": split(calib_n, 0), "test": split(3000, test_k)}}, thresholds


def test_safety_reproduced_needs_the_certificate_a_workload_beating_random_and_each_mechanism_and_power():
    big = 40000                                          # power >= 0.8 at half the target needs ~22,000 images
    assert v.safety_claim(*safety_inputs(big, 1)).verdict == v.REPRODUCED
    assert "7 test error(s) would refute it" in v.safety_claim(*safety_inputs(3000, 1)).statistic
    refuted = v.safety_claim(*safety_inputs(big, 12))
    assert refuted.verdict == v.CONTRADICTED and "12/3000" in refuted.statistic
    worse_than_one = v.safety_claim(*safety_inputs(big, 0, single=0.2))
    assert worse_than_one.verdict == v.INCONCLUSIVE and "uncertainty_a" in worse_than_one.why
    uninformative = v.safety_claim(*safety_inputs(big, 0, referral=0.999))
    assert uninformative.verdict == v.INCONCLUSIVE and "referring at random" in uninformative.why
    assert v.safety_claim(*safety_inputs(3000, 1)).verdict == v.NOT_TESTABLE       # power 0.22 at 3,000
    assert v.safety_claim(*safety_inputs(360, 0)).verdict == v.NOT_TESTABLE
    assert v.safety_claim(*safety_inputs(big, 0, referral=1.0)).verdict == v.INCONCLUSIVE
    assert v.safety_claim(*safety_inputs(big, 0, seen=True)).verdict == v.INCONCLUSIVE
    assert "one-sided 95 % bounds" in v.safety_claim(*safety_inputs(big, 1)).statistic


@pytest.mark.parametrize("fn", [pub.hil_time_ratio_per_step_doubling])
def test_published_effects_are_derived_from_the_tables(fn):
    assert fn("efficientnet_b0") == pytest.approx(0.50, abs=0.005)
    assert fn("resnet18") == pytest.approx(0.48, abs=0.005)
    assert pub.augmentation_gain() == pytest.approx(np.mean([0.088, 0.077, 0.129, 0.091]), abs=1e-9)
    assert pub.hil_time_ratio_range() == pytest.approx((1237 / 3081, 1442 / 2397))
    assert pub.hil_round_sizes(5, 10) == list(range(15, 195, 10)) + [195]          # 19 rounds, the last capped
    assert pub.hil_time_ratio_per_work() == pytest.approx(0.93, abs=0.005)
