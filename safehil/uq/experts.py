"""The experts' uncertainty against the model's, on ELPV (elpv.py): every scored cell carries the
defect probability the experts gave it (0, 1/3, 2/3, 1). Pure tables from per-image results:
`join_expert_levels` puts the model's scores (get_mc_scores.py's per_image.csv), the cascade's
referrals (evaluate_safety.py's per_image.csv) and the experts' levels side by side;
`expert_uncertainty_table` gives per level the mean MC entropy, the mean softmax entropy (dropout
off), the share called defective and the referral rate. Only cells no model trained, stopped or
calibrated on enter: the clear cells of the test split and the unsure cells of `ambiguous`.
"""
from __future__ import annotations

import pandas as pd

from safehil.data.elpv import AMBIGUOUS_SPLIT, EXPERT_LEVELS

SCORED_SPLITS = ("test", AMBIGUOUS_SPLIT)


def join_expert_levels(mc: pd.DataFrame, levels: pd.DataFrame, referred: pd.DataFrame | None = None) -> pd.DataFrame:
    """mc: split, path, label, prediction, predictive_entropy, softmax_entropy per image; levels: path,
    expert_p, cell_type (elpv.read_elpv_labels); referred: split, path, referred (the cascade's), or
    None -> one row per image of SCORED_SPLITS: split, path, label, expert_p, cell_type, prediction,
    predictive_entropy, softmax_entropy[, referred], ambiguous (expert_p 1/3 or 2/3)."""
    rows = mc[mc["split"].isin(SCORED_SPLITS)].merge(levels[["path", "expert_p", "cell_type"]], on="path",
                                                     how="inner", validate="many_to_one")
    if referred is not None:
        rows = rows.merge(referred[["split", "path", "referred"]], on=["split", "path"], how="left")
    rows["ambiguous"] = rows["expert_p"].isin(("1/3", "2/3"))
    return rows.reset_index(drop=True)


def expert_uncertainty_table(rows: pd.DataFrame, defective: str = "defective") -> pd.DataFrame:
    """`join_expert_levels` rows -> one row per expert level (EXPERT_LEVELS order, levels without
    images left out): n, mean MC entropy, mean softmax entropy (nats), share predicted `defective`,
    referral rate (NaN without the cascade's referrals)."""
    out = []
    for level in EXPERT_LEVELS:
        part = rows[rows["expert_p"] == level]
        if part.empty:
            continue
        out.append({"expert_p": level, "n": len(part),
                    "mc_entropy": float(part["predictive_entropy"].mean()),
                    "softmax_entropy": float(part["softmax_entropy"].mean()),
                    "called_defective": float((part["prediction"] == defective).mean()),
                    "referral_rate": float(part["referred"].astype(float).mean()) if "referred" in part
                    else float("nan")})
    return pd.DataFrame(out)


def _auroc(score, positive) -> float:
    """AUROC of `score` for telling positive from negative rows, ties half (NaN with one class only)."""
    from safehil.uq.uncertainty import score_auroc
    return float(score_auroc(score.to_numpy(float), positive.to_numpy(bool)))


def model_summary(rows: pd.DataFrame) -> dict:
    """One model's numbers from `join_expert_levels` rows (with get_mc_scores' `label`): on the clear test cells the accuracy beside the majority baseline
    (always answering the most frequent class), the recall per class, and the AUROC (wrong vs right)
    of MC and softmax entropy; on all scored cells the AUROC (unsure vs clear) of both entropies."""
    test = rows[rows["split"] == "test"]
    truth = test["label"]
    correct = test["prediction"] == truth
    counts = truth.value_counts()
    recall = {str(c): float(correct[truth == c].mean()) for c in sorted(counts.index)}
    return {"n_test": int(len(test)), "accuracy": float(correct.mean()),
            "majority_class": str(counts.idxmax()), "majority_baseline": float(counts.max() / len(test)),
            "recall": recall,
            "auroc_wrong_mc": _auroc(test["predictive_entropy"], ~correct),
            "auroc_wrong_softmax": _auroc(test["softmax_entropy"], ~correct),
            "n_unsure": int(rows["ambiguous"].sum()),
            "auroc_unsure_mc": _auroc(rows["predictive_entropy"], rows["ambiguous"]),
            "auroc_unsure_softmax": _auroc(rows["softmax_entropy"], rows["ambiguous"])}
