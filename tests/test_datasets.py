"""Data sets: IDX parser, MNIST file layouts, digits, MNIST-1D offline, NARMA10, NMSE."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from labrig.algorithms.datasets import (
    load_digits_task,
    load_idx,
    load_mnist1d,
    load_mnist_files,
    narma10,
    nmse,
    parse_idx,
)


def idx_bytes(arr: np.ndarray, code: int, be_dtype: str) -> bytes:
    """IDX written independently of the parser: magic, big-endian dims, big-endian data."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(be_dtype).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_plain_and_gz(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    floats = rng.normal(size=(2, 6))
    shorts = np.array([-300, 0, 1234], dtype=np.int16)
    cases: list[tuple[np.ndarray, int, str, str]] = [
        (images, 0x08, ">u1", "a"),
        (floats, 0x0E, ">f8", "b"),
        (shorts, 0x0B, ">i2", "c"),
    ]
    for arr, code, dt, name in cases:
        raw = idx_bytes(arr, code, dt)
        path = tmp_path / (name + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(raw) if compress else raw)
        out = load_idx(path)
        assert out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)
    # Big-endian on disk really is decoded: 0x0102 is 258, not 513.
    assert parse_idx(bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2]))[0] == 258


def test_idx_errors(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((2, 2), dtype=np.uint8), 0x08, ">u1")
    with pytest.raises(ValueError, match="bad IDX magic"):
        parse_idx(b"\x01\x00" + good[2:], "x.idx")
    with pytest.raises(ValueError, match="bad IDX magic"):
        parse_idx(b"\x00\x00\x07" + good[3:])
    with pytest.raises(ValueError, match="need 4 data bytes, file has 3"):
        parse_idx(good[:-1])
    with pytest.raises(ValueError, match="need 4 data bytes, file has 5"):
        parse_idx(good + b"\x00")
    with pytest.raises(ValueError, match="too short"):
        parse_idx(b"\x00\x00")
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="gzip"):
        load_idx(bad_gz)


def _write_mnist_folder(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=6, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "y_test": np.array([9, 0, 1], dtype=np.uint8),
    }
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    folder.mkdir()
    for key, name in names.items():
        raw = idx_bytes(arrays[key], 0x08, ">u1")
        (folder / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return arrays


def test_mnist_files_from_idx_folder_and_npz(tmp_path: Path) -> None:
    arrays = _write_mnist_folder(tmp_path / "fashion", np.random.default_rng(1))
    task = load_mnist_files(tmp_path / "fashion")
    assert task.name == "fashion" and task.kind == "classification" and task.n_classes == 10
    assert task.x_train.shape == (6, 784) and task.x_test.shape == (3, 784)
    np.testing.assert_allclose(task.x_train, arrays["x_train"].reshape(6, -1) / 255.0)
    np.testing.assert_array_equal(task.y_test, [9, 0, 1])
    np.savez(tmp_path / "mnist.npz", **arrays)  # type: ignore[arg-type]
    task2 = load_mnist_files(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(task2.x_test, task.x_test)
    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match="missing arrays"):
        load_mnist_files(tmp_path / "partial.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_mnist_files(tmp_path / "empty")


def test_digits_task_shapes_and_split() -> None:
    task = load_digits_task(seed=0)
    assert task.x_train.shape == (1348, 64) and task.x_test.shape == (449, 64)
    assert task.x_train.min() >= 0.0 and task.x_train.max() <= 1.0
    assert set(np.unique(task.y_train)) == set(range(10))
    again = load_digits_task(seed=0)
    np.testing.assert_array_equal(again.x_test, task.x_test)
    other = load_digits_task(seed=1)
    assert not np.array_equal(other.y_test, task.y_test)


def test_mnist1d_offline_seeded_and_leaves_global_rng_alone() -> None:
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    task = load_mnist1d(seed=42, n_train=300, n_test=95)
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    assert task.x_train.shape == (300, 40) and task.x_test.shape == (95, 40)
    assert task.n_classes == 10 and set(np.unique(task.y_train)) == set(range(10))
    again = load_mnist1d(seed=42, n_train=300, n_test=95)
    np.testing.assert_array_equal(again.x_train, task.x_train)
    assert not np.array_equal(load_mnist1d(seed=1, n_train=300, n_test=95).x_train, task.x_train)


def test_narma10_follows_the_recurrence() -> None:
    u, y = narma10(500, seed=3, washout=50)
    assert u.shape == y.shape == (500,)
    assert u.min() >= 0.0 and u.max() <= 0.5
    # Recompute y(n+1) from y(n-9..n), u(n-9), u(n) inside the returned window (y_out[n] = y(n+1)).
    for n in range(10, 500):
        prev = y[n - 10 : n]  # y(n-9) .. y(n)
        want = 0.3 * prev[-1] + 0.05 * prev[-1] * prev.sum() + 1.5 * u[n - 9] * u[n] + 0.1
        assert y[n] == pytest.approx(want, rel=1e-12)
    _, y2 = narma10(500, seed=3, washout=50)
    np.testing.assert_array_equal(y2, y)


def test_nmse() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert nmse(t, t) == 0.0
    assert nmse(np.full(4, t.mean()), t) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        nmse(t[:3], t)
    with pytest.raises(ValueError, match="zero variance"):
        nmse(t, np.ones(4))
