"""Image classification data modules: splits, batch contract, augmentation, and tiny on-disk fixtures in the real
torchvision (IDX, CIFAR pickle) and ImageFolder (PNG) formats. Nothing is downloaded."""

from __future__ import annotations

import inspect
import os
import pickle
import struct
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms import v2

import omni.data as image_data
from omni.data import (
    DigitsDataModule,
    ImageAugment,
    ImageFolderDataModule,
    TorchvisionDataModule,
    digits_splits,
)
from omni.data.augment import random_affine


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of two (B, ...) batches."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)


def _check_batch(batch: dict, chans: int, size: tuple[int, int], num_classes: int) -> None:
    assert set(batch) == {"image", "label"}
    image, label = batch["image"], batch["label"]
    assert type(image) is torch.Tensor and image.dtype == torch.float32
    assert image.shape[1:] == (chans, *size)
    assert label.dtype == torch.int64 and label.shape == (image.shape[0],)
    assert 0 <= int(label.min()) and int(label.max()) < num_classes


def _first(loader) -> dict:
    return next(iter(loader))


# ---------------------------------------------------------------------------------------------------------------------
# Digits: the split


def test_digits_split_sizes_and_stratification():
    s = digits_splits()
    (x_tr, y_tr), (_, y_val), (_, y_te) = s["train"], s["val"], s["test"]
    assert len(y_tr) + len(y_val) == 1437 and len(y_te) == 360
    assert len(y_val) == 144  # ceil(0.1 * 1437)
    assert x_tr.shape[1:] == (8, 8) and x_tr.min() >= 0 and x_tr.max() <= 16 and x_tr.max() > 1
    y_all = load_digits().target
    y_fit = np.concatenate([y_tr, y_val])
    for c in range(10):
        n = (y_all == c).sum()
        assert abs((y_te == c).sum() - 0.2 * n) <= 1, c
        assert abs((y_val == c).sum() - 0.1 * (y_fit == c).sum()) <= 1, c


def test_digits_split_is_seeded():
    a, b, other = digits_splits(split_seed=0), digits_splits(split_seed=0), digits_splits(split_seed=1)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])
    assert not np.array_equal(a["test"][0], other["test"][0])
    new_val = digits_splits(seed=1)  # the hold-out seed moves val only; the 80/20 test split stays put
    np.testing.assert_array_equal(a["test"][0], new_val["test"][0])
    assert not np.array_equal(a["val"][0], new_val["val"][0])


def test_digits_splits_partition_the_data():
    digits = load_digits()
    full = sorted(img.tobytes() + bytes([y]) for img, y in zip(digits.images, digits.target, strict=True))
    assert len(set(full)) == len(full)  # every image is distinct, so comparing rows is comparing samples
    s = digits_splits()
    rows = {k: [x.tobytes() + bytes([y]) for x, y in zip(*s[k], strict=True)] for k in s}
    assert sorted(rows["train"] + rows["val"] + rows["test"]) == full  # a partition: nothing lost, nothing twice
    assert not set(rows["train"]) & set(rows["val"]) and not set(rows["train"]) & set(rows["test"])
    assert not set(rows["val"]) & set(rows["test"])


def test_digits_module_uses_the_same_split_and_train_statistics():
    dm = DigitsDataModule(split_seed=3, seed=2)
    dm.setup("fit")
    raw = digits_splits(split_seed=3, seed=2)
    scaled = raw["train"][0] / 16
    assert dm.mean == pytest.approx(scaled.mean()) and dm.std == pytest.approx(scaled.std())
    for name, ds in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        expected = (raw[name][0] / 16 - dm.mean) / dm.std
        np.testing.assert_allclose(ds.images[:, 0].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(ds.labels.numpy(), raw[name][1])
    train_images = dm.train_set.images
    assert abs(train_images.mean().item()) < 1e-4 and abs(train_images.std().item() - 1) < 1e-2


def test_digits_attributes_and_batches():
    dm = DigitsDataModule(batch_size=32)
    assert (dm.num_classes, dm.in_chans, dm.img_size, len(dm.class_names)) == (10, 1, (8, 8), 10)
    dm.setup("fit")
    for loader, n in ((dm.train_dataloader(), 1293), (dm.val_dataloader(), 144), (dm.test_dataloader(), 360)):
        batches = list(loader)
        for b in batches:
            _check_batch(b, 1, (8, 8), 10)
        assert sum(len(b["label"]) for b in batches) == n


class _Linear(L.LightningModule):
    """The smallest classifier that reads the batch contract."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(64, 10)
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        self.seen.append((stage, tuple(batch["image"].shape)))
        return torch.nn.functional.cross_entropy(self.head(batch["image"].flatten(1)), batch["label"])

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_digits_with_a_lightning_trainer():
    flags = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    flags |= {"enable_model_summary": False}
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=2, **flags)
    model, dm = _Linear(), DigitsDataModule(batch_size=16)
    trainer.fit(model, datamodule=dm)  # Lightning calls prepare_data and setup itself
    trainer.test(model, datamodule=dm, verbose=False)
    stages = [stage for stage, _ in model.seen]
    assert stages.count("train") == 3 and stages.count("test") == 23  # ceil(360 / 16)
    assert all(shape[1:] == (1, 8, 8) for _, shape in model.seen)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"augment": "yes"}, "augment"),
    ],
)
def test_digits_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DigitsDataModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"affine": -1.0}, "augment.affine"),
        ({"crop": "random"}, "augment.crop"),
        ({"crop_scale": (0.8, 0.5)}, "augment.crop_scale"),
        ({"crop_padding": -2}, "augment.crop_padding"),
    ],
)
def test_image_augment_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ImageAugment(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Digits: augmentation


def test_augmentation_only_on_train():
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    val_1, val_2 = list(dm.val_dataloader()), list(dm.val_dataloader())
    for a, b in zip(val_1, val_2, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    np.testing.assert_array_equal(torch.cat([b["image"] for b in val_1]).numpy(), dm.val_set.images.numpy())
    # Same sampler order (same seed), with and without augmentation: the labels agree, the pixels do not.
    plain = DigitsDataModule(batch_size=64, augment=False)
    plain.setup("fit")
    L.seed_everything(0, verbose=False)
    clean = _first(plain.train_dataloader())
    L.seed_everything(0, verbose=False)
    warped = _first(dm.train_dataloader())
    assert torch.equal(clean["label"], warped["label"])
    assert not torch.allclose(clean["image"], warped["image"])
    blank = -dm.mean / dm.std  # pixels warped in from outside the image are blank too, not grey
    share = [((b["image"] - blank).abs() < 1e-4).float().mean() for b in (clean, warped)]
    assert share[1] > 0.5 * share[0]  # measured ≈ 0.65 with a blank fill, ≈ 0.25 with 0 (grey)
    # Without augmentation a train batch is exactly dataset rows. A batch's warps are a function of the batch (the
    # same batch, the same warps, whenever it is loaded); the next epoch's batches are warped anew.
    assert any(torch.equal(clean["image"][0], row) for row in plain.train_set.images)
    assert torch.equal(_first(dm.train_dataloader())["image"], warped["image"])
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    epoch_1, epoch_2 = warped, _first(loader)
    assert not torch.equal(epoch_1["image"], epoch_2["image"])


def test_augmentation_is_reproducible_under_seed_everything():
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    L.seed_everything(7, verbose=False)
    a = [b["image"] for b in dm.train_dataloader()]
    L.seed_everything(7, verbose=False)
    b = [b["image"] for b in dm.train_dataloader()]
    L.seed_everything(8, verbose=False)
    c = _first(dm.train_dataloader())["image"]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c)


def test_augmentation_is_reproducible_with_worker_processes():
    dm = DigitsDataModule(batch_size=256, num_workers=1)
    dm.setup("fit")
    L.seed_everything(3, verbose=False)
    a = _first(dm.train_dataloader())
    L.seed_everything(3, verbose=False)
    b = _first(dm.train_dataloader())
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_augmented_digits_stay_close_to_the_original():
    dm = DigitsDataModule()
    dm.setup("fit")
    images = dm.train_set.images
    fill = -dm.mean / dm.std  # a blank pixel after normalisation
    torch.manual_seed(0)
    warped = random_affine(images, fill=fill)
    corr = _corr(images, warped)
    assert 0.5 < corr.mean() < 0.95  # recognisably the same digit, but really moved
    # The background stays blank: pixels that come from outside the image read `fill`, not 0.
    assert warped.min() >= fill - 1e-4 and torch.isclose(warped, torch.tensor(fill)).float().mean() > 0.2


def test_random_affine_geometry(monkeypatch):
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    torch.testing.assert_close(random_affine(x, degrees=0, translate=0, scale=(1, 1), shear=0), x)

    def fixed(*u):  # torch.rand(B, 5) -> rows of `u` (values in [0, 1]; the warp reads 2u - 1)
        return lambda b, k, **kw: torch.tensor([u] * b, dtype=kw.get("dtype"))

    monkeypatch.setattr(torch, "rand", fixed(0.5, 1.0, 0.5, 0.5, 0.5))  # +1 pixel along x, nothing else
    shifted = random_affine(x, degrees=0, translate=1.0, scale=(1, 1), shear=0, fill=-1.0)
    torch.testing.assert_close(shifted[..., 1:], x[..., :-1])
    assert torch.all(shifted[..., 0] == -1.0)
    monkeypatch.setattr(torch, "rand", fixed(1.0, 0.5, 0.5, 0.5, 0.5))  # rotate by exactly `degrees`
    rotated = random_affine(x, degrees=90, translate=0, scale=(1, 1), shear=0)
    torch.testing.assert_close(rotated, torch.rot90(x, -1, (2, 3)), atol=1e-4, rtol=0)
    # A non-square image turns about its centre in pixel units (not in [-1, 1] units, which would stretch it).
    h, w = 6, 10
    wide = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    turned = random_affine(wide, degrees=90, translate=0, scale=(1, 1), shear=0, fill=-1.0)[0, 0]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    for row in range(h):
        for col in range(w):
            src_row, src_col = round(cy - (col - cx)), round(cx + (row - cy))
            inside = 0 <= src_row < h and 0 <= src_col < w
            expected = wide[0, 0, src_row, src_col].item() if inside else -1.0
            assert turned[row, col].item() == pytest.approx(expected, abs=1e-3), (row, col)


# ---------------------------------------------------------------------------------------------------------------------
# torchvision data sets on tiny fixtures in their real file formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as MNIST ships it: big-endian magic (0, 0, type 0x08 = ubyte, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">I", (0x08 << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _make_mnist(root: Path, name: str, n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": np.arange(n_test) % 10,
    }
    _write_idx(raw / "train-images-idx3-ubyte", data["train_x"])
    _write_idx(raw / "train-labels-idx1-ubyte", data["train_y"])
    _write_idx(raw / "t10k-images-idx3-ubyte", data["test_x"])
    _write_idx(raw / "t10k-labels-idx1-ubyte", data["test_y"])
    return data


CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _make_cifar10(root: Path, per_batch: int = 10, n_test: int = 20) -> None:
    """cifar-10-batches-py as shipped: pickled dicts with "data" (n, 3072) uint8 (RGB planes) and "labels"."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_NAMES}))


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_from_idx_files(tmp_path, name):
    data = _make_mnist(tmp_path, name)
    dm = TorchvisionDataModule(name, root=str(tmp_path), batch_size=8, num_workers=0, seed=1, val_fraction=0.2)
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (10, 1, (28, 28))
    dm.prepare_data()  # the files are there: no download, no error
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    assert sorted(data["train_y"][dm.val_set.indices]) == list(range(10))  # stratified: one of each class
    _check_batch(_first(dm.train_dataloader()), 1, (28, 28), 10)
    test = _first(dm.test_dataloader())
    _check_batch(test, 1, (28, 28), 10)
    mean, std = (0.1307, 0.3081) if name == "MNIST" else (0.2860, 0.3530)
    expected = (data["test_x"][:8] / 255.0 - mean) / std  # no augmentation and the standard statistics
    np.testing.assert_allclose(test["image"][:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(test["label"].numpy(), data["test_y"][:8])
    steps = dm.train_set.transform.transforms  # a random crop, and no flip: a mirrored digit is another glyph
    assert any(isinstance(t, v2.RandomCrop) for t in steps)
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in steps)


def test_mnist_resize(tmp_path):
    _make_mnist(tmp_path, "MNIST")
    dm = TorchvisionDataModule("MNIST", root=str(tmp_path), batch_size=4, num_workers=0, img_size=16)
    assert dm.img_size == (16, 16)
    dm.setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        _check_batch(_first(loader), 1, (16, 16), 10)


def test_cifar10_from_pickle_batches(tmp_path, monkeypatch):
    _make_cifar10(tmp_path)
    # torchvision verifies CIFAR files against the md5 sums of the official release, which a fixture cannot match:
    # skip that check (and the one on the metadata file), but still require the files to exist.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    dm = TorchvisionDataModule("CIFAR10", root=str(tmp_path), batch_size=16, num_workers=0)
    assert (dm.num_classes, dm.in_chans, dm.img_size, dm.class_names) == (10, 3, (32, 32), CIFAR10_NAMES)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45, 5, 20)
    val_a, val_b = _first(dm.val_dataloader()), _first(dm.val_dataloader())
    _check_batch(val_a, 3, (32, 32), 10)
    assert torch.equal(val_a["image"], val_b["image"])
    # Train and val views of the same image: identical without augmentation, different (crop, flip) with it.
    torch.manual_seed(0)
    train_view = torch.stack([dm.train_set.transform(dm.train_set.base[0][0]) for _ in range(4)])
    eval_view = dm.val_set.transform(dm.val_set.base[0][0])
    _check_batch({"image": train_view, "label": torch.zeros(4, dtype=torch.long)}, 3, (32, 32), 10)
    assert any(not torch.equal(v, eval_view) for v in train_view)
    assert any(isinstance(t, v2.RandomHorizontalFlip) for t in dm.train_set.transform.transforms)
    plain = TorchvisionDataModule("CIFAR10", root=str(tmp_path), num_workers=0, augment=False)
    plain.setup("fit")
    assert torch.equal(plain.train_set.transform(plain.train_set.base[0][0]), eval_view)


@pytest.mark.parametrize("name", ["CIFAR10", "MNIST"])
def test_missing_torchvision_files(tmp_path, name):
    root = str(tmp_path / "nowhere")
    dm = TorchvisionDataModule(name, root=root, num_workers=0)
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(ValueError, match="download: true") as err:
            step()
        assert root in str(err.value) and name in str(err.value)


def test_torchvision_bad_dataset_name():
    with pytest.raises(ValueError, match="dataset"):
        TorchvisionDataModule("ImageNet", num_workers=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# ImageFolder on tiny folders of PNGs


def _write_pngs(folder: Path, classes: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = rng.integers(10, 20, size=2)
            if i % 3 == 0:  # some greyscale files: the module must still give 3 channels
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(folder / name / f"{i}.png")
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")


def _paths(ds) -> list[str]:
    return [ds.base.samples[i][0] for i in ds.indices]


def test_image_folder_single_folder_layout(tmp_path):
    _write_pngs(tmp_path, {"cat": 10, "dog": 10, "eel": 10})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(str(tmp_path), img_size=16, batch_size=8, num_workers=0)
    assert (dm.num_classes, dm.in_chans, dm.img_size, dm.class_names) == (3, 3, (16, 16), ["cat", "dog", "eel"])
    dm.setup("fit")
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    assert {k: len(v) for k, v in sets.items()} == {"train": 24, "val": 3, "test": 3}  # 80/10/10
    paths = {k: set(_paths(v)) for k, v in sets.items()}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"] and not paths["val"] & paths["test"]
    for k in ("val", "test"):  # stratified: one of each class
        assert sorted(y for _, y in sets[k].base.samples) == [0, 1, 2]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        _check_batch(_first(loader), 3, (16, 16), 3)
    again = ImageFolderDataModule(str(tmp_path), img_size=16, num_workers=0)
    again.setup()
    assert set(_paths(again.test_set)) == paths["test"]  # seeded
    other = ImageFolderDataModule(str(tmp_path), img_size=16, num_workers=0, seed=5)
    other.setup()
    assert set(_paths(other.test_set)) != paths["test"]


def test_image_folder_train_val_test_layout(tmp_path):
    _write_pngs(tmp_path / "train", {"a": 6, "b": 6})
    _write_pngs(tmp_path / "val", {"a": 2, "b": 2}, seed=1)
    dm = ImageFolderDataModule(str(tmp_path), img_size=(12, 10), batch_size=4, num_workers=0)
    dm.setup()
    assert dm.class_names == ["a", "b"] and dm.img_size == (12, 10)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 4)
    assert _paths(dm.test_set) == _paths(dm.val_set)  # no test/ folder: test on val
    assert all("/val/" in p for p in _paths(dm.val_set))
    _check_batch(_first(dm.train_dataloader()), 3, (12, 10), 2)
    _check_batch(_first(dm.val_dataloader()), 3, (12, 10), 2)

    _write_pngs(tmp_path / "test", {"a": 1, "b": 2}, seed=2)
    dm = ImageFolderDataModule(str(tmp_path), img_size=8, num_workers=0)
    dm.setup()
    assert len(dm.test_set) == 3 and all("/test/" in p for p in _paths(dm.test_set))

    no_val = tmp_path / "no_val"
    _write_pngs(no_val / "train", {"a": 10, "b": 10})
    dm = ImageFolderDataModule(str(no_val), img_size=8, num_workers=0, val_fraction=0.2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (16, 4)
    assert not set(_paths(dm.train_set)) & set(_paths(dm.val_set))
    assert _paths(dm.test_set) == _paths(dm.val_set)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="root.*not found"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="class subfolders"):
        ImageFolderDataModule(str(tmp_path))  # empty folder
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("no images here")
    dm = ImageFolderDataModule(str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match="no images"):
        dm.setup()
    odd = tmp_path / "odd"
    _write_pngs(odd / "train", {"a": 3})
    _write_pngs(odd / "val", {"a": 1, "zebra": 1})
    with pytest.raises(ValueError, match="zebra"):
        ImageFolderDataModule(str(odd), num_workers=0).setup()


# ---------------------------------------------------------------------------------------------------------------------
# LightningCLI reads the signatures and docstrings


@pytest.mark.parametrize("cls", [DigitsDataModule, TorchvisionDataModule, ImageFolderDataModule])
def test_every_init_argument_is_documented(cls):
    doc = cls.__init__.__doc__ or ""
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name != "self":
            assert f"{name}:" in doc, f"{cls.__name__}.{name} is not documented"
            assert not isinstance(param.default, list | dict), f"{cls.__name__}.{name} has a mutable default"
    assert image_data.__all__  # the module's public names exist
    assert all(hasattr(image_data, n) for n in image_data.__all__)


def test_augmentation_is_a_config_choice_per_data_module():
    # Digits never flip by default (a flipped digit is another glyph); a config can ask for flips and nothing else.
    assert not DigitsDataModule().augment.hflip and DigitsDataModule().augment.affine > 0
    assert DigitsDataModule(augment=False).augment == ImageAugment()
    flips = DigitsDataModule(batch_size=256, augment=ImageAugment(hflip=True))
    flips.setup("fit")
    L.seed_everything(0, verbose=False)
    batch = _first(flips.train_dataloader())
    rows = flips.train_set.images
    same = [any(torch.equal(img, r) for r in rows) for img in batch["image"]]
    mirrored = [any(torch.equal(img.flip(-1), r) for r in rows) for img in batch["image"]]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))  # each image is a row or its mirror, unwarped
    assert 0.3 < np.mean([b and not a for a, b in zip(same, mirrored, strict=True)]) < 0.7  # about half flipped
    # The torchvision recipes: CIFAR flips and pad-crops; the MNISTs pad-crop without flipping.
    assert TorchvisionDataModule("CIFAR10").augment == ImageAugment(hflip=True, crop="pad", crop_padding=4)
    assert TorchvisionDataModule("MNIST").augment == ImageAugment(crop="pad", crop_padding=2)
