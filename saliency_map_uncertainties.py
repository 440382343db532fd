"""The XAI experiment of the papers: reveal only a share of each image's pixels, ordered by
saliency, and watch MC-dropout uncertainty and accuracy change with the share.

The papers' own networks and images: R4VR NEU ran VGG16 (here model B of the NEU pair) on its
own training half (`--split train --train_half first`, 828 images); R4VR Severstal ran
EfficientNet-B0 and ResNet18 on the test split. Both took the gradient with dropout on
(`--gradient_dropout True`). `reproduce.py --full True` runs those; the default is model A's
test split.

    python saliency_map_uncertainties.py --checkpoint results/train/resnet18_synthetic_plain_s0/best.pt
    python saliency_map_uncertainties.py --checkpoint CKPT --method gradcam
    python saliency_map_uncertainties.py --checkpoint CKPT --max_images 300 --T 20     # CPU-sized
    python plot_results.py results/ --only saliency_curves,saliency_examples

For every image of the split: a saliency map of the full image (--method gradient: |d logit /
d pixel|, max over channels; gradcam: Grad-CAM on the last conv block) for the predicted
class (one map per image for every share: the published loop took a new one, with a new
dropout mask, per share); then for each share (the paper's 5, 15, ..., 95 %) and each reveal order
(saliency = most salient pixels first, random, least_salient) the image with only those
pixels kept, every other pixel set to --fill in normalised space (the paper: 0, the mean
grey), is scored with MC dropout (fast path: trunk once, head T times). The revealed sets
are nested as the share grows (one rank order per image and reveal order). The data is
what the checkpoint was trained on unless --dataset/--data_dir/--split_csv say otherwise.

Writes results/saliency/<run>/ (run = the checkpoint's run folder + _<method>):
  config.json      the resolved configuration
  curves.csv       per order and share: n, accuracy, mean predictive entropy (nats) overall,
                   of correct and of wrong predictions, n_wrong; order 'full_image' = share 100
  per_image.csv    every image x order x share: label, prediction, correct, predictive entropy
  summary.json     the curves, the full-image reference, per order the smallest share that
                   reaches the full-image accuracy and the share where entropy peaks
  examples.png     correct and wrong test images with their saliency overlay and the pixels
                   each order reveals at --example_share (also examples.npz, its data)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

import plot_results
from safehil.uq import saliency
from safehil.uq import uncertainty
from safehil.data.augment import to_model_input
from safehil.settings.config import MAX_IMAGES, CheckpointRun, RunConfig, trained_split_seed
from safehil.settings.run_folders import open_checkpoint_run, run_folder
from datasets import ImageSet, checkpoint_canvas, load_image_sets, load_split_table
from safehil.data.splits import train_part
from safehil.settings.presets import paper_default
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_json, flag, fmt_num, log, mean_or_nan,
                   parse_config, progress_enabled, require, run_main)



@dataclass(frozen=True)
class Config(RunConfig, CheckpointRun):
    """saliency_map_uncertainties.py's flags: its own below, then (config.py) RunConfig's `run` flags and
    CheckpointRun's `checkpoint` and `data` flags (checkpoint, T; the data empty = the checkpoint's)."""
    method: str = flag("gradient", "saliency map: gradient (vanilla gradient) or gradcam (Grad-CAM, last conv block)",
                       choices=saliency.METHODS)
    shares: tuple[float, ...] = flag(help="comma list of revealed shares in percent (the paper's 5, 15, ..., 95)",
                                     **paper_default("saliency.shares"))
    orders: tuple[str, ...] = flag(saliency.ORDERS, f"comma list of reveal orders from {', '.join(saliency.ORDERS)}")
    fill: float = flag(0.0, "value of the hidden pixels in normalised space (the paper: 0 = the mean grey)")
    split: str = flag("test", "which split to reveal (R4VR Severstal: test; R4VR NEU: train with --train_half, VGG16's "
                              "own training half)")
    train_half: str = flag("none", "with --split train: only this half of it (first | second, per class in file order, "
                                   "as train_model --train_half cuts it: a pair model's own training images)",
                           choices=("none", "first", "second"))
    gradient_dropout: bool = flag(help="take the saliency gradient with the dropout layers on (batch norm on running "
                                       "statistics), as both R4VR scripts do; False = eval mode",
                                  **paper_default("sal_dropout"))
    max_images: int = flag(0, "score a seeded random subset of this many images of the split; 0 = all",
                           most=MAX_IMAGES)
    reach_tolerance: float = flag(0.01, "a share 'reaches' the full-image accuracy when its accuracy is at least "
                                        "that minus this")
    example_share: float = flag(25.0, "share in percent shown in the example grid (the paper's entropy peaks near "
                                      "25 %%)")
    n_examples: int = flag(8, "example images in the grid: half correct, half wrong (fewer when there are not enough)",
                           most=100)
    seed: int = flag(0, "seed of the image subset, the random order and the dropout masks", most=MAX_SEED)
    # this script's defaults of inherited flags
    batch_size: int = flag(32, "images per batch (saliency and MC dropout)")
    out_dir: str = flag("results/saliency", "parent folder of run folders")
    FLAG_HELP = {"run_name": "run folder name; empty = the checkpoint's run folder + _<method>"}

    def __post_init__(self):
        super().__post_init__()
        require(len(self.shares) > 0 and all(0 < s <= 100 for s in self.shares),
                f"--shares must be percentages in (0, 100], got {self.shares}")
        require(len(set(self.shares)) == len(self.shares), f"--shares lists a share twice: {self.shares}")
        require(len(self.orders) > 0 and all(o in saliency.ORDERS for o in self.orders),
                f"--orders must come from {saliency.ORDERS}, got {self.orders}")
        require(len(set(self.orders)) == len(self.orders), f"--orders lists an order twice: {self.orders}")
        require(math.isfinite(self.fill), f"--fill must be a finite number, got {self.fill}")
        require(self.max_images >= 0, f"--max_images must be >= 0, got {self.max_images}")
        require(0 <= self.reach_tolerance < 1, f"--reach_tolerance must be in [0, 1), got {self.reach_tolerance}")
        require(0 < self.example_share <= 100, f"--example_share must be in (0, 100], got {self.example_share}")
        require(self.n_examples >= 0, f"--n_examples must be >= 0, got {self.n_examples}")
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        require(self.train_half == "none" or self.split == "train",
                f"--train_half {self.train_half} needs --split train, got --split {self.split}")


def run_dir(cfg: Config) -> Path:
    return run_folder(cfg, f"{Path(cfg.checkpoint).resolve().parent.name}_{cfg.method}")


def load_split(cfg: Config, meta: dict) -> ImageSet:
    """Decode the split to reveal at the checkpoint's image size (a seeded subset of
    --max_images images, in data order, when asked)."""
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, trained_split_seed(meta), cfg.per_class,
                                   cfg.multi_label_rule)
    found = sorted(set(table["split"]))
    if cfg.split not in found:
        raise InputError(f"split {cfg.split!r} is not in the data (found {found})")
    table = table[table["split"] == cfg.split]
    if cfg.train_half != "none":  # the half train_model --train_half trains on (per class, file order)
        codes = torch.as_tensor(pd.factorize(table["label"])[0])
        table = table.iloc[train_part(codes, cfg.train_half)]
    if cfg.max_images and cfg.max_images < len(table):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(table))[:cfg.max_images])
        table = table.iloc[keep]
    unknown = sorted(set(table["label"]) - set(meta["class_names"]))
    if unknown:
        raise InputError(f"labels {unknown} of the data are not classes of {cfg.checkpoint} "
                         f"({meta['class_names']})")
    return load_image_sets(table, root, int(meta["image_size"]), list(meta["class_names"]),
                           geometry=checkpoint_canvas(meta))[cfg.split]


def score_batch(model, x: torch.Tensor, T: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MC dropout (fast path) on one batch [B, 3, H, W] -> (prediction [B], predictive entropy [B]) on CPU."""
    probs = uncertainty.mc_dropout_probs(model, x, T, generator).cpu()  # [T, B, C]
    return probs.mean(0).argmax(1), uncertainty.predictive_entropy(probs)


class ExamplePicker:
    """Picks up to n // 2 correct and n - n // 2 wrong full-image predictions, spread over the
    true classes (round robin in class order, the first images of each class in data order),
    with what the grid shows: uint8 image, saliency map and the mask each order reveals."""

    def __init__(self, n: int):
        self.quota = {True: n // 2, False: n - n // 2}
        self.candidates: dict[tuple[bool, int], list[dict]] = {}  # (correct, label) -> rows

    def offer(self, index: int, image: torch.Tensor, label: int, prediction: int, entropy: float,
              saliency_map: torch.Tensor, masks: dict[str, torch.Tensor]) -> None:
        correct = bool(label == prediction)
        rows = self.candidates.setdefault((correct, label), [])
        if len(rows) >= self.quota[correct]:
            return
        rows.append({"index": index, "image": image.numpy(), "label": label, "prediction": prediction,
                     "entropy": entropy, "saliency": saliency_map.float().cpu().numpy(),
                     "masks": {k: v.cpu().numpy() for k, v in masks.items()}})

    def chosen(self) -> list[dict]:
        """The picked rows: correct ones first, each group round robin over the classes."""
        picked = []
        for correct in (True, False):
            groups = [rows for key, rows in sorted(self.candidates.items()) if key[0] == correct]
            group = []
            for i in range(self.quota[correct]):
                group += [rows[i] for rows in groups if i < len(rows)]
            picked += group[:self.quota[correct]]
        return picked

    def save(self, path: Path, data: ImageSet, orders: tuple[str, ...], share: float, fill_pixel: float) -> bool:
        """Write examples.npz (correct ones first); fill_pixel: the hidden pixels' value in [0, 1]
        (the fill mapped back through the normalisation). False when there is nothing to show."""
        rows = self.chosen()
        if not rows:
            return False
        arrays = {
            "images": np.stack([r["image"] for r in rows]), "saliency": np.stack([r["saliency"] for r in rows]),
            "labels": np.array([r["label"] for r in rows]), "predictions": np.array([r["prediction"] for r in rows]),
            "entropy": np.array([r["entropy"] for r in rows], dtype=np.float32),
            "paths": np.array([data.paths[r["index"]] for r in rows]), "class_names": np.array(data.class_names),
            "orders": np.array(orders), "share": np.array(share, dtype=np.float32),
            "fill_pixel": np.array(fill_pixel, dtype=np.float32)}
        for order in orders:
            arrays[f"mask_{order}"] = np.stack([r["masks"][order] for r in rows])
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return True


def reveal_all(cfg: Config, model, data: ImageSet, meta: dict, device: torch.device
               ) -> tuple[pd.DataFrame, ExamplePicker]:
    """Score every image fully revealed and at each order x share -> (per-image table, examples).

    Table rows: index, order ('full_image' at share 100, or one of cfg.orders), share (%),
    label, prediction, correct, predictive_entropy.
    """
    mc_generator = torch.Generator().manual_seed(cfg.seed)        # CPU masks: the same on any device
    torch.manual_seed(cfg.seed + 2)  # the gradient's dropout masks (--gradient_dropout) draw from the global stream
    order_generator = torch.Generator().manual_seed(cfg.seed + 1)  # the random reveal order
    picker = ExamplePicker(cfg.n_examples)
    columns = {k: [] for k in ("index", "order", "share", "label", "prediction", "predictive_entropy")}

    def add(index, order, share, labels, prediction, entropy):
        columns["index"].append(index)
        columns["order"] += [order] * len(index)
        columns["share"].append(np.full(len(index), share))
        columns["label"].append(labels)
        columns["prediction"].append(prediction.numpy())
        columns["predictive_entropy"].append(entropy.numpy())

    starts = range(0, len(data), cfg.batch_size)
    for start in tqdm(starts, desc=f"reveal {cfg.split}", leave=False, disable=not progress_enabled()):
        images = data.images[start:start + cfg.batch_size]
        labels = data.labels[start:start + cfg.batch_size].numpy()
        index = np.arange(start, start + len(images))
        x = to_model_input(images, meta["mean"], meta["std"], device)
        full_pred, full_entropy = score_batch(model, x, cfg.T, mc_generator)
        add(index, "full_image", 100.0, labels, full_pred, full_entropy)
        sal = saliency.saliency_map(model, x, cfg.method, dropout=cfg.gradient_dropout)  # [B, H, W], predicted class
        example_masks = {}
        for order in cfg.orders:
            ranks = saliency.order_ranks(order, sal, order_generator)
            example_masks[order] = saliency.reveal_mask(ranks, cfg.example_share / 100)
            for share in cfg.shares:
                masked = saliency.apply_reveal(x, saliency.reveal_mask(ranks, share / 100), cfg.fill)
                pred, entropy = score_batch(model, masked, cfg.T, mc_generator)
                add(index, order, float(share), labels, pred, entropy)
        for j in range(len(images)):
            picker.offer(int(index[j]), images[j], int(labels[j]), int(full_pred[j]), float(full_entropy[j]),
                         sal[j], {k: v[j] for k, v in example_masks.items()})
    frame = pd.DataFrame({k: np.concatenate(v) if k != "order" else v for k, v in columns.items()})
    frame["correct"] = frame["label"] == frame["prediction"]
    names = np.array(data.class_names)
    frame.insert(1, "path", np.array(data.paths)[frame["index"].to_numpy()])
    frame["label"] = names[frame["label"].to_numpy()]
    frame["prediction"] = names[frame["prediction"].to_numpy()]
    return frame, picker


def curves_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per order and share: n, accuracy, mean predictive entropy overall / correct / wrong, n_wrong."""
    rows = []
    for (order, share), part in per_image.groupby(["order", "share"], sort=False):
        correct = part["correct"].to_numpy(bool)
        entropy = part["predictive_entropy"]
        rows.append({"order": order, "share": share, "n": len(part), "accuracy": float(correct.mean()),
                     "mean_entropy": mean_or_nan(entropy), "mean_entropy_correct": mean_or_nan(entropy[correct]),
                     "mean_entropy_wrong": mean_or_nan(entropy[~correct]), "n_wrong": int((~correct).sum())})
    return pd.DataFrame(rows)


def share_reaching(curve: pd.DataFrame, target: float) -> float | None:
    """Smallest share (%) whose accuracy is >= target, or None when no share does."""
    hit = curve[curve["accuracy"] >= target - 1e-12]
    return float(hit["share"].min()) if len(hit) else None


def summarise(cfg: Config, curves: pd.DataFrame) -> dict:
    """Full-image reference, each order's curve, the share reaching full accuracy, the entropy peak."""
    full = curves[curves["order"] == "full_image"].iloc[0]
    target = float(full["accuracy"]) - cfg.reach_tolerance
    orders = {}
    for order in cfg.orders:
        curve = curves[curves["order"] == order].sort_values("share")
        orders[order] = {
            "curve": curve.drop(columns="order").to_dict("records"),
            "share_reaching_full_accuracy": share_reaching(curve, target),
            "peak_entropy_share": float(curve.loc[curve["mean_entropy"].idxmax(), "share"]),
            "mean_accuracy_over_shares": float(curve["accuracy"].mean()),
        }
    verdict = None
    if {"saliency", "random"} <= set(orders):
        s, r = (orders[k]["share_reaching_full_accuracy"] for k in ("saliency", "random"))
        verdict = (s is not None and (r is None or s < r))
    return {"full_image": full.drop(labels="order").to_dict(), "reach_target_accuracy": target,
            "orders": orders, "saliency_reaches_full_accuracy_with_fewer_pixels_than_random": verdict}


def log_curves(curves: pd.DataFrame, orders: tuple[str, ...]) -> None:
    """One line per share: accuracy and mean entropy of each order."""
    wide = curves[curves["order"] != "full_image"].pivot(index="share", columns="order",
                                                         values=["accuracy", "mean_entropy"])
    log("share  " + "  ".join(f"{o[:13]:>13} acc/H" for o in orders))
    for share, row in wide.iterrows():
        log(f"{share:5.0f}% " + "  ".join(f"{row[('accuracy', o)]:>9.3f}/{row[('mean_entropy', o)]:.3f}"
                                          for o in orders))


def main(cfg: Config) -> dict:
    cfg, model, meta, device, out = open_checkpoint_run(cfg, run_dir)
    data = load_split(cfg, meta)
    if len(data) == 0:
        raise InputError(f"split {cfg.split!r} holds no images")
    path = "fast (trunk once)" if uncertainty.fast_path_available(model) else "plain"
    log(f"{out.name}: {meta['model_name']}, {cfg.method} saliency, {len(data)} {cfg.split} images, "
        f"{len(cfg.shares)} shares x {len(cfg.orders)} orders, T = {cfg.T}, {path} MC dropout on {device}")
    began = time.perf_counter()
    per_image, picker = reveal_all(cfg, model, data, meta, device)
    seconds = time.perf_counter() - began
    curves = curves_table(per_image)
    atomic_write_csv(out / "per_image.csv", per_image)
    atomic_write_csv(out / "curves.csv", curves)
    result = {"checkpoint": cfg.checkpoint, "model_name": meta["model_name"], "method": cfg.method,
              "dataset": cfg.dataset, "split": cfg.split, "n_images": len(data), "T": cfg.T, "fill": cfg.fill,
              "seed": cfg.seed, "shares": list(cfg.shares), "seconds": seconds, **summarise(cfg, curves)}
    atomic_write_json(out / "summary.json", result)
    fill_pixel = float(np.mean(meta["mean"])) + cfg.fill * float(np.mean(meta["std"]))  # per-channel stats: grey
    if picker.save(out / "examples.npz", data, cfg.orders, cfg.example_share, fill_pixel):
        plot_results.save_figure(plot_results.saliency_examples_figure(out), out, "examples")
    full = result["full_image"]
    log(f"full image: accuracy {full['accuracy']:.3f}, mean entropy {fmt_num(full['mean_entropy'])} nats "
        f"(correct {fmt_num(full['mean_entropy_correct'])}, wrong {fmt_num(full['mean_entropy_wrong'])}); {seconds:.0f} s")
    log_curves(curves, cfg.orders)
    reach = {o: v["share_reaching_full_accuracy"] for o, v in result["orders"].items()}
    log(f"share reaching full accuracy - {cfg.reach_tolerance:g}: "
        + ", ".join(f"{o} {'never' if s is None else f'{s:g} %'}" for o, s in reach.items()))
    log(f"wrote {out}/curves.csv, per_image.csv, summary.json, examples.png")
    return result


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
