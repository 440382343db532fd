"""Export a trained checkpoint (or the cascade's certified pair) to ONNX with MC dropout kept,
for an inspection line that runs ONNX Runtime, OpenVINO or TensorRT instead of this code.

    pip install -r requirements-onnx.txt      # onnx + onnxruntime: only this feature needs them
    python export.py --checkpoints results/train/resnet18_synthetic_plain_s0/best.pt --out results/export/model.onnx
    python export.py --checkpoints A.pt,B.pt --thresholds results/safety/<run>/thresholds.json \\
        --out results/export/cascade.onnx
    python predict.py --onnx results/export/model.onnx --images_dir /data/new_batch --out_dir OUT

Writes MODEL.onnx (model A), MODEL_b.onnx (model B of a pair) and the sidecar MODEL.json: class
names, normalisation, geometry, T, score, each graph's and checkpoint's sha256 and the dropout
layers, and with --thresholds the referral thresholds with their certificate (alpha, delta, n)
and the thresholds file's hashes (thresholds of other checkpoints are refused). Each graph takes
the normalised images and one mask input per dropout layer and returns the T samples' softmax
[T, N, C] (deploy.py has the layout); all-ones masks give the deterministic network.
`predict.py --onnx MODEL.onnx` scores with ONNX Runtime and the sidecar's thresholds, drawing
the masks like the PyTorch path, so both give the same classes and probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from safehil.safety import deploy
from safehil.safety import scoring
from safehil.uq import uncertainty
from safehil.settings.config import MAX_MC_SAMPLES, MAX_THREADS, Flags, ModelCheckpoints
from utils import InputError, flag, log, parse_config, read_json, require, run_main


@dataclass(frozen=True)
class Config(ModelCheckpoints, Flags):
    """export.py's flags: its own below and ModelCheckpoints' `checkpoint` flag (config.py)."""
    out: str = flag("results/export/model.onnx", "the ONNX file of model A; MODEL_b.onnx (a pair) and the "
                                                 "sidecar MODEL.json are written beside it")
    thresholds: str = flag("", "thresholds.json of evaluate_safety.py for these checkpoints: its referral thresholds "
                               "and certificate go into the sidecar; empty = none")
    T: int = flag(0, "MC-dropout samples the sidecar names; 0 = the thresholds' T, else the paper's for model A's "
                     "data set", most=MAX_MC_SAMPLES)
    score: str = flag("predictive_entropy", "uncertainty score the sidecar names (with --thresholds: theirs)",
                      choices=tuple(uncertainty.SCORES))
    cpu_threads: int = flag(0, "torch CPU threads (set by utils.run_main); 0 = torch's default", most=MAX_THREADS)
    FLAG_HELP = {"checkpoints": "checkpoint of model A (train_model.py best.pt), or A,B: the cascade's pair"}

    def __post_init__(self):
        super().__post_init__()
        require(self.out.endswith(".onnx"), f"--out must name a .onnx file, got {self.out!r}")
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 (or 0), got {self.T}")


def main(cfg: Config) -> dict:
    try:  # torch.onnx.export needs the onnx package: say so before anything loads
        import onnx  # noqa: F401
    except ImportError:
        raise InputError("export.py needs the onnx package: pip install -r requirements-onnx.txt") from None
    out = Path(cfg.out)
    written = [out, out.with_name(out.stem + deploy.B_SUFFIX + out.suffix), deploy.sidecar_path(out)]
    if any(p.exists() for p in written):
        raise InputError(f"{next(p for p in written if p.exists())} exists already; pass another --out (an export "
                         "is never overwritten)")
    models = scoring.load_models(cfg.checkpoint_a, cfg.checkpoint_b, "cpu")
    class_names = list(models[0][1]["class_names"])
    calibrated_T = int(read_json(cfg.thresholds).get("T") or 0) if cfg.thresholds else 0
    cfg = replace(cfg, T=cfg.T or calibrated_T or scoring.checkpoint_mc_samples(models[0][1]))
    rule = scoring.load_referral_rule(cfg.thresholds, models, cfg.score, cfg.T,
                                      {"a": cfg.checkpoint_a, "b": cfg.checkpoint_b}) if cfg.thresholds else None
    sidecar = deploy.export_bundle(models, cfg.checkpoints, out, cfg.T, cfg.score, rule)
    sizes = ", ".join(f"{m['onnx']} {m['onnx_bytes'] / 1e6:.2f} MB" for m in sidecar["models"])
    log(f"exported {' + '.join(m['model_name'] for m in sidecar['models'])} -> {sizes}, sidecar "
        f"{deploy.sidecar_path(out)} (T = {cfg.T}, score {cfg.score}"
        + (f", thresholds {rule.mode}: {rule.certificate})" if rule else ", no thresholds)"))
    return sidecar


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
