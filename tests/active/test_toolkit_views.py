"""The views the toolkit's models are tested, validated and queried through, and its query budget,
as in its code at the commit of the published table (pycls/datasets/data.py, pycls/al/Sampling.py,
pycls/al/vaal_util.py, tools/train_al.py at 7f679d9): test, validation and the scoring strategies
read the eval ops (RandomCrop(32, 4) kept, no flip); BALD calls get_predictions T times, so each
pass draws a new crop, DBAL one crop per image for its T passes; coreset's features and VAAL's
inputs come through the train ops (crop + flip); 5,000 of the 50,000 training images per episode."""
import pytest
import torch
import torch.nn.functional as F

import active_learning as al
from safehil.active import acquisition, vaal
from safehil.active.acquisition import Pool
from safehil.data.augment import view_augmenter
from safehil.data.datasets import ImageSet
from safehil.settings.recipes import RECIPES
from safehil.training.models import build_model
from safehil.training.training import fit

CPU = torch.device("cpu")
MEAN, STD = 0.5, 0.25
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def bright_set(n=6, size=16, seed=0) -> ImageSet:
    """uint8 images [n, 3, size, size] with every pixel in 100..255: a black (zero) pixel in what the
    network sees can only come from the zero padding of a random crop."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(100, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 2, [f"i{k}" for k in range(n)], ["a", "b"])


def seen_by_first_conv(model, calls):
    """Record (network in training mode?, de-normalised input) of every call of the first conv."""
    def hook(module, inputs):
        calls.append((model.training, inputs[0].detach() * STD + MEAN))
    return model.features[0].register_forward_pre_hook(hook)


def padded_windows(image, padding=4, flips=True):
    """Every H x W window of the zero-padded image [C, H, W] (and of its mirror image): [K, C, H, W]."""
    c, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return torch.stack(crops + ([crop.flip(-1) for crop in crops] if flips else []))


def is_window(seen, image, flips):
    """Is the view `seen` [C, H, W] one of the image's padded windows (or of its mirror when `flips`)?"""
    return any(torch.allclose(seen, w, atol=1e-5) for w in padded_windows(image.float() / 255, flips=flips))


def test_the_toolkit_recipe_names_its_published_views_and_budget_and_the_paper_recipe_none():
    toolkit, paper = RECIPES["toolkit"], RECIPES["paper"]
    assert (toolkit.eval_augmentation, toolkit.feature_augmentation, toolkit.share_of) == ("crop", "crop_flip",
                                                                                          "pool_and_valid")
    assert (paper.eval_augmentation, paper.feature_augmentation, paper.share_of) == ("none", "none", "pool")
    assert view_augmenter("none") is None


def test_the_eval_view_is_a_padded_random_crop_never_a_mirror():
    data = bright_set(n=16)
    x = data.images.float() / 255
    out = view_augmenter("crop")(x, torch.Generator().manual_seed(0))
    assert all(is_window(o, i, flips=False) for o, i in zip(out, data.images))
    assert sum(not torch.equal(o, xi) for o, xi in zip(out, x)) >= 8   # most images are shifted


def test_toolkit_test_scores_see_each_test_image_through_a_random_crop():
    data = bright_set()
    model = build_model("tiny_cnn", 2)
    calls = []
    seen_by_first_conv(model, calls)
    al.test_scores([model], data, MEAN, STD, CPU, view="none")
    assert calls[-1][1].min() > 0.39   # the images themselves: no black pixel
    al.test_scores([model], data, MEAN, STD, CPU, view="crop", view_seed=3)
    training, seen = calls[-1]
    assert not training and seen.min() == pytest.approx(0.0, abs=1e-6)   # padding entered the view
    assert all(is_window(s, i, flips=False) for s, i in zip(seen, data.images))


def test_fit_validates_through_the_eval_crop_drawn_anew_at_each_validation():
    train, valid = bright_set(n=8, seed=1), bright_set(n=6, seed=2)
    model = build_model("tiny_cnn", 2)
    calls = []
    seen_by_first_conv(model, calls)
    fit(model, train, valid, epochs=2, patience=5, batch_size=4, lr=1e-3, mean=MEAN, std=STD, device=CPU, seed=0,
        eval_augment=view_augmenter("crop"))
    validations = [seen for training, seen in calls if not training]
    assert len(validations) == 2
    for seen in validations:
        assert all(is_window(s, i, flips=False) for s, i in zip(seen, valid.images))
    assert not torch.equal(validations[0], validations[1])


def toolkit_pool(n=8, mc_samples=4) -> Pool:
    data = bright_set(n=n)
    labelled = torch.arange(n) % 4 == 0
    return Pool(data, labelled, MEAN, STD, CPU, mc_samples=mc_samples, batch_size=64,
                eval_augment=view_augmenter("crop"), feature_augment=view_augmenter("crop_flip"))


def test_bald_sees_a_new_crop_in_every_pass_and_dbal_one_crop_for_all_its_passes():
    pool = toolkit_pool(mc_samples=4)
    unlabelled = pool.unlabelled_data()
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2, dropout=0.5)
    calls = []
    seen_by_first_conv(model, calls)
    acquisition.bald_sampling(model, pool, 2, torch.Generator().manual_seed(1))
    bald = [seen for _, seen in calls]
    assert len(bald) == 4                                           # one input per MC pass
    assert all(not torch.equal(bald[0], other) for other in bald[1:])   # ... each a new crop
    for seen in bald:
        assert all(is_window(s, i, flips=False) for s, i in zip(seen, unlabelled.images))
    calls.clear()
    acquisition.dbal_sampling(model, pool, 2, torch.Generator().manual_seed(1))
    dbal = [seen for _, seen in calls]
    assert len(dbal) == 1                    # one crop per image: the trunk runs once, dropout T times after it
    assert all(is_window(s, i, flips=False) for s, i in zip(dbal[0], unlabelled.images))


def test_coreset_features_come_through_crop_and_flip_with_the_network_in_eval_mode():
    pool = toolkit_pool(n=12)
    model = build_model("tiny_cnn", 2)
    calls = []
    seen_by_first_conv(model, calls)
    acquisition.coreset_sampling(model, pool, 3, torch.Generator().manual_seed(0))
    (training, seen), = calls
    assert not training
    assert all(is_window(s, i, flips=True) for s, i in zip(seen, pool.data.images))
    mirrored = sum(not is_window(s, i, flips=False) for s, i in zip(seen, pool.data.images))
    assert 1 <= mirrored <= 11   # some views flipped, some not


def test_vaal_trains_and_scores_on_cropped_flipped_normalised_images(monkeypatch):
    pool = toolkit_pool(n=12)
    views = []
    original = vaal.to_model_input

    def recording(images, mean, std, device, augment=None, generator=None, size=None):
        out = original(images, mean, std, device, augment, generator, size)
        views.append((images, out * std + mean, augment))
        return out

    monkeypatch.setattr(vaal, "to_model_input", recording)
    monkeypatch.setattr(vaal, "settings_for", lambda device, variant="released": vaal.VaalSettings(
        latent_dim=4, discriminator_width=8, discriminator_layers=2, vae_width=4, batch_size=4, iterations=2))
    acquisition.vaal_sampling(None, pool, 3, torch.Generator().manual_seed(0))
    assert len(views) == 2 * 2 + 1   # 2 iterations x (labelled, unlabelled) batches, then one scoring batch
    for raw, seen, augment in views:
        assert augment is not None and augment.base == "crop_flip"
        assert all(is_window(s, i, flips=True) for s, i in zip(seen, raw))
    assert min(seen.min() for _, seen, _ in views) == pytest.approx(0.0, abs=1e-6)   # padded crops


def test_toolkit_budget_is_5000_of_50000_per_episode_and_the_paper_recipes_shares_are_of_the_pool():
    toolkit = al.Config(recipe="toolkit", initial_share=0.1, step_share=0.1, final_share=0.6)
    assert al.round_counts(toolkit, 45_000, 5_000) == [5_000, 10_000, 15_000, 20_000, 25_000, 30_000]
    paper = al.Config(recipe="paper", initial_share=0.1, step_share=0.1, final_share=0.6)
    assert al.round_counts(paper, 45_000, 5_000) == [4_500, 9_000, 13_500, 18_000, 22_500, 27_000]
    assert al.round_counts(al.Config(recipe="paper", share_of="pool_and_valid"), 45_000, 5_000)[0] == 5_000
    with pytest.raises(al.InputError, match="the pool holds 40"):
        al.round_counts(al.Config(recipe="toolkit", final_share=0.9), 40, 10)
