"""Labelled data for the ``supervised`` task: the Yin-Yang dataset, user files, validation and target mapping.

The Yin-Yang dataset (Kriener, Goeltz and Petrovici 2022) is defined by geometry: a point (x, y) drawn
uniformly from the unit square is kept if it lies inside the big circle (centre (R, R), radius R = 0.5); it
belongs to a *dot* if it is within r = 0.1 of one of the two dot centres (R/2, R) and (3R/2, R); otherwise to
class 1 if it lies in the left half-size disc (centre (R/2, R), radius R/2) or in the upper half outside the
right half-size disc (centre (3R/2, R)), and to class 0 else. The published generator balances the classes by
rejection sampling with NumPy's legacy generator seeded once per split: per sample it draws the wanted class
(``randint(3)``), then pairs ``rand(2)`` (scaled to [0, 2R)) until a point inside the big circle has that class.
Each sample is encoded as (x, y, 1 - x, 1 - y). Published splits: 5000 training samples (seed 42), 1000
validation (seed 41) and 1000 test samples (seed 40).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

YINYANG_CLASSES: tuple[str, ...] = ("yin", "yang", "dot")
"""Class names in label order, as the published dataset names them."""
YINYANG_R_BIG = 0.5
YINYANG_R_SMALL = 0.1
YINYANG_SPLITS: dict[str, tuple[int, int]] = {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
"""Published splits: name -> (size, seed)."""

ARRAY_NAMES: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
TargetKind = Literal["voltage", "rate"]


class DatasetError(ValueError):
    """A dataset cannot be read or does not fit the network; the message names the source and the problem."""


def yinyang_class(x: float, y: float, r_small: float = YINYANG_R_SMALL, r_big: float = YINYANG_R_BIG) -> int:
    """Class (0, 1 or 2 = dot) of a point inside the big circle."""
    to_left = np.hypot(x - 0.5 * r_big, y - r_big)
    to_right = np.hypot(x - 1.5 * r_big, y - r_big)
    if to_left < r_small or to_right < r_small:
        return 2
    in_left_disc = to_left <= 0.5 * r_big
    upper_outside_right_disc = y > r_big and to_right > 0.5 * r_big
    return int(in_left_disc or upper_outside_right_disc)


def yinyang(size: int, seed: int, r_small: float = YINYANG_R_SMALL,
            r_big: float = YINYANG_R_BIG) -> tuple[np.ndarray, np.ndarray]:
    """``size`` balanced Yin-Yang samples from ``seed``: inputs (size, 4) and integer labels (size,)."""
    return _yinyang_cached(int(size), int(seed), float(r_small), float(r_big))


@lru_cache(maxsize=16)
def _yinyang_cached(size: int, seed: int, r_small: float, r_big: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    points = np.empty((size, 2))
    labels = np.empty(size, dtype=np.int64)
    for index in range(size):
        wanted = rng.randint(3)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if np.hypot(x - r_big, y - r_big) > r_big:
                continue
            if yinyang_class(x, y, r_small, r_big) == wanted:
                break
        points[index] = x, y
        labels[index] = wanted
    inputs = np.concatenate([points, 1.0 - points], axis=1)
    inputs.flags.writeable = labels.flags.writeable = False  # shared by the cache
    return inputs, labels


@dataclass(frozen=True, eq=False)
class LabelledData:
    """Training and test inputs (n, n_in) with integer class labels (n,) in [0, n_classes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    def fingerprint(self) -> str:
        """SHA-256 of the arrays (shapes and values), so that a store knows which data trained it."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def yinyang_data(train_size: int, train_seed: int, test_size: int, test_seed: int) -> LabelledData:
    """The Yin-Yang training and test splits."""
    x_train, y_train = yinyang(train_size, train_seed)
    x_test, y_test = yinyang(test_size, test_seed)
    return LabelledData(x_train, y_train, x_test, y_test, len(YINYANG_CLASSES), "yinyang")


def read_arrays(path: str, names: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` (role -> name in the file) of a ``.npz`` file or a NetCDF/Zarr dataset."""
    if not os.path.exists(path):
        raise DatasetError(f"dataset {path}: no such file or directory")
    stat = os.stat(path)
    return dict(_read_cached(path, stat.st_mtime_ns, stat.st_size, tuple(sorted(names.items()))))


@lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int, names: tuple[tuple[str, str], ...]) -> tuple:
    wanted = dict(names)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                found = set(archive.files)
                missing = [f"{role} ({name!r})" for role, name in wanted.items() if name not in found]
                if missing:
                    raise DatasetError(f"dataset {path}: missing array{'s' if len(missing) > 1 else ''} "
                                       f"{', '.join(missing)}; the file has: {', '.join(sorted(found)) or 'nothing'}")
                arrays = {role: np.array(archive[name]) for role, name in wanted.items()}
        except DatasetError:
            raise
        except (OSError, ValueError) as err:
            raise DatasetError(f"dataset {path}: not a readable .npz file ({err})") from None
    else:
        import xarray as xr

        try:
            opened = (xr.open_zarr(path, consolidated=False) if path.rstrip("/").endswith(".zarr") or os.path.isdir(path)
                      else xr.open_dataset(path))
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            raise DatasetError(f"dataset {path}: expected a .npz file or a NetCDF/Zarr dataset, cannot read it "
                               f"({type(err).__name__}: {err})") from None
        with opened as dataset:
            missing = [f"{role} ({name!r})" for role, name in wanted.items() if name not in dataset.variables]
            if missing:
                raise DatasetError(f"dataset {path}: missing variable{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(missing)}; it has: {', '.join(map(str, dataset.variables))}")
            arrays = {role: np.asarray(dataset[name].values) for role, name in wanted.items()}
    return tuple(arrays.items())


def check_arrays(arrays: dict[str, np.ndarray], n_in: int, n_classes: int, source: str) -> LabelledData:
    """Validate inputs and labels against the network's widths; labels may be integers or one-hot rows."""
    problems = []
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            problems.append(f"x_{split}/y_{split}: expected numbers, got dtypes {x.dtype} and {y.dtype}")
            continue
        if x.ndim != 2 or x.shape[1] != n_in:
            problems.append(f"x_{split}: expected shape (samples, {n_in}) for the network's {n_in} inputs, "
                            f"got {x.shape}")
        elif not np.isfinite(x).all():
            problems.append(f"x_{split}: expected finite numbers, got {int((~np.isfinite(x)).any(axis=1).sum())} "
                            "samples with NaN or inf")
        label = _class_indices(y, n_classes, f"y_{split}", problems)
        if label is not None:
            if x.ndim >= 1 and len(label) != x.shape[0]:
                problems.append(f"y_{split}: expected one label per sample of x_{split} ({x.shape[0]}), "
                                f"got {len(label)}")
            elif len(label) == 0:
                problems.append(f"x_{split}/y_{split}: expected at least one sample, got none")
            labels[split] = label
    if problems:
        raise DatasetError(f"dataset {source}: " + "; ".join(problems))
    return LabelledData(np.asarray(arrays["x_train"], dtype=np.float64), labels["train"],
                        np.asarray(arrays["x_test"], dtype=np.float64), labels["test"], n_classes, source)


def _class_indices(y: np.ndarray, n_classes: int, role: str, problems: list[str]) -> np.ndarray | None:
    """Integer labels from class indices (n,) or one-hot rows (n, n_classes); problems are appended."""
    if not np.isfinite(y).all():
        problems.append(f"{role}: expected class labels, got NaN or inf")
        return None
    if y.ndim == 2:
        one_hot = y.shape[1] == n_classes and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not one_hot:
            problems.append(f"{role}: expected integer labels (samples,) or one-hot rows (samples, {n_classes}), "
                            f"got shape {y.shape} that is not one-hot over {n_classes} classes")
            return None
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        problems.append(f"{role}: expected integer labels of shape (samples,), got shape {y.shape}")
        return None
    if (y != np.round(y)).any():
        problems.append(f"{role}: expected whole-number class labels, got fractions such as {y[y != np.round(y)][0]}")
        return None
    outside = (y < 0) | (y >= n_classes)
    if outside.any():
        problems.append(f"{role}: expected labels in 0..{n_classes - 1} (one per output neuron), got "
                        f"{int(outside.sum())} outside, e.g. {y[outside][0]:g}")
        return None
    return y.astype(np.int64)


_INVERSE_RATE = {
    "logistic": (lambda r: np.log(r / (1 - r)), (0.0, 1.0)),
    "tanh": (np.arctanh, (-1.0, 1.0)),
    "linear": (lambda r: np.asarray(r, dtype=float), (-np.inf, np.inf)),
}
"""Activations whose rates can be turned back into voltages: inverse and the open interval of valid rates."""


def target_voltages(labels: np.ndarray, n_classes: int, on: float, off: float, kind: TargetKind,
                    activation: str) -> np.ndarray:
    """Output targets u^tgt (samples, n_classes): ``on`` for the labelled class, ``off`` for the others, given as
    voltages, or as rates turned into voltages with the inverse of the output layer's ``activation``."""
    if kind == "rate":
        if activation not in _INVERSE_RATE:
            raise DatasetError(f"target rates need an invertible output activation ({', '.join(_INVERSE_RATE)}), "
                               f"got {activation!r}; give target voltages instead")
        inverse, (low, high) = _INVERSE_RATE[activation]
        if not (low < off < high and low < on < high):
            raise DatasetError(f"target rates of a {activation} output must lie in ({low:g}, {high:g}), got "
                               f"on = {on}, off = {off}")
        on, off = float(inverse(on)), float(inverse(off))
    targets = np.full((len(labels), n_classes), off, dtype=np.float64)
    targets[np.arange(len(labels)), labels] = on
    return targets
