"""The ONNX deployment bundle: a trained checkpoint (or the cascade's pair) as ONNX graphs that
keep MC dropout, with a JSON sidecar, and the bundle loaded back for ONNX Runtime.

One graph per model, the fast MC path of uncertainty.py in one call:

    inputs   images  float32 [N, 3, S, S], normalised ((x / 255 - mean) / std, see the sidecar)
             mask_k  float32 [T, N, *shape_k] per dropout layer k of the head (in the order the
                     head runs them; per channel: [T, N, C, 1, ...]): scaled keep-masks,
                     bernoulli(1 - p) / (1 - p); all ones = dropout off (the deterministic network)
    output   probs   float32 [T, N, C], softmax of each of the T samples

The deterministic trunk runs once, the head on its T copies with mask t applied at each dropout
layer. The masks are inputs rather than random operators so that a line can draw them with any
generator and this code draws them exactly as the PyTorch path does (uncertainty.dropout_masks,
batch after batch from one seeded generator): predict.py --onnx then gives the same
probabilities as predict.py with the checkpoint (to float rounding).

The sidecar MODEL.json beside MODEL.onnx records, for a line that does not run this code: class
names, normalisation (mean, std), geometry (the checkpoint's canvas: a centre crop, a whole strip
or letterboxed, height x width; the graph takes exactly that), T, score, per model its dropout
layers (p, per-channel or not, shape per image), the ONNX file's, the checkpoint's and the
weights' sha256, and, when given, the referral thresholds with the whole thresholds.json of
evaluate_safety.py (its certificate's evidence); a sha256 over the sidecar itself. Whether the
thresholds are certified is never read from it: `sidecar_rule` re-runs the decision from the
evidence against the graphs and settings the sidecar makes predict.py use (certificate.py). Exported with torch.onnx.export's TorchScript
path (dynamo=False: no onnxscript needed), opset 17. Needs `pip install onnx onnxruntime`
(requirements-onnx.txt); nothing else in the project imports them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from safehil.safety import cascade, certificate
from safehil.data.cache import Canvas
from safehil.data.datasets import checkpoint_canvas
from safehil.uq import uncertainty
from safehil.training.models import has_dropout, split_trunk_head
from safehil.core.utils import InputError, atomic_write_json, read_json

SIDECAR_FORMAT = 2  # 1: square crop only, thresholds trusted as written; 2: the canvas, evidence, own sha256
OPSET = 17
B_SUFFIX = "_b"  # model B's graph: MODEL_b.onnx beside MODEL.onnx


def sidecar_path(onnx_path: str | Path) -> Path:
    """MODEL.json beside MODEL.onnx."""
    return Path(onnx_path).with_suffix(".json")


# ============================================================================ export

class MCDropoutGraph(nn.Module):
    """trunk once, head on T copies with the given masks: (images [N, 3, S, S], *masks) -> probs [T, N, C]."""

    def __init__(self, trunk: nn.Module, head: nn.Module, layers: list[nn.Module]):
        super().__init__()
        self.trunk, self.head, self.layers = trunk, head, layers

    def forward(self, images: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(images)
        T, N = masks[0].shape[0], feats.shape[0]
        x = feats.unsqueeze(0).expand(T, *feats.shape).reshape(T * N, *feats.shape[1:])
        handles = [layer.register_forward_hook(lambda _, inputs, out, m=mask: inputs[0] * m.flatten(0, 1))
                   for layer, mask in zip(self.layers, masks)]
        try:
            logits = self.head(x)
        finally:
            for h in handles:
                h.remove()
        return logits.reshape(T, N, -1).softmax(-1)


def dropout_layers_in_order(trunk: nn.Module, head: nn.Module, canvas: Canvas) -> list[tuple[nn.Module, tuple]]:
    """The head's dropout layers in the order they run, each with its input shape per image
    (a dry run on one zero image of the model's canvas, height x width)."""
    seen = []
    layers = [m for m in head.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    handles = [m.register_forward_hook(lambda mod, inputs, out: seen.append((mod, tuple(inputs[0].shape[1:]))))
               for m in layers]
    try:
        with torch.no_grad():
            head(trunk(torch.zeros(1, 3, canvas.height, canvas.width)))
    finally:
        for h in handles:
            h.remove()
    return seen


def export_graph(model: nn.Module, meta: dict, path: str | Path) -> list[dict]:
    """Write one model's MC-dropout graph to `path` (ONNX) -> its dropout layers [{p, channelwise, shape}]."""
    model = model.cpu().eval()
    parts = split_trunk_head(model)
    if parts is None or has_dropout(parts[0]) or not has_dropout(parts[1]):
        raise InputError(f"{meta.get('model_name')}: no deterministic trunk + dropout head split, so MC dropout "
                         "cannot be exported (register its trunk_head in models.py)")
    trunk, head = parts
    canvas = checkpoint_canvas(meta)  # the graph takes what the model was trained on: a whole strip stays whole
    layers = dropout_layers_in_order(trunk, head, canvas)
    spec = [{"p": float(m.p), "channelwise": isinstance(m, uncertainty._CHANNELWISE), "shape": list(shape)}
            for m, shape in layers]
    if not uncertainty._maskable([m for m, _ in layers]):
        raise InputError(f"{meta.get('model_name')}: a dropout layer of a kind the MC masks do not cover")
    images = torch.zeros(2, 3, canvas.height, canvas.width)
    masks = tuple(uncertainty.dropout_masks(s["p"], s["channelwise"], (2, *s["shape"]), 3, None) for s in spec)
    names = [f"mask_{k}" for k in range(len(spec))]
    axes = {"images": {0: "N"}, "probs": {0: "T", 1: "N"}, **{n: {0: "T", 1: "N"} for n in names}}
    import warnings
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation note: chosen on purpose (see above)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(MCDropoutGraph(trunk, head, [m for m, _ in layers]).eval(), (images, *masks), str(path),
                          input_names=["images", *names], output_names=["probs"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return spec


GEOMETRY_WORDS = {
    "crop": "shorter side to 256/224 of the canvas, centre crop to the canvas",
    "whole": "shorter side to the canvas height, aspect ratio kept, nothing cut (a strip of another shape is "
             "letterboxed into the canvas)",
    "pad": "longer side to the canvas, letterboxed (black around it), nothing cut"}


def geometry_record(canvas: Canvas) -> dict:
    """The sidecar's geometry: how a file becomes the graph's input (the checkpoint's canvas)."""
    return {"geometry": canvas.geometry, "height": canvas.height, "width": canvas.width,
            "input": f"RGB uint8 decoded like training: {GEOMETRY_WORDS[canvas.geometry]}, {canvas.height} x "
                     f"{canvas.width} px (an image already that size is kept as it is)",
            "normalise": "(x / 255 - mean) / std per channel"}


def thresholds_record(rule: cascade.ReferralRule | None) -> dict | None:
    """The sidecar's referral thresholds: mechanism, thresholds, the file's hashes and its whole
    document (the certificate's evidence, re-run by predict.py --onnx). `certified_at_export` is
    for a person reading the file; nothing reads it back."""
    if rule is None:
        return None
    doc = read_json(rule.source)
    return {"file": str(rule.source), "file_sha256": cascade.file_sha256(rule.source),
            "mode": rule.mode, "threshold_a": rule.threshold_a, "threshold_b": rule.threshold_b,
            "score": rule.score, "T": rule.T, "certified_at_export": rule.certified,
            "not_certified_at_export": list(rule.not_certified), "document": doc}


def sidecar_sha256(sidecar: dict) -> str:
    """sha256 over the canonical JSON of a sidecar without its own 'sha256' key."""
    return cascade._document_sha256(sidecar)


def export_bundle(models: list[tuple[nn.Module, dict]], checkpoints: tuple[str, ...], out: str | Path, T: int,
                  score: str, rule: cascade.ReferralRule | None = None) -> dict:
    """Write MODEL.onnx (model A), MODEL_b.onnx (B of a pair) and MODEL.json -> the sidecar dict."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_a = models[0][1]
    entries = []
    for role, path, (model, meta) in zip("ab", checkpoints, models):
        onnx_path = out if role == "a" else out.with_name(out.stem + B_SUFFIX + out.suffix)
        spec = export_graph(model, meta, onnx_path)
        entries.append({"role": role, "onnx": onnx_path.name, "onnx_sha256": cascade.file_sha256(onnx_path),
                        "onnx_bytes": onnx_path.stat().st_size, "checkpoint": str(path),
                        "checkpoint_sha256": cascade.file_sha256(path), "weights_sha256": cascade.weights_sha256(model),
                        "model_name": meta["model_name"], "image_size": int(meta["image_size"]),
                        "canvas": checkpoint_canvas(meta).to_dict(), "mean": meta["mean"], "std": meta["std"],
                        "dropout_layers": spec})
    sidecar = {"format": SIDECAR_FORMAT, "class_names": list(meta_a["class_names"]), "T": int(T), "score": score,
               "geometry": geometry_record(checkpoint_canvas(meta_a)),
               "inputs": "images float32 [N, 3, S, S]; mask_k float32 [T, N, *shape] (channelwise: [T, N, C, 1, 1]) "
                         "= bernoulli(1 - p) / (1 - p); output probs float32 [T, N, C]",
               "models": entries, "thresholds": thresholds_record(rule), "opset": OPSET}
    sidecar = json.loads(json.dumps(sidecar, default=float))  # as it will be read back (numbers, lists)
    sidecar["sha256"] = sidecar_sha256(sidecar)
    atomic_write_json(sidecar_path(out), sidecar)
    return sidecar


# ============================================================================ ONNX Runtime

@dataclass
class OnnxNetwork:
    """One exported model run by ONNX Runtime; `mc_probs` samples like uncertainty.mc_dropout_probs."""
    session: object           # onnxruntime.InferenceSession
    layers: list[dict]        # the sidecar's dropout layers: p, channelwise, shape per image

    def mc_probs(self, images: torch.Tensor, T: int, generator: torch.Generator | None) -> torch.Tensor:
        """normalised float [B, 3, S, S] -> probs float32 [T, B, C], the masks drawn from `generator`
        layer by layer (as the PyTorch fast path draws them)."""
        x = images.detach().float().cpu().contiguous()
        feed = {"images": x.numpy()}
        for k, layer in enumerate(self.layers):
            feed[f"mask_{k}"] = uncertainty.dropout_masks(layer["p"], layer["channelwise"], (len(x), *layer["shape"]),
                                                         T, generator).numpy()
        return torch.from_numpy(self.session.run(["probs"], feed)[0])

    def probe(self, canvas: dict) -> list[list[float]]:
        """The graph's deterministic output (all-ones masks) on certificate.probe_input: [2][C]."""
        x = certificate.probe_input(canvas)
        feed = {"images": x.numpy()}
        for k, layer in enumerate(self.layers):
            feed[f"mask_{k}"] = uncertainty.dropout_masks(0.0, layer["channelwise"], (len(x), *layer["shape"]), 1,
                                                         None).numpy()  # all ones: dropout off
        return self.session.run(["probs"], feed)[0][0].astype(float).tolist()


def load_bundle(onnx_path: str | Path, cpu_threads: int = 0) -> tuple[list[tuple[OnnxNetwork, dict]], dict]:
    """MODEL.onnx + MODEL.json -> ([(OnnxNetwork, meta)] per model, the sidecar). meta carries what
    scoring needs (class_names, mean, std, image_size, model_name). Each graph's sha256 must match
    the sidecar's. onnxruntime missing: an InputError saying how to install it."""
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if not onnx_path.is_file() or not side.is_file():
        raise FileNotFoundError(f"{onnx_path if not onnx_path.is_file() else side}: not found (export.py writes "
                                "MODEL.onnx with its sidecar MODEL.json)")
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("--onnx needs ONNX Runtime: pip install -r requirements-onnx.txt") from None
    try:
        sidecar = json.loads(side.read_text())
        entries = sidecar["models"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{side}: not a sidecar of export.py") from None
    check_sidecar(sidecar, side)
    options = ort.SessionOptions()
    if cpu_threads:
        options.intra_op_num_threads = options.inter_op_num_threads = cpu_threads
    loaded = []
    for entry in entries:
        path = onnx_path.parent / entry["onnx"]
        if not path.is_file() or cascade.file_sha256(path) != entry["onnx_sha256"]:
            raise InputError(f"{path}: missing or not the graph {side} was written with (sha256 differs); "
                             "export again with export.py")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        check_graph_fits(OnnxNetwork(session, entry["dropout_layers"]), session, entry, len(sidecar["class_names"]),
                         side)
        meta = {"class_names": sidecar["class_names"], "mean": entry["mean"], "std": entry["std"],
                "image_size": entry["image_size"], "canvas": entry.get("canvas"),
                "model_name": entry["model_name"] + " (onnx)"}
        loaded.append((OnnxNetwork(session, entry["dropout_layers"]), meta))
    return loaded, sidecar


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sidecar_problem(sidecar: dict) -> str:
    """What makes a sidecar malformed ('' when nothing): each field `load_bundle` and `sidecar_rule`
    read must have the type and range export.py writes."""
    names = sidecar.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or len(set(map(str, names))) != len(names) \
            or not all(isinstance(c, str) and c for c in names):
        return f"class_names must be a list of at least two distinct names, got {json.dumps(names)[:80]}"
    if not isinstance(sidecar.get("T"), int) or isinstance(sidecar.get("T"), bool) or sidecar["T"] < 2:
        return f"T must be a whole number >= 2, got {json.dumps(sidecar.get('T'))}"
    if sidecar.get("score") not in uncertainty.SCORES:
        return f"score must be one of {', '.join(uncertainty.SCORES)}, got {json.dumps(sidecar.get('score'))}"
    models = sidecar.get("models")
    if not isinstance(models, list) or len(models) not in (1, 2) or not all(isinstance(m, dict) for m in models):
        return f"models must list one or two exported graphs, got {json.dumps(models)[:80]}"
    for k, entry in enumerate(models):
        for key, ok in (("onnx", lambda v: isinstance(v, str) and v), ("onnx_sha256", lambda v: isinstance(v, str)),
                        ("model_name", lambda v: isinstance(v, str)),
                        ("image_size", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
                        ("mean", lambda v: all(map(_number, v if isinstance(v, list) and v else [v]))),
                        ("std", lambda v: all(_number(x) and x > 0 for x in (v if isinstance(v, list) and v else [v]))),
                        ("dropout_layers", lambda v: isinstance(v, list) and all(
                            isinstance(d, dict) and _number(d.get("p")) and 0 <= d["p"] < 1
                            and isinstance(d.get("channelwise"), bool) and isinstance(d.get("shape"), list)
                            and all(isinstance(x, int) and x > 0 for x in d["shape"]) for d in v))):
            if not ok(entry.get(key)):
                return f"models[{k}].{key} is malformed ({json.dumps(entry.get(key))[:60]})"
    th = sidecar.get("thresholds")
    if th is None:
        return ""
    if not isinstance(th, dict):
        return "thresholds must be an object or null"
    if th.get("mode") not in cascade.MODES:
        return f"thresholds.mode must be one of {', '.join(cascade.MODES)}, got {json.dumps(th.get('mode'))}"
    two = th["mode"] not in cascade.ONE_MODEL_MODES
    if two and len(models) != 2:
        return f"thresholds.mode {th['mode']} needs two models, the sidecar lists {len(models)}"
    for key in ("threshold_a", "threshold_b"):
        if not (_number(th.get(key)) or (th.get(key) is None and key == "threshold_b" and not two)):
            return f"thresholds.{key} must be a number, got {json.dumps(th.get(key))}"
    if th.get("score") not in uncertainty.SCORES:
        return f"thresholds.score must be one of {', '.join(uncertainty.SCORES)}, got {json.dumps(th.get('score'))}"
    return ""


def check_sidecar(sidecar: dict, side: Path) -> None:
    """InputError (one line naming the field) for a malformed sidecar, before any graph runs."""
    problem = sidecar_problem(sidecar) if isinstance(sidecar, dict) else "not a JSON object"
    if problem:
        raise InputError(f"{side}: {problem}; export again with export.py (a sidecar is never edited by hand)")


def check_graph_fits(network: "OnnxNetwork", session, entry: dict, num_classes: int, side: Path) -> None:
    """InputError when the graph does not run on the sidecar's input (another image_size, dropout
    layer shapes) or predicts another number of classes than the sidecar names: one probe image of
    zeros [1, 3, S, S] (the graph's fixed sizes where it has them), one MC sample."""
    shape = session.get_inputs()[0].shape  # [N, 3, S, S]; symbolic axes are text
    height, width = (d if isinstance(d, int) else entry["image_size"] for d in shape[2:4])
    try:
        probs = network.mc_probs(torch.zeros(1, 3, height, width), 1, torch.Generator().manual_seed(0))
    except Exception as e:  # onnxruntime's own errors (InvalidArgument, Fail, ...) share no base class
        raise InputError(f"{side}: the graph {entry['onnx']} does not run on the sidecar's input (image_size "
                         f"{entry['image_size']}, dropout layers): {type(e).__name__}: {str(e).splitlines()[0][:160]}; "
                         "export again with export.py") from None
    if probs.shape[-1] != num_classes:
        raise InputError(f"{side}: lists {num_classes} class names, the graph {entry['onnx']} predicts "
                         f"{probs.shape[-1]} classes; export again with export.py")


def sidecar_rule(sidecar: dict, source: str | Path, score: str, T: int,
                 networks: list[tuple["OnnxNetwork", dict]] | None = None) -> cascade.ReferralRule | None:
    """The referral rule the sidecar carries (None without thresholds), certified only when
    `certificate.verified_rule` re-runs the decision from the embedded thresholds.json's evidence
    and it agrees with what predict.py will use from this sidecar: the thresholds and mechanism,
    `score` and `T`, the class names, each graph's normalisation, canvas and dropout rates, and each
    graph bound to the calibrated weights (its recorded weights sha256, and, given the loaded
    `networks` of `load_bundle`, its own output on the certificate's fixed probe). An edit of
    the sidecar or of the embedded document (their sha256 no longer match) is a reason too."""
    try:
        return _sidecar_rule(sidecar, source, score, T, networks)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{source}: not a sidecar of export.py (its thresholds or models are malformed: "
                         f"{type(e).__name__} {e}); export again with export.py") from None


def _sidecar_rule(sidecar: dict, source: str | Path, score: str, T: int, networks) -> cascade.ReferralRule | None:
    th = sidecar.get("thresholds")
    if not th:
        return None
    distrust = []
    if sidecar.get("sha256") != sidecar_sha256(sidecar):
        distrust.append(f"{source} was edited after export.py wrote it (its sha256 no longer matches the content); "
                        "export again instead of editing the sidecar")
    doc = th.get("document") if isinstance(th.get("document"), dict) else {}
    if not doc or doc.get("sha256") != cascade._document_sha256(doc):
        distrust.append(f"{source}: the thresholds.json embedded in it is missing or was edited (its sha256 no longer "
                        "matches); export again with export.py --thresholds")
    rule = cascade.ReferralRule(str(th["mode"]), float(th["threshold_a"]), float(th["threshold_b"]), str(th["score"]),
                                th.get("T"), False, str(source), tuple(distrust))
    applied = {}
    for k, entry in enumerate(sidecar["models"]):
        meta = {"class_names": sidecar["class_names"], "mean": entry["mean"], "std": entry["std"],
                "image_size": entry["image_size"], "canvas": entry.get("canvas")}
        record = certificate.deployment_record(meta, [float(d["p"]) for d in entry["dropout_layers"]])
        applied[entry["role"]] = {"weights_sha256": entry.get("weights_sha256"), **record}
        if networks is not None and k < len(networks):
            applied[entry["role"]]["probe"] = networks[k][0].probe(record["canvas"])
    return certificate.verified_rule(rule, doc.get("evidence"), applied, score, T, list(sidecar["class_names"]))
