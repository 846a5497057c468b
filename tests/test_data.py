"""prune_core.data: dataset bundles for digits, mnist1d, fake on-disk CIFAR-10 / MNIST / ImageFolder, and bad config."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from prune_core.data import DATASETS, DataBundle, ImageTensorDataset, build_data, imagefolder
from prune_core.data import build as data_build

CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


def _all(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _check_items(bundle: DataBundle) -> None:
    for ds in (bundle.train, bundle.val):
        x, y = ds[0]
        assert x.dtype == torch.float32 and tuple(x.shape) == bundle.input_shape
        assert y.dtype == torch.int64 and y.ndim == 0


# ---------------------------------------------------------------- built-in tensors


def test_digits_bundle_shapes_split_and_determinism():
    bundle = build_data({"name": "digits", "val_fraction": None, "split_seed": 3})
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 8, 8)
    assert (len(bundle.train), len(bundle.val)) == (1797 - 359, 359)
    _check_items(bundle)
    again = build_data({"name": "digits", "split_seed": 3})
    assert torch.equal(_all(bundle.train)[0], _all(again.train)[0])
    other = build_data({"name": "digits", "split_seed": 4})
    assert not torch.equal(_all(bundle.train)[0], _all(other.train)[0])
    small = build_data({"name": "digits", "val_fraction": 0.5, "max_train_samples": 7, "max_val_samples": 5})
    assert (len(small.train), len(small.val)) == (7, 5)


@pytest.fixture(scope="module")
def mnist1d_bundle() -> DataBundle:
    return build_data({"name": "mnist1d", "num_samples": 200, "split_seed": 1})


def test_mnist1d_bundle_shapes_split_and_determinism(mnist1d_bundle):
    assert mnist1d_bundle.num_classes == 10 and mnist1d_bundle.input_shape == (1, 40)
    assert (len(mnist1d_bundle.train), len(mnist1d_bundle.val)) == (160, 40)
    _check_items(mnist1d_bundle)
    cfg = {"name": "mnist1d", "num_samples": 200, "val_fraction": 0.25, "split_seed": 1, "max_train_samples": 50}
    a, b = build_data(cfg), build_data(cfg)
    assert (len(a.train), len(a.val)) == (50, 40)
    assert torch.equal(_all(a.train)[0], _all(b.train)[0]) and torch.equal(_all(a.val)[1], _all(b.val)[1])


# ---------------------------------------------------------------- fake CIFAR-10


def _cifar_batch(path: Path, labels: list[int]) -> None:
    """Image ``i`` is filled with ``10 * label + channel`` so that values and labels can be checked together."""
    images = np.stack([np.repeat(np.array([10 * y, 10 * y + 1, 10 * y + 2], dtype=np.uint8), 1024) for y in labels])
    with open(path, "wb") as f:
        pickle.dump({"data": images, "labels": labels}, f)


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)]
    for i, name in enumerate(names):
        _cifar_batch(folder / name, [(i + j) % 10 for j in range(4)])
    _cifar_batch(folder / "test_batch", list(range(6)))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(n)] for n in names])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5("batches.meta")})
    return tmp_path


def test_cifar10_values_normalisation_and_labels(fake_cifar):
    bundle = build_data({"name": "cifar10", "root": str(fake_cifar), "val_fraction": None})
    assert bundle.num_classes == 10 and bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.val)) == (20, 6)
    _check_items(bundle)
    for ds in (bundle.train, bundle.val):
        x, y = _all(ds)
        pixels = (x * CIFAR_STD + CIFAR_MEAN) * 255
        expected = (10 * y.view(-1, 1, 1, 1) + torch.arange(3).view(1, 3, 1, 1)).float().expand_as(pixels)
        assert torch.allclose(pixels, expected, atol=1e-3)
    assert sorted(_all(bundle.val)[1].tolist()) == list(range(6))

    split = build_data({"name": "cifar10", "root": str(fake_cifar), "val_fraction": 0.25, "max_val_samples": 3})
    assert (len(split.train), len(split.val)) == (15, 3)


def test_crop_flip_serves_training_images_as_crops_of_the_padded_image_or_its_mirror(fake_cifar):
    """``augment=crop_flip``: every training image served is a 32x32 crop of the normalised image padded by 4
    zero pixels, or of its mirror, and they vary; the validation images are served as they are."""
    cfg = {"name": "cifar10", "root": str(fake_cifar), "val_fraction": None}
    plain, augmented = build_data(cfg), build_data({**cfg, "augment": "crop_flip"})
    image = plain.train[3][0]
    padded = [torch.nn.functional.pad(x, (4,) * 4) for x in (image, image.flip(-1))]
    crops = [p[:, i : i + 32, j : j + 32] for p in padded for i in range(9) for j in range(9)]
    torch.manual_seed(0)
    outputs = [augmented.train[3][0] for _ in range(40)]
    assert all(any(torch.equal(out, crop) for crop in crops) for out in outputs)
    assert len({tuple(out.flatten().tolist()) for out in outputs}) > 5  # it does vary
    assert torch.equal(_all(augmented.val)[0], _all(plain.val)[0])
    ramp = ImageTensorDataset(
        torch.arange(192, dtype=torch.uint8).view(1, 3, 8, 8), torch.zeros(1), ((0,) * 3, (1,) * 3)
    )
    image = ramp[0][0]
    mirrored = [
        torch.nn.functional.pad(image.flip(-1), (4,) * 4)[:, i : i + 8, j : j + 8] for i in range(9) for j in range(9)
    ]
    ramp = ImageTensorDataset(ramp.images, ramp.labels, ((0,) * 3, (1,) * 3), augment="crop_flip")
    assert any(any(torch.equal(ramp[0][0], crop) for crop in mirrored) for _ in range(20))  # flipped at times


def test_cifar10_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(ValueError, match="data.download") as err:
        build_data({"name": "cifar10", "root": str(tmp_path / "new"), "download": True})
    assert "internet" in str(err.value)


# ---------------------------------------------------------------- fake MNIST


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    for cls_name in ("MNIST", "FashionMNIST"):
        raw = tmp_path / cls_name / "raw"
        raw.mkdir(parents=True)
        for prefix, n in (("train", 12), ("t10k", 5)):
            labels = np.arange(n) % 10
            _idx(raw / f"{prefix}-images-idx3-ubyte", np.broadcast_to(labels[:, None, None] * 25, (n, 28, 28)))
            _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path


@pytest.mark.parametrize(("name", "mean", "std"), [("mnist", 0.1307, 0.3081), ("fashion_mnist", 0.2860, 0.3530)])
def test_mnist_like_loads_and_grayscale_to_rgb(fake_mnist, name, mean, std):
    gray = build_data({"name": name, "root": str(fake_mnist)})
    assert gray.input_shape == (1, 28, 28) and gray.num_classes == 10
    assert (len(gray.train), len(gray.val)) == (12, 5)
    _check_items(gray)
    x, y = _all(gray.train)
    assert torch.allclose((x * std + mean) * 255, (25 * y).float().view(-1, 1, 1, 1).expand_as(x), atol=1e-3)

    rgb = build_data({"name": name, "root": str(fake_mnist), "grayscale_to_rgb": True})
    assert rgb.input_shape == (3, 28, 28)
    x3 = _all(rgb.train)[0]
    assert torch.equal(x3, x.expand(-1, 3, -1, -1))


# ---------------------------------------------------------------- fake ImageFolder


COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "eel": (10, 10, 200)}


def _image_folder(root: Path, per_class: int, size: tuple[int, int] = (12, 10), classes=COLOURS) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ext = "png" if i % 2 else "jpg"
            Image.new("RGB", size, classes[name]).save(root / name / f"{i}.{ext}")
    return root


def test_imagefolder_labels_resize_stats_and_cache(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "train", per_class=4)
    val_root = _image_folder(tmp_path / "val", per_class=2)
    cfg = {
        "name": "imagefolder",
        "root": str(root),
        "val_root": str(val_root),
        "image_size": 6,
        "cache_dir": str(tmp_path / "cache"),
    }
    bundle = build_data(cfg)
    assert bundle.num_classes == 3 and bundle.input_shape == (3, 6, 6)
    assert (len(bundle.train), len(bundle.val)) == (12, 6)
    _check_items(bundle)
    x, y = _all(bundle.train)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-3)
    # the dominant colour channel identifies the class, for train and val alike
    for ds in (bundle.train, bundle.val):
        images = ds.images.float()
        assert torch.equal(images.mean((2, 3)).argmax(1), ds.labels)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(imagefolder, "decode_folder", no_decoding)
    cached = build_data(cfg)
    for fresh, again in ((bundle.train, cached.train), (bundle.val, cached.val)):
        assert torch.equal(fresh.images, again.images) and torch.equal(fresh.labels, again.labels)


def test_imagefolder_val_fraction_split_and_mixed_sizes(tmp_path):
    root = _image_folder(tmp_path / "train", per_class=4)
    cfg = {"name": "imagefolder", "root": str(root), "val_fraction": 0.25, "cache_dir": str(tmp_path / "cache")}
    bundle = build_data(cfg)
    assert bundle.input_shape == (3, 10, 12) and (len(bundle.train), len(bundle.val)) == (9, 3)
    Image.new("RGB", (5, 5)).save(root / "cat" / "odd.png")
    with pytest.raises(ValueError, match="data.image_size"):
        build_data(cfg)


# ---------------------------------------------------------------- bad config


@pytest.fixture
def folders(tmp_path, monkeypatch) -> dict[str, str]:
    """Valid and invalid folders; decoding is forbidden, so every error must come before it."""

    def no_decoding(*args, **kwargs):
        raise AssertionError("validation should fail before decoding")

    monkeypatch.setattr(imagefolder, "decode_folder", no_decoding)
    empty_class = tmp_path / "empty_class"
    (empty_class / "cat").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    return {
        "good": str(_image_folder(tmp_path / "good", per_class=2)),
        "other": str(_image_folder(tmp_path / "other", per_class=1, classes={"cat": (0, 0, 0), "cow": (1, 1, 1)})),
        "empty": str(tmp_path / "empty"),
        "empty_class": str(empty_class),
        "missing": str(tmp_path / "missing"),
    }


BAD = {
    "unknown name": ({"name": "imagenet"}, "data.name"),
    "no name": ({}, "data.name"),
    "root None": ({"name": "cifar10", "root": None}, "data.root"),
    "root missing": ({"name": "mnist", "root": "{missing}"}, "data.root"),
    "torchvision not there": ({"name": "cifar10", "root": "{empty}"}, "data.download=true"),
    "imagefolder root None": ({"name": "imagefolder", "val_fraction": 0.5}, "data.root"),
    "imagefolder no classes": ({"name": "imagefolder", "root": "{empty}", "val_fraction": 0.5}, "data.root"),
    "imagefolder no images": ({"name": "imagefolder", "root": "{empty_class}", "val_fraction": 0.5}, "data.root"),
    "val_fraction 0": ({"name": "digits", "val_fraction": 0}, "data.val_fraction"),
    "val_fraction 1": ({"name": "digits", "val_fraction": 1.0}, "data.val_fraction"),
    "val_fraction negative": ({"name": "mnist1d", "val_fraction": -0.1}, "data.val_fraction"),
    "val_fraction str": ({"name": "digits", "val_fraction": "0.2"}, "data.val_fraction"),
    "val_fraction too small": ({"name": "imagefolder", "root": "{good}", "val_fraction": 0.01}, "data.val_fraction"),
    "imagefolder no val": ({"name": "imagefolder", "root": "{good}"}, "data.val_fraction"),
    "imagefolder both vals": (
        {"name": "imagefolder", "root": "{good}", "val_fraction": 0.5, "val_root": "{good}"},
        "data.val_root",
    ),
    "val_root missing": ({"name": "imagefolder", "root": "{good}", "val_root": "{missing}"}, "data.val_root"),
    "val_root other classes": ({"name": "imagefolder", "root": "{good}", "val_root": "{other}"}, "data.val_root"),
    "max_train 0": ({"name": "digits", "max_train_samples": 0}, "data.max_train_samples"),
    "max_train float": ({"name": "digits", "max_train_samples": 1.5}, "data.max_train_samples"),
    "max_val negative": ({"name": "digits", "max_val_samples": -3}, "data.max_val_samples"),
    "max_val bool": ({"name": "digits", "max_val_samples": True}, "data.max_val_samples"),
    "num_samples": ({"name": "mnist1d", "num_samples": 5}, "data.num_samples"),
    "image_size": ({"name": "imagefolder", "root": "{good}", "val_fraction": 0.5, "image_size": 0}, "data.image_size"),
    "augment unknown": (
        {"name": "imagefolder", "root": "{good}", "val_fraction": 0.5, "augment": "flip"},
        "data.augment",
    ),
    "augment not images": ({"name": "digits", "augment": "crop_flip"}, "data.augment"),
}


@pytest.mark.parametrize(("cfg", "key"), BAD.values(), ids=BAD.keys())
def test_bad_config_raises_value_error_naming_the_key(folders, cfg, key):
    cfg = {k: v.format(**folders) if isinstance(v, str) else v for k, v in cfg.items()}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_data(cfg)


def test_datasets_are_all_buildable_names():
    assert set(DATASETS) == set(data_build.BUILDERS)
