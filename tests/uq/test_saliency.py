"""saliency.py (analytic gradients of a linear model, Grad-CAM = CAM for GAP + linear,
batched == per image, exact reveal counts, deterministic ties, baselines) and
saliency_map_uncertainties.py end to end on a tiny CNN trained on tiny generated data."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

import plot_results
from safehil.uq import saliency
import saliency_map_uncertainties as smu
from conftest import ROOT, run_script
from safehil.training.models import build_model
from safehil.core.errors import run_main
from safehil.settings.cli import parse_config


def _linear_model(c=4, h=5, w=6):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * h * w, c))


def _tiny_cnn_with_stats():
    """A TinyCNN whose batch norms hold non-trivial running statistics (eval mode matters)."""
    torch.manual_seed(1)
    model = build_model("tiny_cnn", 5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


# ============================================================================ saliency maps

def test_gradient_saliency_of_linear_model_is_abs_weight_max_over_channels():
    model = _linear_model()
    weight = model[1].weight.detach()  # [C, 3 * H * W]
    x = torch.randn(7, 3, 5, 6)
    expected = lambda cls: weight[cls].view(3, 5, 6).abs().amax(0)  # noqa: E731
    predicted = model(x).argmax(1)
    sal = saliency.gradient_saliency(model, x)
    assert sal.shape == (7, 5, 6) and sal.dtype == torch.float32
    for i in range(7):  # target None = the predicted class
        torch.testing.assert_close(sal[i], expected(predicted[i]))
    for target in (2, torch.tensor([3, 0, 1, 2, 3, 0, 1])):
        sal = saliency.gradient_saliency(model, x, target=target)
        classes = torch.as_tensor(target).expand(7)
        for i in range(7):
            torch.testing.assert_close(sal[i], expected(classes[i]))


@pytest.mark.parametrize("method", saliency.METHODS)
def test_batched_saliency_equals_per_image_and_leaves_model_untouched(method):
    model = _tiny_cnn_with_stats().train()  # the map must switch to eval mode itself
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3, 16, 16)
    batched = saliency.saliency_map(model, x, method)
    single = torch.cat([saliency.saliency_map(model, x[i:i + 1], method) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    assert batched.abs().sum() > 0
    assert all(m.training for m in model.modules())  # modes restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats not updated
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients accumulated


def test_gradcam_equals_cam_for_global_pooling_and_linear_head():
    # conv -> global average pool -> linear: d y_c / d A_k = W[c, k] / (h w) everywhere, so
    # Grad-CAM = ReLU(sum_k W[c, k] A_k) / (h w) (CAM); same size, so no upsampling effect
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    x = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 1])
    cam = saliency.gradcam(model, x, target=target, layer=conv)
    with torch.no_grad():
        a = conv(x)  # [4, 5, 8, 8]
        w = model[3].weight[target]  # [4, 5]
        expected = (w[:, :, None, None] * a).sum(1).relu() / 64
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-7)
    assert saliency.gradcam_layer(model) is conv  # fallback: the last Conv2d


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "efficientnet_b0", "vgg16"])
def test_gradcam_has_the_image_size_and_is_non_negative(name):
    torch.manual_seed(3)
    model = build_model(name, 6)
    layer = saliency.gradcam_layer(model)
    expected = {"tiny_cnn": model.features[8] if name == "tiny_cnn" else None,
                "resnet18": getattr(model, "layer4", None),
                "efficientnet_b0": model.features[-1] if name == "efficientnet_b0" else None,
                "vgg16": model.features[28] if name == "vgg16" else None}[name]
    assert layer is expected
    x = torch.randn(2, 3, 32, 40)
    cam = saliency.gradcam(model, x)
    assert cam.shape == (2, 32, 40) and bool((cam >= 0).all()) and bool(torch.isfinite(cam).all())


def test_gradcam_with_frozen_layers_and_an_inplace_relu_after_the_layer():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for p in conv.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 3, 6, 6)
    cam = saliency.gradcam(model, x, target=1, layer=conv)
    with torch.no_grad():
        a = conv(x)  # the conv's own output (pre-ReLU), not the in-place-modified tensor
        grad = model[4].weight[1][None, :, None, None] * (a > 0) / 36  # ReLU passes where a > 0
        expected = (grad.mean((2, 3), keepdim=True) * a).sum(1).relu()
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-7)


def test_bad_inputs_are_refused():
    model = _linear_model()
    with pytest.raises(ValueError, match="float images"):
        saliency.gradient_saliency(model, torch.zeros(2, 3, 5, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="target"):
        saliency.gradient_saliency(model, torch.randn(2, 3, 5, 6), target=9)
    with pytest.raises(ValueError, match="method"):
        saliency.saliency_map(model, torch.randn(2, 3, 5, 6), "lime")
    with pytest.raises(ValueError, match="NaN"):
        saliency.reveal_top_k(torch.randn(1, 3, 2, 2), torch.tensor([[[0.0, float("nan")], [1.0, 2.0]]]), 0.5)
    with pytest.raises(ValueError, match="share"):
        saliency.pixels_for_share(1.5, 10)
    with pytest.raises(ValueError, match="order"):
        saliency.order_ranks("spiral", torch.zeros(1, 2, 2))


# ============================================================================ reveal masks

def test_pixels_for_share_rounds_half_up():
    assert saliency.pixels_for_share(0.05, 4096) == 205  # 204.8
    assert saliency.pixels_for_share(0.15, 4096) == 614  # 614.4
    assert saliency.pixels_for_share(0.5, 3) == 2        # 1.5 rounds up
    assert saliency.pixels_for_share(0.0, 10) == 0 and saliency.pixels_for_share(1.0, 10) == 10


def test_reveal_top_k_keeps_exactly_the_most_salient_pixels():
    torch.manual_seed(5)
    images = torch.randn(4, 3, 7, 9) + 10.0  # never equal to the fill
    sal = torch.rand(4, 7, 9)
    previous = torch.zeros(4, 7, 9, dtype=torch.bool)
    for share in (0.0, 0.05, 0.15, 0.25, 0.5, 0.95, 1.0):
        out = saliency.reveal_top_k(images, sal, share, fill=-1.5)
        kept = (out != -1.5).all(1)
        assert ((out == -1.5).all(1) | kept).all()  # a pixel is kept or filled in every channel
        assert (kept.sum((1, 2)) == round(share * 63 + 1e-9)).all()
        assert torch.equal(out[kept[:, None].expand_as(out)], images[kept[:, None].expand_as(images)])
        for i in range(4):
            if 0 < kept[i].sum() < 63:
                assert sal[i][kept[i]].min() > sal[i][~kept[i]].max()
        assert (kept | ~previous).all()  # nested: a revealed pixel stays revealed
        previous = kept


def test_ties_are_broken_in_raster_order():
    images = torch.ones(2, 3, 3, 4)
    flat = torch.zeros(2, 3, 4)
    flat[1, 2, 3] = 1.0  # one clear winner, the rest tied
    out = saliency.reveal_top_k(images, flat, 0.25, fill=0.0)  # 3 of 12 pixels
    kept = out[:, 0] == 1
    assert kept[0].flatten().tolist() == [True] * 3 + [False] * 9
    assert kept[1].flatten().nonzero().flatten().tolist() == [0, 1, 11]
    again = saliency.reveal_top_k(images, flat, 0.25, fill=0.0)
    assert torch.equal(out, again)


def test_least_salient_and_random_baselines():
    torch.manual_seed(6)
    images = torch.randn(3, 3, 8, 8) + 10.0
    sal = torch.rand(3, 8, 8)
    least = (saliency.reveal_least_salient(images, sal, 0.25) != 0).all(1)
    top = (saliency.reveal_top_k(images, sal, 0.75) != 0).all(1)
    assert (least.sum((1, 2)) == 16).all()
    assert torch.equal(least, ~top)  # the 16 least salient = what the top 48 leave out
    for i in range(3):
        assert sal[i][least[i]].max() < sal[i][~least[i]].min()
    draw = lambda seed: (saliency.reveal_random(images, 0.3, torch.Generator().manual_seed(seed)) != 0).all(1)  # noqa: E731
    assert (draw(0).sum((1, 2)) == 19).all()  # round(0.3 * 64) = 19
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    ranks = saliency.order_ranks("random", sal, torch.Generator().manual_seed(0))
    assert torch.equal(ranks, saliency.order_ranks("random", -sal, torch.Generator().manual_seed(0)))
    assert torch.equal(ranks.flatten(1).sort(1).values, torch.arange(64).expand(3, 64))  # a permutation


# ============================================================================ the script

def test_saliency_map_uncertainties_end_to_end(tiny_synthetic, tiny_checkpoint, tmp_path):
    proc = run_script(ROOT / "saliency_map_uncertainties.py", "--checkpoint", tiny_checkpoint,
                      "--out_dir", tmp_path / "saliency", "--max_images", 12, "--T", 4, "--shares", "5,50,95",
                      "--batch_size", 8, "--n_examples", 4)
    run = tmp_path / "saliency" / "tiny_gradient"  # the checkpoint's run folder + method
    config = json.loads((run / "config.json").read_text())
    assert config["T"] == 4 and config["dataset"] == "synthetic" and config["split_csv"]  # resolved
    per_image = pd.read_csv(run / "per_image.csv")
    assert len(per_image) == 12 * (1 + 3 * 3) and per_image["index"].nunique() == 12
    split = pd.read_csv(tiny_synthetic[1])
    truth = dict(zip(split["path"], split["label"]))
    assert (per_image["label"] == per_image["path"].map(truth)).all()
    assert (per_image["correct"] == (per_image["label"] == per_image["prediction"])).all()
    curves = pd.read_csv(run / "curves.csv")
    assert len(curves) == 1 + 3 * 3 and set(curves["order"]) == {"full_image", *saliency.ORDERS}
    for row in curves.itertuples():
        part = per_image[(per_image["order"] == row.order) & (per_image["share"] == row.share)]
        assert row.n == 12 and row.accuracy == pytest.approx(part["correct"].mean())
        assert row.mean_entropy == pytest.approx(part["predictive_entropy"].mean(), rel=1e-6)
        assert row.n_wrong == (~part["correct"]).sum()
        assert 0 <= row.mean_entropy <= np.log(6) + 1e-6
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_images"] == 12 and summary["method"] == "gradient" and summary["shares"] == [5, 50, 95]
    full = curves[curves["order"] == "full_image"].iloc[0]
    assert summary["full_image"]["accuracy"] == pytest.approx(full["accuracy"])
    for order, s in summary["orders"].items():
        curve = curves[curves["order"] == order]
        reach = curve[curve["accuracy"] >= summary["reach_target_accuracy"] - 1e-12]["share"]
        assert s["share_reaching_full_accuracy"] == (reach.min() if len(reach) else None)
        assert s["peak_entropy_share"] == curve.loc[curve["mean_entropy"].idxmax(), "share"]
    examples = np.load(run / "examples.npz")
    assert examples["images"].shape[1:] == (1, 24, 24) and examples["saliency"].shape[1:] == (24, 24)  # grey: 1 channel
    assert 1 <= len(examples["images"]) <= 4
    assert (examples["mask_saliency"].sum((1, 2)) == saliency.pixels_for_share(0.25, 576)).all()
    assert (run / "examples.png").stat().st_size > 0 and "full image: accuracy" in proc.stdout
    figures = tmp_path / "figures"
    names = [p.name for fn in (plot_results.plot_saliency_curves, plot_results.plot_saliency_examples)
             for p in fn(tmp_path, figures)]
    for name in ("saliency_curves_tiny_gradient.png", "saliency_examples_tiny_gradient.png"):
        assert name in names and (figures / name).stat().st_size > 0


def test_gradcam_run_in_process(tiny_checkpoint, tmp_path):
    cfg = parse_config(smu.Config, ["--checkpoint", str(tiny_checkpoint), "--method", "gradcam", "--max_images", "10",
                                    "--T", "3", "--shares", "25,75", "--orders", "saliency,random",
                                    "--n_examples", "0", "--out_dir", str(tmp_path), "--run_name", "cam"])
    result = smu.main(cfg)
    curves = pd.read_csv(tmp_path / "cam" / "curves.csv")
    assert sorted(curves["order"].unique()) == ["full_image", "random", "saliency"]
    assert result["method"] == "gradcam" and set(result["orders"]) == {"saliency", "random"}
    assert not (tmp_path / "cam" / "examples.npz").exists()  # --n_examples 0
    verdict = result["saliency_reaches_full_accuracy_with_fewer_pixels_than_random"]
    s, r = (result["orders"][k]["share_reaching_full_accuracy"] for k in ("saliency", "random"))
    assert verdict == (s is not None and (r is None or s < r))


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(smu.Config, ["--help"], description=smu.__doc__)
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--method", "--shares", "--orders", "--fill", "--T", "--max_images", "--checkpoint"):
        assert flag in out
    for args in (["--shares", "0,50"], ["--shares", "5,5"], ["--orders", "saliency,spiral"], ["--method", "lime"],
                 ["--T", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(smu.Config, args)
        assert exit_info.value.code == 2 and "error" in capsys.readouterr().err, args
    with pytest.raises(SystemExit) as exit_info:
        run_main(smu.main, smu.Config(checkpoint="/nonexistent/best.pt"))
    assert exit_info.value.code == 1 and "checkpoint not found" in capsys.readouterr().err
