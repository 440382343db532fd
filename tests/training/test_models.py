"""Model shapes, heads, freezing, trunk/head split and weight loading."""
import pytest
import torch
import torch.nn as nn

from safehil.training.models import build_model, enable_mc_dropout, has_dropout, load_trained_model, split_trunk_head
from safehil.core.utils import save_checkpoint


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "vgg16", "efficientnet_b0"])
def test_output_shape_and_trunk_head_equivalence(name):
    torch.manual_seed(0)
    model = build_model(name, 6).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        trunk, head = split_trunk_head(model)
        assert out.shape == (2, 6)
        assert torch.allclose(head(trunk(x)), out, atol=1e-5)
    assert not has_dropout(trunk) and has_dropout(head)


def test_paper_heads():
    r = build_model("resnet18", 4)
    assert isinstance(r.fc[0], nn.Dropout) and r.fc[0].p == 0.5 and r.fc[1].out_features == 4
    v = build_model("vgg16", 4)
    assert [m.p for m in v.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert v.classifier[6].out_features == 4
    e = build_model("efficientnet_b0", 4)
    assert e.classifier[0].p == 0.2 and e.classifier[1].out_features == 4


def test_freezing_flag():
    r = build_model("resnet18", 3, freeze=True)
    assert not any(p.requires_grad for m in (r.layer1, r.layer2, r.layer3) for p in m.parameters())
    assert all(p.requires_grad for m in (r.conv1, r.bn1, r.layer4) for p in m.parameters())  # R4VR: stem trains
    v = build_model("vgg16", 3, freeze=True)
    assert not any(p.requires_grad for p in v.features.parameters())
    assert all(p.requires_grad for p in build_model("resnet18", 3).parameters())


def test_weights_path_tolerates_other_head(tmp_path):
    src = build_model("resnet18", 10)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model("resnet18", 3, weights=str(tmp_path / "w.pt"), freeze=False)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    assert dst.fc[1].out_features == 3


def test_enable_mc_dropout_keeps_batchnorm_in_eval():
    model = enable_mc_dropout(build_model("tiny_cnn", 3))
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout))


def test_load_trained_model_rejects_mismatch(tmp_path):
    model = build_model("tiny_cnn", 3)
    ckpt = {"model": model.state_dict(), "model_name": "tiny_cnn", "class_names": ["a", "b", "c"], "mean": 0.5,
            "std": 0.25, "image_size": 16}
    save_checkpoint(tmp_path / "ok.pt", ckpt)
    loaded, meta = load_trained_model(tmp_path / "ok.pt")
    assert meta["class_names"] == ["a", "b", "c"] and not loaded.training
    save_checkpoint(tmp_path / "bad.pt", {**ckpt, "class_names": ["a", "b"]})
    with pytest.raises(ValueError, match="bad.pt: weights do not match"):
        load_trained_model(tmp_path / "bad.pt")


class NotAWeight:
    pass


def test_unsafe_checkpoint_refused(tmp_path):
    # any class outside the weights_only allow-list stands in for "arbitrary code"
    torch.save({"obj": NotAWeight()}, tmp_path / "evil.pt")
    from safehil.core.utils import load_checkpoint
    with pytest.raises(ValueError, match="evil.pt: refused"):
        load_checkpoint(tmp_path / "evil.pt")
