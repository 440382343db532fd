"""The active-learning toolkit's protocol pieces: RandomCrop(32, padding 4) + flip as a base
augmentation, and the toolkit recipe's constants."""
import torch
import torch.nn.functional as F

from augment import Augmenter, random_crop_padded


def windows_of(image, padding):
    """Every H x W window of the zero-padded image [C, H, W] and of its mirror image: [K, C, H, W]."""
    c, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_random_crop_cuts_a_window_of_the_zero_padded_image():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1   # no zeros inside
    out = random_crop_padded(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    offsets = set()
    for image, crop in zip(x, out):
        padded = F.pad(image, (4,) * 4)
        hits = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(padded[:, dy:dy + 32, dx:dx + 32], crop)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 8   # each image has its own offset


def test_crop_flip_base_gives_a_padded_window_or_its_mirror_and_both_happen():
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.1
    out = Augmenter("neu", base="crop_flip")(x, torch.Generator().manual_seed(3))
    flipped = 0
    for image, crop in zip(x, out):
        candidates = windows_of(image, 4)
        match = [k for k in range(len(candidates)) if torch.equal(candidates[k], crop)]
        assert match, "not a window of the padded image nor of its mirror"
        flipped += match[0] >= len(candidates) // 2
    assert 4 <= flipped <= 28
    again = Augmenter("neu", base="crop_flip")(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)   # all randomness from the generator
