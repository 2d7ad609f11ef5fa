"""Tests for resnet_repro.data.cifar10: Sec. 4.2 augmentation, the per-pixel mean, seeded batch draws."""

import pytest
import torch

from resnet_repro.data.cifar10 import PAD, CIFAR10DataModule, DataConfig, EvalBatches, TrainBatches, crop_and_flip
from resnet_repro.errors import UserError

# 95th..99.9th percentiles are loose enough for a seeded draw and tight enough to catch a skew:
# chi-square critical values at p = 0.001 for 1, 8 and 80 degrees of freedom.
CHI2_999 = {1: 10.83, 8: 26.12, 80: 124.84}


def chi_square(counts: torch.Tensor) -> float:
    """Pearson's statistic of `counts` against a uniform distribution over its cells."""
    counts = counts.double()
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def datamodule(arrays, *, val_split: int = 0, batch_size: int = 16, normalize: str = "per-pixel-mean", seed: int = 0):
    dm = CIFAR10DataModule(
        DataConfig(val_split=val_split, normalize=normalize, full=False),
        batch_size=batch_size,
        max_iters=10,
        seed=seed,
        arrays=arrays,
    )
    dm.setup("fit")
    return dm


# --- crop_and_flip -------------------------------------------------------------------------------


def test_crop_and_flip_keeps_shapes():
    images = random_images(5)
    crop = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [3, 5]])
    flip = torch.tensor([False, True, False, True, True])
    out = crop_and_flip(images, crop, flip)
    assert out.shape == images.shape and out.dtype == images.dtype


def test_crop_and_flip_pads_with_zero_pixels():
    # Sec. 4.2: "4 pixels are padded on each side"; ours are zero pixels (before mean subtraction).
    white = torch.ones(2, 3, 32, 32)
    out = crop_and_flip(white, torch.tensor([[0, 0], [8, 8]]), torch.tensor([False, False]))
    top_left, bottom_right = out[0], out[1]
    assert torch.all(top_left[:, :PAD, :] == 0) and torch.all(top_left[:, :, :PAD] == 0)
    assert torch.all(top_left[:, PAD:, PAD:] == 1)
    assert torch.all(bottom_right[:, -PAD:, :] == 0) and torch.all(bottom_right[:, :, -PAD:] == 0)
    assert torch.all(bottom_right[:, :-PAD, :-PAD] == 1)


def test_crop_and_flip_centre_crop_without_flip_is_identity():
    images = random_images(3)
    out = crop_and_flip(images, torch.full((3, 2), PAD), torch.zeros(3, dtype=torch.bool))
    assert torch.equal(out, images)


def test_crop_and_flip_flip_mirrors_columns():
    images = random_images(3)
    out = crop_and_flip(images, torch.full((3, 2), PAD), torch.ones(3, dtype=torch.bool))
    assert torch.equal(out, images.flip(-1))


def test_crop_and_flip_offset_shifts_the_image():
    images = random_images(1)
    out = crop_and_flip(images, torch.tensor([[PAD + 2, PAD - 3]]), torch.tensor([False]))
    # Row offset +2 moves the content up by 2; column offset -3 moves it right by 3.
    assert torch.equal(out[0, :, :30, 3:], images[0, :, 2:, :29])
    assert torch.all(out[0, :, 30:, :] == 0) and torch.all(out[0, :, :, :3] == 0)


def test_crop_and_flip_each_image_gets_its_own_draw():
    images = random_images(2)
    crop = torch.tensor([[PAD, PAD], [PAD, PAD]])
    out = crop_and_flip(images, crop, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


# --- TrainBatches: draws as a pure function of (seed, iteration) ----------------------------------


def test_train_batches_same_seed_and_iteration_same_batch():
    a = TrainBatches(1000, 128, seed=3, stop=100)
    b = TrainBatches(1000, 128, seed=3, stop=100)
    b.batch(50)  # a different history must not matter
    for it in (0, 7, 99):
        x, y = a.batch(it), b.batch(it)
        assert all(torch.equal(x[k], y[k]) for k in ("index", "crop", "flip"))


def test_train_batches_other_seed_other_batch():
    a, b = TrainBatches(1000, 128, seed=0, stop=10).batch(0), TrainBatches(1000, 128, seed=1, stop=10).batch(0)
    assert not torch.equal(a["index"], b["index"]) and not torch.equal(a["crop"], b["crop"])


@pytest.mark.parametrize("n_images, batch_size", [(80, 16), (50, 16), (50_000, 128)])
def test_train_batches_each_pass_is_a_permutation(n_images, batch_size):
    # Positions i*B..(i+1)*B of one endless stream of seeded permutations: every image exactly once
    # per n_images positions, batches wrapping across passes (n_images need not divide by B).
    passes = 3 if n_images < 1000 else 1
    batches = TrainBatches(n_images, batch_size, seed=0, stop=10**6)
    n_iters = -(-passes * n_images // batch_size)
    stream = torch.cat([batches.batch(it)["index"] for it in range(n_iters)])[: passes * n_images]
    epochs = stream.view(passes, n_images)
    for epoch in epochs:
        assert torch.equal(epoch.sort().values, torch.arange(n_images))
    if passes > 1:
        assert not torch.equal(epochs[0], epochs[1])  # a fresh shuffle each pass


def test_train_batches_iterates_from_the_start_fn_to_stop():
    start = {"value": 0}
    batches = TrainBatches(80, 16, seed=0, stop=9, start_fn=lambda: start["value"])
    assert len(list(batches)) == 9
    start["value"] = 6  # a resumed trainer's global step
    resumed = list(batches)
    assert len(resumed) == 3 and torch.equal(resumed[0]["index"], batches.batch(6)["index"])


def test_train_batches_two_ranks_split_the_global_batch():
    whole = TrainBatches(1000, 128, seed=5, stop=10).batch(4)
    ranks = [TrainBatches(1000, 128, seed=5, stop=10, rank=r, world_size=2).batch(4) for r in (0, 1)]
    assert all(len(r["index"]) == 64 for r in ranks)
    assert not set(ranks[0]["index"].tolist()) & set(ranks[1]["index"].tolist())
    for key in ("index", "crop", "flip"):
        assert torch.equal(torch.cat([r[key] for r in ranks]), whole[key])


def test_train_batches_rejects_a_batch_that_does_not_split_over_devices():
    with pytest.raises(UserError, match="divide evenly"):
        TrainBatches(1000, 128, seed=0, stop=10, world_size=3)


def test_train_batches_crops_and_flips_are_uniform():
    # 200 x 128 seeded draws: offsets uniform on 0..8 per axis and jointly, flips 50/50.
    batches = TrainBatches(50_000, 128, seed=0, stop=200)
    draws = [batches.batch(it) for it in range(200)]
    crop = torch.cat([d["crop"] for d in draws])
    flip = torch.cat([d["flip"] for d in draws])
    assert crop.min() == 0 and crop.max() == 2 * PAD
    for axis in (0, 1):
        assert chi_square(torch.bincount(crop[:, axis], minlength=9)) < CHI2_999[8]
    assert chi_square(torch.bincount(crop[:, 0] * 9 + crop[:, 1], minlength=81)) < CHI2_999[80]
    assert chi_square(torch.bincount(flip.long(), minlength=2)) < CHI2_999[1]


def test_chi_square_catches_a_skewed_draw():
    # The uniformity test above can fail: a draw that never uses offset 8 is far over the bound.
    skewed = torch.randint(0, 2 * PAD, (25_600,), generator=torch.Generator().manual_seed(0))
    assert chi_square(torch.bincount(skewed, minlength=9)) > CHI2_999[8]


def test_eval_batches_cover_each_image_once_across_ranks():
    seen = torch.cat([chunk["index"] for r in (0, 1) for chunk in EvalBatches("test", 1001, 300, r, 2)])
    assert torch.equal(seen.sort().values, torch.arange(1001))
    assert len(EvalBatches("test", 1001, 300)) == 4


# --- the data module: per-pixel mean, val split, the batch on the device ---------------------------


def test_datamodule_mean_is_the_per_pixel_mean_of_training_images(tiny_cifar):
    # Sec. 4.2: "the per-pixel mean subtracted": a 3x32x32 image, not one value per channel.
    dm = datamodule(tiny_cifar)
    expected = tiny_cifar.train_images.double().mean(0) / 255
    assert dm.mean.shape == (3, 32, 32)
    assert torch.allclose(dm.mean.double(), expected, atol=1e-6)
    assert torch.all(dm.std == 1)


def test_datamodule_val_split_is_held_out_of_training_and_the_mean(tiny_cifar):
    dm = datamodule(tiny_cifar, val_split=16)
    n = len(tiny_cifar.train_labels)
    val = dm.val_indices
    train = torch.tensor(sorted(set(range(n)) - set(val.tolist())))
    assert len(val) == 16 and len(set(val.tolist())) == 16 and len(dm._split["train"][0]) == n - 16
    assert torch.equal(dm._split["val"][0], tiny_cifar.train_images[val])
    assert torch.equal(dm._split["train"][0], tiny_cifar.train_images[train])
    expected = tiny_cifar.train_images[train].double().mean(0) / 255
    assert torch.allclose(dm.mean.double(), expected, atol=1e-6)
    assert not torch.allclose(dm.mean.double(), tiny_cifar.train_images.double().mean(0) / 255, atol=1e-4)
    assert dm.eval_splits == ["test", "val"]
    assert dm.state_dict()["val_indices"] == val.tolist()


def test_datamodule_val_split_is_one_fixed_split_for_every_seed(tiny_cifar):
    # The paper held out one 45k/5k split; runs with other seeds must validate on the same images.
    first, again = datamodule(tiny_cifar, val_split=16), datamodule(tiny_cifar, val_split=16)
    other = datamodule(tiny_cifar, val_split=16, seed=1)
    assert torch.equal(first.val_indices, again.val_indices)
    assert torch.equal(first.val_indices, other.val_indices)
    assert not torch.equal(first.val_indices, torch.arange(16))  # shuffled, not the first images


@pytest.mark.parametrize("val_split", [-1, 80, 1000])
def test_datamodule_rejects_a_val_split_that_leaves_nothing(tiny_cifar, val_split):
    with pytest.raises(UserError, match="--val-split"):
        datamodule(tiny_cifar, val_split=val_split)


def test_datamodule_rejects_unknown_normalisation(tiny_cifar):
    with pytest.raises(UserError, match="per-pixel-mean"):
        datamodule(tiny_cifar, normalize="imagenet")


def test_datamodule_per_channel_switch_normalises_each_channel(tiny_cifar):
    dm = datamodule(tiny_cifar, normalize="per-channel")
    pixels = tiny_cifar.train_images.double() / 255
    assert dm.mean.shape == dm.std.shape == (3, 1, 1)
    assert torch.allclose(dm.mean.flatten().double(), pixels.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(dm.std.flatten().double(), pixels.std(dim=(0, 2, 3)), atol=1e-5)


def test_datamodule_train_batch_pads_zero_pixels_then_subtracts_the_mean(tiny_cifar):
    dm = datamodule(tiny_cifar)
    index = torch.tensor([3, 17])
    batch = {
        "split": "train",
        "index": index,
        "crop": torch.tensor([[0, 0], [PAD, PAD]]),
        "flip": torch.tensor([False, True]),
    }
    x, y, split = dm.on_after_batch_transfer(batch, 0)
    pixels = tiny_cifar.train_images[index].float() / 255
    assert x.shape == (2, 3, 32, 32) and split == "train" and torch.equal(y, tiny_cifar.train_labels[index])
    # The border is a zero pixel minus the mean (not the mean colour, as padding after normalising gives).
    assert torch.allclose(x[0, :, :PAD, :], -dm.mean[:, :PAD, :], atol=1e-6)
    assert torch.allclose(x[0, :, PAD:, PAD:], pixels[0, :, :-PAD, :-PAD] - dm.mean[:, PAD:, PAD:], atol=1e-6)
    assert torch.allclose(x[1], pixels[1].flip(-1) - dm.mean, atol=1e-6)


def test_datamodule_test_batch_is_the_single_original_view(tiny_cifar):
    dm = datamodule(tiny_cifar)
    index = torch.arange(5)
    x, y, split = dm.on_after_batch_transfer({"split": "test", "index": index}, 0)
    expected = tiny_cifar.test_images[index].float() / 255 - dm.mean
    assert split == "test" and torch.allclose(x, expected, atol=1e-6)
    assert torch.equal(y, tiny_cifar.test_labels[index])


def test_datamodule_loaders_yield_the_seeded_draws(tiny_cifar):
    dm = datamodule(tiny_cifar, batch_size=16, seed=2)
    batches = list(dm.train_dataloader())
    assert len(batches) == 10  # max_iters
    expected = TrainBatches(len(tiny_cifar.train_labels), 16, seed=2, stop=10).batch(3)
    assert torch.equal(batches[3]["index"], expected["index"]) and torch.equal(batches[3]["crop"], expected["crop"])
    (test_loader,) = dm.val_dataloader()
    assert torch.equal(torch.cat([b["index"] for b in test_loader]), torch.arange(len(tiny_cifar.test_labels)))


def test_real_cifar_mean_image_of_the_45k_training_images(real_cifar):
    # The paper's protocol: 45k/5k split; the mean is over the 45k images trained on.
    dm = datamodule(real_cifar, val_split=5000, batch_size=128)
    keep = torch.ones(50_000, dtype=torch.bool)
    keep[dm.val_indices] = False
    expected = real_cifar.train_images[keep].sum(0, dtype=torch.float64) / (45_000 * 255)
    assert len(dm._split["train"][0]) == 45_000 and len(dm._split["val"][0]) == 5_000
    assert torch.allclose(dm.mean.double(), expected, atol=1e-5)
    # The widely quoted CIFAR-10 channel means (0.491, 0.482, 0.447) are this image's channel averages.
    assert torch.allclose(dm.mean.mean(dim=(1, 2)), torch.tensor([0.491, 0.482, 0.447]), atol=0.01)


@pytest.mark.parametrize("channels_last", [True, False])
def test_datamodule_batches_follow_the_specs_memory_layout(tiny_cifar, channels_last):
    dm = CIFAR10DataModule(
        DataConfig(full=False), batch_size=8, max_iters=2, seed=0, arrays=tiny_cifar, channels_last=channels_last
    )
    dm.setup("fit")
    x, _, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert x.is_contiguous() != channels_last
