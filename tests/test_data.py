"""Dataset loaders on small files written in each real format."""

import gzip
import pickle

import numpy as np
import pytest

from labnas.data import DatasetError, load_dataset, read_idx


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 255, (12, 28, 28)), rng.integers(0, 10, 12)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:4], False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:4], False)
    d = load_dataset("fashion-mnist", str(tmp_path))
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (4, 1, 28, 28)
    assert d.y_train.tolist() == labels.tolist() and d.num_classes == 10
    assert abs(float(d.x_train.mean())) < 1e-5
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte"), imgs[:4])


def test_cifar10_pickle_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}, fh)
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)


def test_imagefolder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset("imagefolder", str(tmp_path))
    assert d.num_classes == 2 and d.x_train.shape[1:] == (3, 32, 32) and len(d.x_train) + len(d.x_test) == 10


def test_digits_and_errors(tmp_path):
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("fashion-mnist", str(tmp_path / "nope"))
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x01")
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "bad")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mnist")
