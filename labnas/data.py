"""Offline image datasets for the accuracy proxy. Nothing is downloaded: each loader reads data that
ships with a package or lies in a directory the user names, and fails with a one-line message that
says where it looked and how to get the data."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ._errors import LabnasError

__all__ = ["Dataset", "DatasetError", "DATASETS", "load_dataset", "read_idx", "resized", "ImageFolderStream", "FASHION_MNIST_DEBIAN_DIR"]

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetError(LabnasError, ValueError):
    """A dataset that cannot be loaded; the message says which file or directory and the fix."""


@dataclass
class Dataset:
    """Images as float32 NCHW scaled to roughly zero mean / unit variance, labels as int64.

    ``pixel_mean`` / ``pixel_std``: the scaling, in the raw files' pixel units: ``x = (raw - mean) / std``
    (what a deployed model's runner must apply to a raw image). ``pixel_max``: the raw files' full-scale value (255
    for 8-bit images, 16 for scikit-learn's digits): an 8-bit image's 0..255 is first brought to 0..pixel_max.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    pixel_mean: float = 0.0
    pixel_std: float = 1.0
    pixel_max: float = 255.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def _normalise(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    mean, std = float(ref.mean()), float(ref.std()) or 1.0
    return ((x - mean) / std).astype(np.float32)


def _finish(name: str, xtr, ytr, xte, yte, num_classes: int | None = None, pixel_max: float = 255.0) -> Dataset:
    xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)
    classes = int(num_classes or max(int(ytr.max()), int(yte.max())) + 1)
    mean, std = float(xtr.mean()), float(xtr.std()) or 1.0
    return Dataset(name, _normalise(xtr, xtr), ytr.astype(np.int64), _normalise(xte, xtr), yte.astype(np.int64), classes, mean, std,
                   pixel_max)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def load_digits(data_dir: str | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), split 80/20 with ``seed``."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = d.images[:, None, :, :]
    return _finish("digits", *_split(x, d.target, 0.2, seed), 10, pixel_max=16.0)  # scikit-learn's digits count 0..16


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise DatasetError(f"missing {stem}[.gz] in {directory}")


def load_fashion_mnist(data_dir: str | None = None, seed: int = 0) -> Dataset:
    """Fashion-MNIST IDX files from ``data_dir`` or Debian's ``dataset-fashion-mnist`` location."""
    directory = Path(data_dir) if data_dir else FASHION_MNIST_DEBIAN_DIR
    if not directory.is_dir():
        raise DatasetError(
            f"Fashion-MNIST directory {directory} does not exist; pass {{opt:data_dir}} or run "
            "'apt-get install dataset-fashion-mnist'"
        )
    arrays = [read_idx(_find(directory, f"{s}-ubyte")) for s in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")]
    xtr, ytr, xte, yte = arrays
    return _finish("fashion-mnist", xtr[:, None], ytr, xte[:, None], yte, 10)


def load_cifar10(data_dir: str | None = None, seed: int = 0) -> Dataset:
    """CIFAR-10 from the python-pickle batches directory (``data_batch_1..5``, ``test_batch``)."""
    if not data_dir:
        raise DatasetError("cifar10 needs {opt:data_dir} pointing at the 'cifar-10-batches-py' directory")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DatasetError(f"CIFAR-10 directory {directory} does not exist; pass the cifar-10-batches-py directory")

    def read(name: str):
        path = directory / name
        try:
            with path.open("rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
        except OSError:
            raise DatasetError(f"missing CIFAR-10 batch {path}") from None
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)

    train = [read(f"data_batch_{i}") for i in range(1, 6) if (directory / f"data_batch_{i}").exists()]
    if not train:
        raise DatasetError(f"no data_batch_* files in {directory}")
    xte, yte = read("test_batch")
    return _finish("cifar10", np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), xte, yte, 10)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm"}


def load_imagefolder(data_dir: str | None = None, seed: int = 0, size: int = 32) -> Dataset:
    """A folder of class sub-folders of images, resized to ``size`` x ``size`` RGB, split 80/20."""
    from PIL import Image

    if not data_dir or not Path(data_dir).is_dir():
        raise DatasetError(f"imagefolder needs {{opt:data_dir}} with one sub-folder per class, got {data_dir!r}")
    root = Path(data_dir)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetError(f"{root} must hold at least two class sub-folders, found {len(classes)}")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as img:
                    xs.append(np.asarray(img.convert("RGB").resize((size, size)), np.uint8).transpose(2, 0, 1))
                ys.append(label)
    if len(xs) < 2:
        raise DatasetError(f"{root} holds fewer than two images")
    return _finish("imagefolder", *_split(np.stack(xs), np.array(ys), 0.2, seed), len(classes))


DATASETS = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, data_dir: str | None = None, seed: int = 0, resolution: int = 0) -> Dataset:
    """Load a proxy dataset by name (see :data:`DATASETS`), resampled to ``resolution`` px (0: as stored)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    data = DATASETS[name](data_dir, seed=seed)
    return resized(data, resolution) if resolution else data


def resized(data: Dataset, size: int) -> Dataset:
    """``data`` with every image resampled to ``size`` x ``size`` (area averaging when shrinking,
    bilinear when growing); labels unchanged. ``size`` equal to the current size returns ``data``."""
    import torch
    import torch.nn.functional as F

    if size < 1:
        raise DatasetError(f"image size must be >= 1, got {size}")
    if data.shape[1:] == (size, size):
        return data

    def resample(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        mode = "area" if size < x.shape[-1] else "bilinear"
        out = F.interpolate(t, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        return out.numpy().astype(np.float32)

    return Dataset(f"{data.name}@{size}", resample(data.x_train), data.y_train, resample(data.x_test), data.y_test,
                   data.num_classes, data.pixel_mean, data.pixel_std)


class ImageFolderStream:
    """A folder of class sub-folders read image by image (for a ``torch.utils.data.DataLoader``), never
    loaded whole: the 80/20 train/test split is fixed per class (every fifth file is a test image).

    Training items are resized to 9/8 of ``size``, randomly cropped to ``size`` and flipped left-right
    half of the time; test items are resized to ``size``. Pixels are scaled to (x / 255 - 0.5) / 0.25.
    Items are ``(float32 tensor [3, size, size], int64 label)``.
    """

    def __init__(self, root: str | None, split: str, size: int = 32, augment: bool = False):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not root or not Path(root).is_dir():
            raise DatasetError(f"imagefolder needs {{opt:data_dir}} with one sub-folder per class, got {root!r}")
        directory = Path(root)
        self.classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
        if len(self.classes) < 2:
            raise DatasetError(f"{directory} must hold at least two class sub-folders, found {len(self.classes)}")
        self.items: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            files = sorted(p for p in (directory / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.items += [(f, label) for i, f in enumerate(files) if (i % 5 == 4) == (split == "test")]
        if not self.items:
            raise DatasetError(f"{directory} holds no {split} images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
        self.size, self.augment = size, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            if self.augment:
                big = self.size * 9 // 8
                img = img.resize((big, big))
                rng = np.random.default_rng()
                left, top = (int(v) for v in rng.integers(0, big - self.size + 1, 2))
                img = img.crop((left, top, left + self.size, top + self.size))
                if rng.random() < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                img = img.resize((self.size, self.size))
            x = (np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(label, dtype=torch.int64)

