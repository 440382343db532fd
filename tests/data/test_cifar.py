"""CIFAR-10/100 adapters: a tiny replica written in the python-pickle layout of the downloads (no
download, no torchvision checksum check) reads back as the exact pixels and labels, with train /
valid (10 %, stratified, seeded) / test splits, from the data root or the batch folder itself."""
import pickle

import numpy as np
import pytest

from safehil.data import cifar
import torch

from safehil.data.augment import image_mean_std, to_model_input
from safehil.data.datasets import load_image_sets, load_split_table, normalisation_for
from safehil.core.utils import InputError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def replica_images(labels, seed):
    """uint8 [N, 3072] in CIFAR's R, G, B plane order: a class colour (the class number in base 3
    picks each channel's level) plus noise, so a small network can tell the classes apart."""
    rng = np.random.default_rng(seed)
    levels = np.array([[(c // 3 ** k) % 3 for k in range(3)] for c in labels]) * 90 + 30   # [N, 3]
    planes = levels[:, :, None] + rng.integers(-25, 26, (len(labels), 3, 32 * 32))
    return np.clip(planes, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def _dump(path, batch):
    """Pickle with bytes keys, as the download's Python 2 pickles read with encoding='bytes'."""
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in batch.items()}, f, protocol=2)


def write_cifar10_replica(root, train_per_class=10, test_per_class=3, seed=0):
    """`root/cifar-10-batches-py/` with data_batch_1..5, test_batch and batches.meta -> that folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train = rng.permutation(np.repeat(np.arange(10), train_per_class))
    for i, part in enumerate(np.array_split(train, 5), start=1):
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                           "labels": part.tolist(), "data": replica_images(part, seed + i)})
    test = np.repeat(np.arange(10), test_per_class)
    _dump(folder / "test_batch", {"labels": test.tolist(), "data": replica_images(test, seed + 99)})
    _dump(folder / "batches.meta", {"label_names": [n.encode() for n in CIFAR10_NAMES], "num_vis": 3072})
    return folder


def write_cifar100_replica(root, classes=4, train_per_class=10, test_per_class=2):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = np.repeat(np.arange(classes), train_per_class), np.repeat(np.arange(classes), test_per_class)
    _dump(folder / "train", {"fine_labels": train.tolist(), "coarse_labels": (train // 2).tolist(),
                             "data": replica_images(train, 1)})
    _dump(folder / "test", {"fine_labels": test.tolist(), "coarse_labels": (test // 2).tolist(),
                            "data": replica_images(test, 2)})
    _dump(folder / "meta", {"fine_label_names": [f"fine_{c}".encode() for c in range(classes)],
                            "coarse_label_names": [b"coarse_0", b"coarse_1"]})
    return folder


@pytest.fixture(autouse=True)
def png_folder_in_tmp(tmp_path, monkeypatch):
    """The PNG copies go under the test's own folder, never into the repository's data/."""
    monkeypatch.setattr(cifar, "default_cifar_dir", lambda: tmp_path / "png_copies")


def test_cifar10_reads_back_the_exact_pixels_and_labels(tmp_path):
    folder = write_cifar10_replica(tmp_path / "download")
    table, root = load_split_table("cifar10", tmp_path / "download", seed=0)
    sets = load_image_sets(table, root, 32, class_names=CIFAR10_NAMES)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    expected = np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32)
    order = np.argsort([p for p in sets["test"].paths])   # test_00000.png, test_00001.png, ... = batch order
    assert np.array_equal(sets["test"].images.numpy()[order], expected)
    assert sets["test"].labels[order].tolist() == batch[b"labels"]


def test_cifar10_holds_out_a_stratified_seeded_tenth_of_train_as_valid(tmp_path):
    write_cifar10_replica(tmp_path / "download", train_per_class=20)
    table, _ = load_split_table("cifar10", tmp_path / "download", seed=0)
    counts = table.groupby(["split", "label"]).size().unstack(0)
    assert (counts["valid"] == 2).all() and (counts["train"] == 18).all() and (counts["test"] == 3).all()
    again, _ = load_split_table("cifar10", tmp_path / "download", seed=0)
    other, _ = load_split_table("cifar10", tmp_path / "download", seed=1)
    valid = set(table.loc[table["split"] == "valid", "path"])
    assert valid == set(again.loc[again["split"] == "valid", "path"])
    assert valid != set(other.loc[other["split"] == "valid", "path"])


def test_cifar_data_dir_may_be_the_root_or_the_batch_folder(tmp_path):
    folder = write_cifar10_replica(tmp_path / "download")
    from_root, root_a = load_split_table("cifar10", tmp_path / "download")
    from_folder, root_b = load_split_table("cifar10", folder)
    assert root_a == root_b and from_root.equals(from_folder)


def test_cifar_normalisation_is_the_toolkits_per_channel_pair_not_the_train_splits_scalar(tmp_path):
    write_cifar10_replica(tmp_path / "download")
    table, root = load_split_table("cifar10", tmp_path / "download")
    sets = load_image_sets(table, root, 32)
    published = ((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))   # pycls/datasets/data.py Normalize
    for name in ("cifar10", "cifar100"):
        assert normalisation_for(name, sets["train"]) == published
    assert normalisation_for("cifar10", sets["train"]) != image_mean_std(sets["train"].images)
    x = to_model_input(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), *published, torch.device("cpu"))
    expected = [(1 - m) / s for m, s in zip(*published)]   # each channel by its own mean and std
    assert x[0, :, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    write_cifar100_replica(tmp_path / "download")
    table, root = load_split_table("cifar100", tmp_path / "download" / "cifar-100-python")
    assert sorted(table["label"].unique()) == [f"fine_{c}" for c in range(4)]
    assert table.groupby("split").size().to_dict() == {"test": 8, "train": 36, "valid": 4}
    sets = load_image_sets(table, root, 32)
    assert sets["train"].images.shape == (36, 3, 32, 32)


def test_missing_cifar_batches_are_named(tmp_path):
    folder = write_cifar10_replica(tmp_path / "download")
    (folder / "data_batch_3").unlink()
    with pytest.raises(InputError, match="data_batch_3"):
        load_split_table("cifar10", tmp_path / "download")
    with pytest.raises(InputError, match="cifar-10-batches-py"):
        load_split_table("cifar10", tmp_path / "elsewhere")
