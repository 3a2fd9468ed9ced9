"""Tasks for in-loop training: 8x8 digits, MNIST-1D, MNIST/Fashion-MNIST files, NARMA10.

Everything here works offline. Each loader returns a :class:`Task`: inputs as float arrays of shape
``(n, features)``, integer labels for classification. :func:`narma10` returns the NARMA10 input
and target sequences, ``(T,)`` each.

Usage::

    task = load_digits_task(seed=0)
    task = load_mnist1d(seed=42, n_train=4000, n_test=1000)
    task = load_mnist_files("data/fashion")     # IDX(.gz) files or an .npz
    u, y = narma10(3000, seed=0)               # input and target sequences
    score = nmse(prediction, task.y_test)
"""

from __future__ import annotations

import gzip
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class Task:
    """A supervised task. ``n_classes`` is 0 for regression."""

    name: str
    x_train: FloatArray
    y_train: np.ndarray
    x_test: FloatArray
    y_test: np.ndarray
    kind: TaskKind
    n_classes: int


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not (0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def load_digits_task(seed: int = 0, test_fraction: float = 0.25) -> Task:
    """scikit-learn's 8x8 digits (1797 images, bundled with sklearn), pixels scaled to [0, 1],
    a seeded random train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.asarray(data.data, dtype=float) / 16.0
    y = np.asarray(data.target, dtype=np.int64)
    tr, te = _split(len(y), test_fraction, seed)
    return Task("digits", x[tr], y[tr], x[te], y[te], "classification", 10)


def load_mnist1d(seed: int = 42, n_train: int = 4000, n_test: int = 1000) -> Task:
    """MNIST-1D (Greydanus 2020), generated offline by ``mnist1d.data.make_dataset`` with the
    package's default arguments (40-step sequences, 10 classes) except the seed and the sample
    count. ``seed=42, n_train=4000, n_test=1000`` is the published data set.

    ``make_dataset`` seeds Python's and numpy's global generators; their states are restored.
    (``get_dataset`` would download; it is not used.)
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"load_mnist1d: n_train and n_test must be >= 1, got {n_train}, {n_test}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    total = n_train + n_test
    # make_dataset makes num_samples // 10 per class; round up, then cut to the exact counts.
    args.num_samples = 10 * -(-total // 10)
    args.train_split = n_train / args.num_samples
    args.seed = int(seed)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x_tr = np.asarray(data["x"], dtype=float)[:n_train]
    y_tr = np.asarray(data["y"], dtype=np.int64)[:n_train]
    x_te = np.asarray(data["x_test"], dtype=float)[:n_test]
    y_te = np.asarray(data["y_test"], dtype=np.int64)[:n_test]
    return Task("mnist1d", x_tr, y_tr, x_te, y_te, "classification", 10)


# IDX type codes (LeCun's MNIST page): the third magic byte; data are big-endian.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, data."""
    if len(raw) < 4:
        raise ValueError(f"{source}: {len(raw)} bytes is too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{source}: bad IDX magic {raw[:4].hex()} (expected 0000 then a type code in "
            f"{sorted(hex(t) for t in _IDX_TYPES)} then ndim); not an IDX file?"
        )
    dtype = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(
            f"{source}: IDX header declares {ndim} dimensions but is truncated or empty"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{source}: IDX dims {dims} of {dtype.name} need {expected} data bytes, "
            f"file has {len(raw) - header}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def load_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` compressed or plain) into an array of its native shape."""
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{p}: corrupt gzip data ({exc})") from exc
    return parse_idx(raw, str(p))


_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder}: no {stem}[.gz] (MNIST/Fashion-MNIST IDX file names expected)")


def load_mnist_files(path: str | Path, name: str | None = None) -> Task:
    """MNIST or Fashion-MNIST from files the user supplies: a folder with the four standard IDX
    files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``) or an
    ``.npz`` with ``x_train, y_train, x_test, y_test``. Images are flattened and scaled to [0, 1].
    """
    p = Path(path)
    arrays: dict[str, np.ndarray] = {}
    if p.is_dir():
        for key, stem in _IDX_NAMES.items():
            arrays[key] = load_idx(_find_idx(p, stem))
    elif p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _IDX_NAMES if k not in z.files]
            if missing:
                raise ValueError(f"{p}: missing arrays {missing}; found {z.files}")
            arrays = {k: np.asarray(z[k]) for k in _IDX_NAMES}
    else:
        raise ValueError(f"{p}: expected a folder of IDX files or an .npz file")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{p}: {split} images {x.shape} and labels {y.shape} do not match")
    scale = 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0
    x_tr = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(float) / scale
    x_te = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(float) / scale
    y_tr = arrays["y_train"].astype(np.int64)
    y_te = arrays["y_test"].astype(np.int64)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Task(name or p.stem, x_tr, y_tr, x_te, y_te, "classification", n_classes)


def narma10(n_steps: int, seed: int, washout: int = 200) -> tuple[FloatArray, FloatArray]:
    """NARMA10 input ``u`` and target ``y``, both ``(n_steps,)``, classic definition::

        y(n+1) = 0.3 y(n) + 0.05 y(n) sum_{i=0..9} y(n-i) + 1.5 u(n-9) u(n) + 0.1,
        u(n) ~ U[0, 0.5] i.i.d. (seeded), y = 0 before the start.

    Returned aligned for a reservoir: ``y_out[n] = y(n+1)``, the value to predict once
    ``u[0..n]`` has been seen (``y(n+1)`` depends on ``u(n)``).
    The first ``washout`` steps are generated and dropped.
    """
    if n_steps < 1 or washout < 0:
        raise ValueError(
            f"narma10: n_steps must be >= 1 and washout >= 0, got {n_steps}, {washout}"
        )
    total = n_steps + washout
    u = np.random.default_rng(seed).uniform(0.0, 0.5, size=total)
    y = np.zeros(total + 1)
    for n in range(total):
        window = y[max(0, n - 9) : n + 1].sum()
        u9 = u[n - 9] if n >= 9 else 0.0
        y[n + 1] = 0.3 * y[n] + 0.05 * y[n] * window + 1.5 * u9 * u[n] + 0.1
    if not np.all(np.isfinite(y)) or np.abs(y).max() > 10.0:
        raise ValueError(
            f"narma10: seed {seed} diverged (|y| up to {np.abs(y).max():.3g}); use another seed"
        )
    return u[washout:], y[washout + 1 :]


def nmse(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Normalised mean squared error ``mean((pred - target)^2) / var(target)``."""
    p = np.asarray(pred, dtype=float)
    t = np.asarray(target, dtype=float)
    if p.shape != t.shape:
        raise ValueError(f"nmse: pred shape {p.shape} != target shape {t.shape}")
    var = float(np.var(t))
    if var == 0.0:
        raise ValueError("nmse: target has zero variance")
    return float(np.mean((p - t) ** 2) / var)
