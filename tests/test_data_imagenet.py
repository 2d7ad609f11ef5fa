"""Tests for resnet_repro.data.imagenet: Sec. 3.4's sources, augmentation and seeded batch draws, on generated JPEGs."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data import imagenet
from resnet_repro.data.imagenet import (
    PCA_EIGVAL,
    PCA_EIGVEC,
    DataWarning,
    ImageNetConfig,
    ImageNetDataModule,
    decode,
    scale_crop_flip,
)
from resnet_repro.errors import DataError, UserError

# pytest shows every DeprecationWarning; torchvision 0.29 warns on each decode (see the module's filter).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

WNIDS = ("n01440764", "n01443537", "n01484850")
PER_CLASS = {"train": 4, "val": 2}
SIZES = ((500, 375), (375, 500))  # width x height: ImageNet's common landscape and portrait sizes


def write_jpegs(root: Path, seed: int = 0, sizes=SIZES) -> Path:
    """root/{train,val}/<wnid>/*.JPEG: smooth seeded RGB images (quality 90), alternating `sizes` (width x height,
    by default ImageNet's common 500x375 and 375x500)."""
    rng = np.random.default_rng(seed)
    k = 0
    for split, count in PER_CLASS.items():
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                width, height = sizes[k % 2]
                coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height))
                noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
                Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
                k += 1
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The same generated images as an ImageFolder root and as a prepared torchvision ImageNet root."""
    folder = write_jpegs(tmp_path_factory.mktemp("imagenet") / "imagefolder")
    tv = tmp_path_factory.mktemp("imagenet") / "torchvision"
    shutil.copytree(folder, tv)
    names = {wnid: (f"class {i}", f"alias {i}") for i, wnid in enumerate(WNIDS)}
    val_wnids = [wnid for wnid in WNIDS for _ in range(PER_CLASS["val"])]
    torch.save((names, val_wnids), tv / "meta.bin")  # what torchvision's parse_devkit_archive writes
    return {"imagefolder": folder, "torchvision": tv}


@pytest.fixture
def copy_of(roots, tmp_path):
    """Factory: a fresh, modifiable copy of the ImageFolder root."""

    def make() -> Path:
        return Path(shutil.copytree(roots["imagefolder"], tmp_path / "copy"))

    return make


def datamodule(root, *, batch_size: int = 4, seed: int = 0, trainer=None, **config) -> ImageNetDataModule:
    config = {"subset": len(WNIDS), "eval_batch_size": 4, "workers": 0, **config}
    dm = ImageNetDataModule(ImageNetConfig(str(root), **config), batch_size=batch_size, max_iters=10, seed=seed)
    dm.trainer = trainer
    dm.setup("fit")
    return dm


def stub_trainer(global_step: int = 0, rank: int = 0, world_size: int = 1):
    return SimpleNamespace(global_step=global_step, global_rank=rank, world_size=world_size)


def first_batch(loader) -> dict:
    return next(iter(loader))


# --- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["imagefolder", "torchvision"])
def test_discovers_sorted_classes_and_both_splits(roots, kind):
    dm = datamodule(roots[kind])
    assert dm.classes == WNIDS
    assert {k: dm.source[k] for k in ("kind", "classes", "train", "val", "subset")} == {
        "kind": kind,
        "classes": 3,
        "train": 12,
        "val": 6,
        "subset": 3,
    }
    assert dm.source["root"] == str(roots[kind].resolve()) and "found" not in dm.source
    for split in ("train", "val"):
        files = dm.files[split]
        # Labels index the sorted wnids: each file lies in its label's folder.
        assert [Path(files.path(i)).parent.name for i in range(len(files))] == [dm.classes[y] for y in files.labels]
    assert dm.names == ({} if kind == "imagefolder" else {w: (f"class {i}", f"alias {i}") for i, w in enumerate(WNIDS)})
    assert dm.eval_splits == ["test"] and dm.val_indices is None


def test_subset_takes_the_first_wnids_of_train_and_the_same_in_val(roots):
    dm = datamodule(roots["imagefolder"], subset=2)
    assert dm.classes == WNIDS[:2] and dm.source["subset"] == 2
    assert (dm.source["train"], dm.source["val"]) == (8, 4)
    assert set(dm.files["val"].labels.tolist()) == {0, 1}


def test_class_count_other_than_ilsvrc_is_a_one_line_error(roots):
    with pytest.raises(DataError, match=r"has 3 classes in train/, not ILSVRC-2012's 1000; .*--subset N") as info:
        datamodule(roots["imagefolder"], subset=None)
    assert "\n" not in str(info.value)
    assert datamodule(roots["imagefolder"], subset=3).classes == WNIDS
    with pytest.raises(UserError, match="--subset 4 must be between 1 and the 3 classes"):
        datamodule(roots["imagefolder"], subset=4)


def test_sizes_other_than_ilsvrc_are_reported_not_fatal(roots, monkeypatch):
    monkeypatch.setattr(imagenet, "ILSVRC2012_CLASSES", 3)  # pretend the generated copy has the full class count
    with pytest.warns(DataWarning, match="has 12 train / 6 val images, not ILSVRC-2012's 1,281,167 / 50,000"):
        dm = datamodule(roots["imagefolder"], subset=None)
    assert dm.source["found"] == {"classes": 3, "train": 12, "val": 6} and dm.source["subset"] is None


def test_train_and_val_classes_must_match(copy_of, monkeypatch):
    monkeypatch.setattr(imagenet, "ILSVRC2012_CLASSES", 3)
    root = copy_of()
    (root / "val" / WNIDS[2]).rename(root / "val" / "n09999999")
    with pytest.raises(DataError, match=r"different classes \(1 only in train/, e.g. n01484850; 1 only in val/"):
        datamodule(root, subset=None)
    with pytest.raises(DataError, match="first 3 train/ classes have no val/ folder"):
        datamodule(root, subset=3)
    assert datamodule(root, subset=2).classes == WNIDS[:2]


def test_missing_val_folder_is_a_data_error(copy_of):
    root = copy_of()
    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match=f"ImageNet at {root} has no val/ folder; need .*/val/<wnid>/"):
        ImageNetDataModule(ImageNetConfig(str(root)), batch_size=4, max_iters=1, seed=0).prepare_data()
    (root / "ILSVRC2012_img_val.tar").touch()
    with pytest.raises(DataError, match="has ILSVRC2012_img_val.tar but no val/ folder: extract it once with"):
        datamodule(root)


def test_truncated_jpeg_is_a_data_error_naming_the_file(copy_of):
    root = copy_of()
    broken = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    broken.write_bytes(broken.read_bytes()[:2000])
    with pytest.raises(DataError, match=f"cannot decode image {broken} .*truncated.*; remove or replace it") as info:
        _ = datamodule(root).mean  # the mean image is a sample of the training images, decoded at first use
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_jpeg_in_a_loader_is_one_line_in_the_main_process(roots, copy_of, workers):
    root = copy_of()
    broken = root / "val" / WNIDS[0] / f"{WNIDS[0]}_1.JPEG"
    broken.write_bytes(broken.read_bytes()[:2000])
    dm = datamodule(root, workers=workers)
    with pytest.raises(DataError, match=f"cannot decode image {broken} ") as info:
        dm.on_after_batch_transfer(first_batch(dm.val_dataloader()[0]), 0)
    assert "\n" not in str(info.value)


def test_grey_cmyk_and_png_files_decode_to_rgb(tmp_path):
    # ILSVRC-2012's training set holds a few greyscale and CMYK JPEGs, and one PNG named .JPEG.
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG")):
        path = tmp_path / f"{mode}.JPEG"
        Image.fromarray(pixels).convert(mode).save(path, fmt)
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode(str(path)), expected)


def test_config_is_checked():
    with pytest.raises(UserError, match="unknown mean 'per-image'"):
        ImageNetDataModule(ImageNetConfig("x", mean="per-image"), batch_size=4, max_iters=1, seed=0)
    with pytest.raises(UserError, match="--scale 200,480 must satisfy 224"):
        ImageNetDataModule(ImageNetConfig("x", scale=(200, 480)), batch_size=4, max_iters=1, seed=0)


# --- Sec. 3.4's augmentation ------------------------------------------------------------------------


def test_scale_crop_flip_slices_the_resized_image_at_the_drawn_offset(roots):
    image = decode(str(roots["imagefolder"] / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG"))
    assert image.shape == (3, 375, 500) and image.dtype == torch.uint8
    resized = TF.resize(image, 300, antialias=True)
    assert resized.shape == (3, 300, 400)  # shorter side 300, aspect kept
    # Offsets are fractions of the free range: rows 0..76, columns 0..176.
    out = scale_crop_flip(image, 300, (0.5, 0.25), True, 224)
    assert out.dtype == torch.uint8 and torch.equal(out, resized[:, 38:262, 44:268].flip(-1))
    out = scale_crop_flip(image, 300, (0.0, 0.999999), False, 224)
    assert torch.equal(out, resized[:, :224, 176:])


def test_training_batch_applies_its_draws(roots):
    dm = datamodule(roots["imagefolder"])
    batches = dm.train_dataloader().dataset
    draws, batch = batches.draws(3), batches[3]
    assert batch["x"].shape == (4, 3, 224, 224) and batch["x"].dtype == torch.uint8
    assert torch.equal(batch["y"], dm.files["train"].labels[draws["index"]])
    for i, index in enumerate(draws["index"].tolist()):
        image = decode(dm.files["train"].path(index))
        u = draws["u"][i].tolist()
        assert torch.equal(batch["x"][i], scale_crop_flip(image, int(draws["side"][i]), u, bool(draws["flip"][i]), 224))
    x, y, split = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and split == "train"
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, batch["y"])


def test_draws_cover_the_paper_ranges(roots):
    batches = datamodule(roots["imagefolder"]).train_dataloader().dataset
    draws = [batches.draws(k) for k in range(300)]
    side = torch.cat([d["side"] for d in draws])
    assert side.min() == 256 and side.max() == 480  # inclusive [256, 480]
    assert 0.4 < torch.cat([d["flip"] for d in draws]).float().mean() < 0.6
    assert 0.09 < torch.cat([d["alpha"] for d in draws]).std() < 0.11  # alpha ~ N(0, 0.1)
    # Each pass over the 12 images is a permutation of them.
    index = torch.cat([d["index"] for d in draws])
    assert all(sorted(index[i : i + 12].tolist()) == list(range(12)) for i in range(0, 1200, 12))


def test_draws_are_a_pure_function_of_seed_and_iteration(roots):
    a, b = datamodule(roots["imagefolder"]), datamodule(roots["imagefolder"])
    batch_a, batch_b = a.train_dataloader().dataset[5], b.train_dataloader().dataset[5]
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in ("x", "y", "alpha"))
    other = datamodule(roots["imagefolder"], seed=1).train_dataloader().dataset[5]
    assert not torch.equal(batch_a["x"], other["x"])
    # Resume: a loader started at the trainer's step 5 yields batch 5 first, as iterating from 0 does.
    from_zero = list(a.train_dataloader())
    resumed = list(datamodule(roots["imagefolder"], trainer=stub_trainer(global_step=5)).train_dataloader())
    assert len(from_zero) == 10 and len(resumed) == 5
    for k in range(5):
        assert all(torch.equal(resumed[k][key], from_zero[5 + k][key]) for key in ("x", "y", "alpha"))


def test_ranks_slices_partition_the_global_batch(roots):
    whole = datamodule(roots["imagefolder"]).train_dataloader().dataset
    ranks = [
        datamodule(roots["imagefolder"], trainer=stub_trainer(rank=r, world_size=2)).train_dataloader().dataset
        for r in range(2)
    ]
    for k in (0, 2, 7):
        parts = [r.draws(k) for r in ranks]
        assert all(len(p["index"]) == 2 for p in parts)
        assert all(torch.equal(torch.cat([p[key] for p in parts]), whole.draws(k)[key]) for key in whole.draws(k))
    assert torch.equal(torch.cat([r[4]["x"] for r in ranks]), whole[4]["x"])
    with pytest.raises(UserError, match="batch size 4 must divide evenly over 3 devices"):
        datamodule(roots["imagefolder"], trainer=stub_trainer(world_size=3)).train_dataloader()


def test_colour_shift_is_a_constant_per_channel_of_eigvec_times_alpha_eigval(roots):
    dm = datamodule(roots["imagefolder"])
    batch = dm.train_dataloader().dataset[2]
    x, _, _ = dm.on_after_batch_transfer(batch, 0)
    shift = x - (batch["x"].float() / 255 - dm.mean)
    for i in range(len(x)):
        expected = PCA_EIGVEC @ (batch["alpha"][i] * PCA_EIGVAL)
        for c in range(3):
            assert torch.allclose(shift[i, c], expected[c].expand(224, 224), atol=1e-6)
    assert batch["alpha"].abs().max() > 0
    plain = datamodule(roots["imagefolder"], color=False)
    x_plain, _, _ = plain.on_after_batch_transfer(plain.train_dataloader().dataset[2], 0)
    assert torch.allclose(x_plain, batch["x"].float() / 255 - dm.mean, atol=1e-6)


# --- evaluation, the mean image, workers ---------------------------------------------------------------


def center_crop(image: torch.Tensor) -> torch.Tensor:
    return TF.center_crop(TF.resize(image, 256, antialias=True), [224, 224])


def test_val_batches_are_the_centre_crops_as_the_test_split(roots):
    dm = datamodule(roots["imagefolder"])
    batches = list(dm.val_dataloader()[0])
    assert [len(b["y"]) for b in batches] == [4, 2] and all(b["split"] == "test" for b in batches)
    files = dm.files["val"]
    crops = torch.cat([b["x"] for b in batches])
    assert torch.equal(crops, torch.stack([center_crop(decode(files.path(i))) for i in range(len(files))]))
    x, y, split = dm.on_after_batch_transfer(batches[0], 0)
    assert split == "test" and torch.equal(y, files.labels[:4])
    assert torch.allclose(x, batches[0]["x"].float() / 255 - dm.mean)  # no colour shift at test time


def test_per_pixel_mean_is_kept_in_the_state_dict(roots, monkeypatch):
    dm = datamodule(roots["imagefolder"])
    files = dm.files["train"]  # fewer than 10,000 images: the sample is all of them
    expected = torch.stack([center_crop(decode(files.path(i))).double() for i in range(len(files))]).mean(0) / 255
    assert dm.mean.shape == (3, 224, 224) and torch.allclose(dm.mean.double(), expected, atol=1e-6)
    state = dm.state_dict()
    assert state["classes"] == list(WNIDS) and state["source"] == dm.source

    restored = ImageNetDataModule(dm.config, batch_size=4, max_iters=10, seed=0)
    restored.load_state_dict(state)
    monkeypatch.setattr(ImageNetDataModule, "_mean_image", lambda self: pytest.fail("recomputed the mean"))
    restored.setup("validate")
    assert torch.equal(restored.mean, dm.mean)
    with pytest.raises(DataError, match="trained on 2 classes, not the 3"):
        restored.load_state_dict({**state, "classes": list(WNIDS[:2])})


def test_normalize_any_size_subtracts_the_channel_means(roots):
    dm = datamodule(roots["imagefolder"])
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    channel = dm.mean.mean(dim=(1, 2))[:, None, None]
    assert torch.allclose(dm.normalize_any_size(image), image / 255 - channel)
    assert torch.allclose(dm.normalize_any_size(image.float()), image / 255 - channel)  # as evaluation.score passes it
    crop = image[:, :224, :224]
    assert torch.allclose(dm.normalize(crop), crop / 255 - dm.mean)
    with pytest.raises(UserError, match="needs normalize_any_size"):
        dm.normalize(image)
    per_channel = datamodule(roots["imagefolder"], mean="per-channel", color=False)
    batch = per_channel.train_dataloader().dataset[0]
    x, _, _ = per_channel.on_after_batch_transfer(batch, 0)
    assert torch.allclose(x, per_channel.normalize_any_size(batch["x"]), atol=1e-6)


def test_workers_give_the_same_batches(roots):
    serial, parallel = datamodule(roots["imagefolder"]), datamodule(roots["imagefolder"], workers=2)
    for a, b in zip(list(serial.train_dataloader()), list(parallel.train_dataloader()), strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("x", "y", "alpha"))
    for a, b in zip(list(serial.val_dataloader()[0]), list(parallel.val_dataloader()[0]), strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])


# --- in a Lightning run -----------------------------------------------------------------------------


class Recorder(pl.LightningModule):
    """A linear classifier on pooled pixels that records each batch it is given."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, len(WNIDS))
        self.seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y, split = batch
        self.seen.append((split, x.sum(dim=(1, 2, 3)), y))
        return torch.nn.functional.cross_entropy(self.fc(x.mean(dim=(2, 3))), y)

    def validation_step(self, batch, batch_idx):
        x, y, split = batch
        self.seen.append((split, x.sum(dim=(1, 2, 3)), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm, steps: int, ckpt_path=None) -> tuple[pl.Trainer, Recorder]:
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # as training.py: the datamodule shards by rank itself
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Recorder()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module


@pytest.mark.filterwarnings("ignore:.*is not resumable.*")  # as training.py: the data order is a function of the step
def test_a_resumed_lightning_run_sees_the_uninterrupted_batches(roots, tmp_path, monkeypatch):
    def fresh():
        config = ImageNetConfig(str(roots["imagefolder"]), subset=3, eval_batch_size=6, workers=0)
        return ImageNetDataModule(config, batch_size=2, max_iters=4, seed=0)

    _, whole = fit(fresh(), 4)
    assert [s for s, _, _ in whole.seen] == ["train", "train", "test", "train", "train", "test"]
    first, _ = fit(fresh(), 2)
    first.save_checkpoint(tmp_path / "half.ckpt")
    assert torch.equal(
        torch.load(tmp_path / "half.ckpt", weights_only=False)["ImageNetDataModule"]["mean"], first.datamodule.mean
    )
    # Lightning restores the datamodule's state after setup: the mean comes from the checkpoint, not
    # 10,000 decodes again (an ImageNet resume would otherwise pay minutes for it every time).
    monkeypatch.setattr(ImageNetDataModule, "_mean_image", lambda self: pytest.fail("recomputed the mean"))
    _, rest = fit(fresh(), 4, ckpt_path=tmp_path / "half.ckpt")
    train_whole = [(x, y) for s, x, y in whole.seen if s == "train"]
    train_rest = [(x, y) for s, x, y in rest.seen if s == "train"]
    assert len(train_rest) == 2
    for (xa, ya), (xb, yb) in zip(train_whole[2:], train_rest, strict=True):
        assert torch.allclose(xa, xb) and torch.equal(ya, yb)


# --- one design for both datasets: a spec names its dataset, the registry builds its data module ------


def imagenet_spec(root: Path, **changes):
    from resnet_repro.spec import Schedule, TrainSpec

    config = ImageNetConfig(str(root), subset=len(WNIDS), eval_batch_size=4, workers=0)
    settings = dict(model="resnet18", log_every=1, eval_every=2, checkpoint_every=2) | changes
    return TrainSpec(
        dataset="imagenet", data=config, schedule=Schedule(max_iters=2, milestones=(1,)), batch_size=4, **settings
    )


def test_train_runs_an_imagenet_spec_end_to_end_and_records_it(roots, tmp_path):
    from resnet_repro.records import read_run
    from resnet_repro.spec import TrainSpec
    from resnet_repro.training import Hardware, RunOptions, train

    spec = imagenet_spec(roots["imagefolder"])
    threads = torch.get_num_threads()
    try:
        record = train(spec, RunOptions(tmp_path / "run", wandb="off", progress=False), Hardware("cpu", threads=1))
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "finished" and record["iterations"] == 2
    assert record["data_source"]["classes"] == len(WNIDS) and record["data_source"]["sha256"]
    assert 0 <= record["final"]["test/top5_error"] <= record["final"]["test/error"] <= 100  # the val set, centre crops
    assert TrainSpec.from_dict(record["spec"]) == spec  # the config round-trips as an ImageNetConfig
    curves = read_run(tmp_path / "run")[1]
    assert curves["test/error"].notna().sum() == 1 and curves["train/error"].notna().sum() == 2


def test_spec_refuses_a_net_of_the_other_dataset(roots):
    from resnet_repro.spec import TrainSpec

    with pytest.raises(UserError, match="resnet20 is a CIFAR net; imagenet training takes the Table 1 nets"):
        imagenet_spec(roots["imagefolder"], model="resnet20").validate()
    with pytest.raises(UserError, match="resnet18 is an ImageNet net; cifar10 training takes the 6n\\+2 nets"):
        TrainSpec(model="resnet18").validate()
    with pytest.raises(UserError, match="takes a data config of type ImageNetConfig, got DataConfig"):
        TrainSpec(model="resnet18", dataset="imagenet").validate()
