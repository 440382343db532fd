"""The editable review page of `review.py export`: one self-contained HTML file (inline CSS and
JavaScript, pictures as data URIs; no server, no network) on which a person confirms or
corrects each label and downloads review.csv exactly as `review.py import` reads it.

The page (templates/review_page.html) gets the batch as one JSON object: review.csv's header
and cells as written (so the download repeats them byte for byte, with only corrected_label
filled, through the same formula guard as `utils.protect_cell`), and per card the picture the
model saw, its saliency maps, the confidence, the second choice and why it was referred.
Pictures are encoded at the model's input size (the smaller of PNG and JPEG), saliency maps as
small grey pictures that the page colours; only the cards of the page shown become images.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from safehil.safety.cascade import MODES
from safehil.core.utils import atomic_write_bytes

TEMPLATE = Path(__file__).resolve().parent / "templates" / "review_page.html"
PLACEHOLDER = "/*BATCH_JSON*/"
JPEG_QUALITY = 80   # a picture is sent as JPEG at this quality when that is smaller than its PNG (at 224 px
                    # ~25 % smaller than 90, and shown at --display_size the difference does not show)
HEAT_SIZE = 48      # saliency maps travel at most this many pixels a side; the page scales them up smoothly
COLORMAP = "inferno"

# score -> (its name, what it measures, its largest value for C classes and T samples)
SCORE_WORDS = {
    "predictive_entropy": ("predictive entropy", "the entropy (in nats) of the mean of the T MC-dropout "
                           "predictions: 0 when every pass puts all its probability on one class, ln C when the "
                           "mean is a uniform guess over the C classes", lambda C, T: math.log(C)),
    "expected_entropy": ("expected entropy", "the mean entropy (in nats) of the T MC-dropout passes: how unsure "
                         "each pass is on its own (the image itself is ambiguous)", lambda C, T: math.log(C)),
    "mutual_information": ("mutual information", "predictive minus expected entropy (BALD, in nats): how much the "
                           "T MC-dropout passes disagree with each other (the model has not learnt such images)",
                           lambda C, T: math.log(C)),
    "variation_ratio": ("variation ratio", "the share of the T MC-dropout passes whose top class is not the most "
                        "voted one", lambda C, T: 1 - 1 / T),
    "one_minus_margin": ("1 - margin", "1 minus the gap between the two most probable classes of the mean MC-dropout "
                         "prediction", lambda C, T: 1.0),
    "least_confidence": ("least confidence", "1 minus the mean MC-dropout probability of the predicted class",
                         lambda C, T: 1 - 1 / C),
}


# ============================================================================ pictures

def _encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture_data_uri(image: torch.Tensor) -> str:
    """uint8 [3, H, W] or [1, H, W] -> a data URI of the smaller of its PNG (lossless) and its JPEG
    at JPEG_QUALITY, at the same size; a grey picture (one channel, or three equal) as one channel."""
    grey = image.shape[0] == 1 or bool((image == image[:1]).all())
    array = image[0].numpy() if grey else image.permute(1, 2, 0).numpy()
    png = _encoded(array, "PNG", optimize=True)
    jpeg = _encoded(array, "JPEG", quality=JPEG_QUALITY)
    kind, data = ("png", png) if len(png) <= len(jpeg) else ("jpeg", jpeg)
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def heat_data_uri(heat: torch.Tensor) -> str:
    """A saliency map float [h, w] (any scale) -> a grey picture's data URI (`picture_data_uri`):
    area-averaged down to at most HEAT_SIZE pixels a side, 0 to the map's 99th percentile as 0 to 255."""
    heat = heat.float()
    h, w = heat.shape
    scale = min(1.0, HEAT_SIZE / max(h, w))
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        heat = F.interpolate(heat[None, None], size=size, mode="area")[0, 0]
    top = torch.quantile(heat.flatten(), 0.99).clamp_min(1e-12)
    grey = ((heat / top).clamp(0, 1) * 255).round().to(torch.uint8)
    return picture_data_uri(grey[None])


def colormap_table(name: str = COLORMAP) -> list[int]:
    """The colour map as 256 RGB triples, flat [768] ints 0-255 (the page colours the grey maps with it)."""
    import matplotlib  # only here: the colour map
    rgb = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    return (rgb * 255).round().astype(int).flatten().tolist()


# ============================================================================ words

def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def referral_reasons(row: dict, rule: dict | None, score_name: str) -> list[str]:
    """Why a card is in the batch, in words: each part of the referral rule it meets, or that it
    meets none. rule: review_meta.json's 'referral_rule' ({mode, threshold_a, threshold_b,
    certified}) or None when the export had no thresholds."""
    if rule is None:  # predictions_table's rule without thresholds: a pair's disagreement alone
        if str(row.get("disagreement")) == "True":
            return [f"referred: the two models disagree (B says {row.get('predicted_label_b')}); no thresholds "
                    "were given, so disagreement alone refers"]
        return ["no thresholds were given (export without --thresholds): every image is in the batch"]
    use_a, use_b, use_dis, _ = MODES[rule["mode"]]
    reasons = []
    for model, used, column, key in (("A", use_a, "uncertainty", "threshold_a"),
                                     ("B", use_b, "uncertainty_b", "threshold_b")):
        value, threshold = _number(row.get(column)), float(rule[key])
        if used and not value <= threshold:  # above, or not a number (refer_mask's rule)
            reasons.append(f"referred: {model}'s {score_name} {value:.3f} is above its threshold {threshold:.3f}"
                           if not math.isnan(value) else f"referred: {model}'s {score_name} is not a number")
    if use_dis and str(row.get("disagreement")) == "True":
        reasons.append(f"referred: the two models disagree (B says {row.get('predicted_label_b')})")
    if not reasons:
        limits = [f"{m}'s within {float(rule[k]):.3f}" for m, used, k in (("A", use_a, "threshold_a"),
                                                                        ("B", use_b, "threshold_b")) if used]
        reasons.append("not referred: " + (", ".join(limits) or "the rule refers nothing")
                       + (", the models agree" if use_dis else ""))
    return reasons


def referral_words(rule: dict | None, meta: dict) -> str:
    """The header's sentence on the referral rule of the batch."""
    if rule is None:
        return ("Referred: no thresholds were given to the export, so nothing is marked referred by a certified rule; "
                "every image is shown, riskiest first.")
    why = " ".join(rule.get("not_certified") or ()) or "empirical calibration or too few calibration images."
    certified = (f"certified by Learn then Test ({rule.get('certificate', 'see evaluate_safety.py')}): the "
                 "undetected-error rate of the images left to the model is bounded as evaluate_safety.py reported"
                 if rule.get("certified") else
                 f"NOT certified, so the rate of undetected errors on new images is not guaranteed: {why}")
    parts = {"cascade": "when the two models disagree or either model's uncertainty is above its threshold",
             "uncertainty_a": "when model A's uncertainty is above its threshold",
             "uncertainty_b": "when model B's uncertainty is above its threshold",
             "disagreement": "when the two models disagree"}.get(rule["mode"], f"by the rule {rule['mode']}")
    return (f"Referred (red edge): an image goes to a person {parts} (thresholds A {float(rule['threshold_a']):.3f}, "
            f"B {float(rule['threshold_b']):.3f} from {meta.get('thresholds') or 'thresholds.json'}); these "
            f"thresholds are {certified}".rstrip(".") + ".")


def score_words(score: str | None, n_classes: int, T: int | None) -> tuple[str, float, str]:
    """(the score's name, its largest value, a sentence on what it means) for the header and cards."""
    if score not in SCORE_WORDS:
        return "uncertainty", math.nan, "No uncertainty was computed for these images."
    name, meaning, most = SCORE_WORDS[score]
    top = most(n_classes, T or 2)
    return name, top, (f"Uncertainty is the {name}: {meaning}. Here it runs from 0 (certain) to {top:.3f} (with "
                       f"{n_classes} classes{f' and T = {T}' if T else ''}). Higher means the prediction is less "
                       "likely to be right; confidence is the mean MC-dropout probability of the predicted class.")


# ============================================================================ the page

def read_csv_cells(csv_path: str | Path) -> tuple[list[str], list[list[str]], str]:
    """review.csv as written -> (header, rows of cells as text, the line ending)."""
    raw = Path(csv_path).read_bytes().decode("utf-8")
    lines = list(csv.reader(io.StringIO(raw, newline="")))
    return lines[0], lines[1:], "\r\n" if "\r\n" in raw else "\n"


def quoted_characters(newline: str) -> str:
    """The characters that make Python's csv writer (pandas.to_csv) quote a field with this line
    ending: the delimiter, the quote, the line ending's own and, on newer Pythons, any line break."""
    def quoted(ch: str) -> bool:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=newline).writerow([f"a{ch}b"])
        return buffer.getvalue().startswith('"')
    return "".join(ch for ch in ',"\r\n' if quoted(ch))


def second_choice(probabilities: np.ndarray | None, class_names: list[str]) -> tuple[list[str], list[float]]:
    """The runner-up class and its mean probability per row of probabilities [N, C] (empty without)."""
    if probabilities is None or len(probabilities) == 0 or probabilities.shape[1] < 2:
        n = 0 if probabilities is None else len(probabilities)
        return [""] * n, [math.nan] * n
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, 1]
    return [class_names[c] for c in order], probabilities[np.arange(len(order)), order].tolist()


def page_batch(csv_path: str | Path, rows: pd.DataFrame, pictures: torch.Tensor, heatmaps: dict[str, torch.Tensor],
               meta: dict, display_size: int, numeric_columns: tuple[str, ...] = ()) -> dict:
    """The JSON object the page runs on.

    rows: the review table in review.csv's order, optionally with 'confidence', 'second_label'
    and 'second_confidence' columns (not in the CSV); pictures: uint8 [N, 3, H, W] as the model
    saw them; heatmaps: {caption: float [N, h, w]} drawn over the picture; meta: review_meta.json;
    numeric_columns: the CSV columns written as numbers (never formula-guarded).
    """
    header, cells, newline = read_csv_cells(csv_path)
    if len(cells) != len(rows) or len(pictures) != len(rows):
        raise ValueError(f"{csv_path}: {len(cells)} rows, {len(rows)} table rows, {len(pictures)} pictures")
    class_names = list(meta["class_names"])
    rule = meta.get("referral_rule")
    name, top, words = score_words(meta.get("score"), len(class_names), meta.get("T"))
    records = rows.to_dict("records")
    cards = []
    for i, record in enumerate(records):
        _, h, w = pictures[i].shape
        reasons = (referral_reasons(record, rule, name) if meta.get("score") else  # the data-generation loop's step
                   [f"{meta.get('source', 'this batch')}: every image of it needs its label"])
        cards.append({"picture": picture_data_uri(pictures[i]), "size": [int(w), int(h)],
                      "overlays": [{"caption": caption, "heat": heat_data_uri(maps[i])}
                                   for caption, maps in heatmaps.items()],
                      "confidence": _finite(record.get("confidence")), "second": record.get("second_label") or "",
                      "second_confidence": _finite(record.get("second_confidence")), "reasons": reasons})
    shown = f"{len(rows)} images" + (f" of {meta['batch_size']} scored" if meta.get("batch_size") else "")
    models = ", ".join(f"{tag} = {Path(p).parent.name}" for tag, p in (("A", meta.get("model_a")),
                                                                       ("B", meta.get("model_b"))) if p)
    referred = f", {meta['referred']} referred" if "referred" in meta else ""
    return {"id": hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()[:16],
            "title": f"Review batch: {meta.get('source', Path(csv_path).parent.name)}",
            "summary": f"{shown}{referred}, riskiest first" + (f" · models {models}" if models else "")
                       + f" · {Path(csv_path).resolve()}",
            "header": header, "rows": cells, "newline": newline, "quoted": quoted_characters(newline),
            "numeric": list(numeric_columns),
            "class_names": class_names, "cards": cards, "display_size": int(display_size),
            "seen_by": "model A's input" if meta.get("model_a") else "the image",
            "score_name": name, "score_max": _finite(top), "score_words": words,
            "referral_words": referral_words(rule, meta) if meta.get("score") else "",
            "download_words": (f"Download review.csv writes the reviewed rows (the others are left out, so a "
                               f"prediction nobody looked at never becomes a label): corrected_label empty = the "
                               f"prediction is right. Save it as {Path(csv_path).resolve()} (it replaces the "
                               f"exported one), then run: {import_command(csv_path, meta)}. Decisions are kept in "
                               f"this browser across reloads."),
            "colormap": colormap_table()}


def import_command(csv_path, meta: dict) -> str:
    """The `review.py import` command that works for this batch: with the export's split CSV when it
    has one; a folder of new images (no split CSV) needs the split CSV, its data root and
    --copy_into (the images are copied under that root)."""
    command = f"python review.py import --review_csv {Path(csv_path).resolve()}"
    if meta.get("split_csv"):
        return command
    return (f"{command} --split_csv YOUR_SPLIT.csv --data_dir ITS_DATA_ROOT --copy_into new_images (a folder of new "
            "images is copied under the split CSV's data root; in a class-folder root each image goes to the folder "
            "of its label)")


def _finite(value) -> float | None:
    value = _number(value)
    return value if math.isfinite(value) else None


def page_html(batch: dict) -> str:
    """The template with the batch JSON in it ('<' escaped, so no text in it can end the script)."""
    data = json.dumps(batch, ensure_ascii=True, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace(PLACEHOLDER, data)


def read_page_batch(path: str | Path) -> dict:
    """The batch JSON of a written review page (what `page_batch` returned)."""
    text = Path(path).read_text(encoding="utf-8")
    opening = '<script type="application/json" id="batch">'
    start = text.index(opening) + len(opening)
    return json.loads(text[start:text.index("</script>", start)])


def write_page(path: str | Path, csv_path: str | Path, rows: pd.DataFrame, pictures: torch.Tensor,
               heatmaps: dict[str, torch.Tensor], meta: dict, display_size: int,
               numeric_columns: tuple[str, ...] = ()) -> Path:
    """Write the review page of the review.csv at `csv_path` (see `page_batch`) atomically, as UTF-8."""
    batch = page_batch(csv_path, rows, pictures, heatmaps, meta, display_size, numeric_columns)
    return atomic_write_bytes(path, page_html(batch).encode("utf-8"))
