"""Native size: an image already at the target size reaches the network with its exact pixels
(neither resized nor cropped), through class folders, the memory-mapped cache and the CIFAR adapter;
an image of another size still goes through resize + centre crop."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from safehil.data import cifar
from safehil.data.cache import decode_for_cache
from safehil.data.datasets import load_image_sets, load_split_table
from conftest import RecordInput
from test_cifar import write_cifar10_replica
from safehil.training.training import predict


def network_input_pixels(image_set) -> np.ndarray:
    """The uint8 pixels the network receives (predict's input with mean 0, std 1, times 255): [N, 3, S, S]."""
    net = RecordInput(len(image_set.class_names))
    predict(net, image_set, mean=0.0, std=1.0, device=torch.device("cpu"))
    return (torch.cat(net.seen) * 255).round().to(torch.uint8).numpy()


def border_class_images(n, seed):
    """uint8 [n, 32, 32, 3] noise images whose class (0 or 1) is written only in the outermost pixel ring."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 196, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    ring = np.ones((32, 32), bool)
    ring[1:-1, 1:-1] = False
    images[:, ring] = np.where(labels[:, None, None] == 1, 255, 0).astype(np.uint8)
    return images, labels


@pytest.fixture(autouse=True)
def png_folder_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "default_cifar_dir", lambda: tmp_path / "png_copies")


@pytest.mark.parametrize("cached", [False, True])
def test_a_32_px_image_in_class_folders_reaches_the_network_unchanged(tmp_path, cached):
    images, labels = border_class_images(12, seed=0)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    table, root = load_split_table("folders", tmp_path / "data", seed=0)
    table = table.assign(split="test")
    sets = load_image_sets(table, root, 32, cache_dir=tmp_path / "cache" if cached else None)
    expected = {f"class_{label}/{i:02d}.png": image.transpose(2, 0, 1) for i, (image, label)
                in enumerate(zip(images, labels))}
    seen = network_input_pixels(sets["test"])
    assert len(seen) == 12
    for path, pixels in zip(sets["test"].paths, seen):
        assert np.array_equal(pixels, expected[path])   # the one-pixel ring (the class) included


def test_a_32_px_cifar_image_reaches_the_network_unchanged(tmp_path):
    folder = write_cifar10_replica(tmp_path / "download")
    table, root = load_split_table("cifar10", tmp_path / "download", seed=0)
    sets = load_image_sets(table, root, 32)
    with open(folder / "test_batch", "rb") as f:
        expected = np.asarray(pickle.load(f, encoding="bytes")[b"data"]).reshape(-1, 3, 32, 32)
    order = np.argsort(sets["test"].paths)
    assert np.array_equal(network_input_pixels(sets["test"])[order], expected)
    assert Image.open(root / sets["test"].paths[0]).size == (32, 32)  # plain files, no reflected border


def test_an_image_of_another_size_is_still_resized_and_centre_cropped(tmp_path):
    ramp = np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (40, 1, 3))  # brightness rises left to right
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    out = decode_for_cache(tmp_path / "ramp.png", 32)
    assert out.shape == (3, 32, 32)
    # 40 -> 37 (256/224 * 32), crop the centre 32: the first column is not the file's first column
    assert out[0, 0, 0] > ramp[0, 0, 0] and out[0, 0, -1] < ramp[0, -1, 0]
