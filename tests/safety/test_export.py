"""export.py + deploy.py: a trained checkpoint as an ONNX graph that keeps MC dropout, and
predict.py --onnx scoring with ONNX Runtime exactly like predict.py with the checkpoint.

Needs onnx + onnxruntime (requirements-onnx.txt): without them these tests skip, saying so;
under CI (the CI variable set, .ci/run installs them) a missing package fails instead."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from safehil.safety import deploy
import export
import predict
from safehil.training.models import load_trained_model


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def ort():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as e:
        if in_ci():
            raise
        pytest.skip(f"ONNX export needs onnx and onnxruntime ({e}); pip install -r requirements-onnx.txt")
    return onnxruntime


@pytest.fixture(scope="module")
def images(tiny_synthetic):
    """A folder's worth of real images of the tiny set: 6 of them, two classes."""
    root, _ = tiny_synthetic
    return root


def scored(tmp_path, name, images_dir, **flags) -> pd.DataFrame:
    predict.main(predict.Config(images_dir=str(images_dir), out_dir=str(tmp_path / name), device="cpu", T=4,
                                batch_size=4, **flags))
    return pd.read_csv(tmp_path / name / "predictions.csv")


def test_onnx_scores_real_images_with_the_same_classes_and_probabilities_as_the_checkpoint(ort, tiny_checkpoint,
                                                                                          images, tmp_path):
    out = tmp_path / "export" / "model.onnx"
    sidecar = export.main(export.Config(checkpoints=(str(tiny_checkpoint),), out=str(out)))
    _, meta = load_trained_model(tiny_checkpoint)
    written = json.loads(deploy.sidecar_path(out).read_text())
    assert written == json.loads(json.dumps(sidecar))
    assert written["class_names"] == list(meta["class_names"]) and written["T"] == 20  # the synthetic set's paper T
    entry = written["models"][0]
    assert (entry["mean"], entry["std"], entry["image_size"]) == (meta["mean"], meta["std"], meta["image_size"])
    assert entry["dropout_layers"] == [{"p": 0.5, "channelwise": False, "shape": [64]}]  # tiny_cnn: Dropout(0.5), 64 features
    assert entry["onnx_bytes"] == out.stat().st_size and written["thresholds"] is None
    folder = images / "crazing"
    with_torch = scored(tmp_path, "torch", folder, checkpoints=(str(tiny_checkpoint),))
    with_onnx = scored(tmp_path, "onnx", folder, onnx=str(out))
    assert len(with_torch) == 20 and with_torch["path"].tolist() == with_onnx["path"].tolist()
    assert with_torch["predicted_label"].tolist() == with_onnx["predicted_label"].tolist()
    probability_columns = [f"prob_{c}" for c in meta["class_names"]]
    diff = np.abs(with_torch[probability_columns + ["confidence"]].to_numpy()
                  - with_onnx[probability_columns + ["confidence"]].to_numpy()).max()
    assert diff <= 1e-4  # the same dropout masks: drawn by the same generator, fed to the graph
    assert np.abs(with_torch["uncertainty"] - with_onnx["uncertainty"]).max() <= 1e-4


def test_all_ones_masks_give_the_deterministic_network_to_1e5(ort, tiny_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    export.main(export.Config(checkpoints=(str(tiny_checkpoint),), out=str(out)))
    (network, meta), = deploy.load_bundle(out)[0]
    model, _ = load_trained_model(tiny_checkpoint)
    x = torch.randn(5, 3, meta["image_size"], meta["image_size"], generator=torch.Generator().manual_seed(1))
    ones = np.ones((1, 5, 64), dtype=np.float32)
    probs = network.session.run(["probs"], {"images": x.numpy(), "mask_0": ones})[0][0]
    with torch.no_grad():
        expected = model.eval()(x).softmax(-1).numpy()
    assert np.abs(probs - expected).max() <= 1e-5


def test_a_pair_exports_two_graphs_and_an_edited_graph_is_refused(ort, checkpoint_pair, images, tmp_path):
    a, b = checkpoint_pair
    out = tmp_path / "cascade.onnx"
    sidecar = export.main(export.Config(checkpoints=(str(a), str(b)), out=str(out)))
    assert [m["onnx"] for m in sidecar["models"]] == ["cascade.onnx", "cascade_b.onnx"]
    folder = images / "patches"
    with_torch = scored(tmp_path, "torch", folder, checkpoints=(str(a), str(b)))
    with_onnx = scored(tmp_path, "onnx", folder, onnx=str(out))
    for column in ("predicted_label", "predicted_label_b", "disagreement", "referred"):
        assert with_torch[column].tolist() == with_onnx[column].tolist(), column
    assert np.abs(with_torch["uncertainty_b"] - with_onnx["uncertainty_b"]).max() <= 1e-4
    with pytest.raises(ValueError, match="exists already"):  # an export is never overwritten
        export.main(export.Config(checkpoints=(str(a),), out=str(out)))
    graph = tmp_path / "cascade_b.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256 differs"):
        deploy.load_bundle(out)
