"""Load the supported datasets into standardised numpy arrays, found on disk without a network."""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrlprune.errors import DataError

# `synthetic` is generated from the config, not loaded: see data/synthetic.py.
DATASETS = ("fashion-mnist", "mnist", "cifar10", "digits", "npz", "synthetic")
# What config.toml records for data given from Python (run_experiment(data=...)): not loadable.
USER_DATA = "user"

# Folders that distribution packages install datasets into; a dict so tests can monkeypatch it.
SYSTEM_LOCATIONS: dict[str, list[str]] = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],  # Debian: dataset-fashion-mnist
    "mnist": ["/usr/share/datasets/mnist"],
    "cifar10": [],
}

ENV_VAR = "FEDRLPRUNE_DATA"

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_SUBDIR = "cifar-10-batches-py"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_STD_FLOOR = 1e-8

_HOW_TO_GET = {
    "fashion-mnist": (
        "Install it with `sudo apt-get install dataset-fashion-mnist`, or put the four IDX "
        f"files ({', '.join(_IDX_FILES)}, gzipped or not) in a folder and pass that folder "
        "as data_path."
    ),
    "mnist": (
        "Download the four IDX files "
        f"({', '.join(f + '.gz' for f in _IDX_FILES)}) from the official MNIST page "
        "http://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/"
        "mnist/) into a folder and pass that folder as data_path, or put them in "
        f"${ENV_VAR}/mnist or ~/.cache/fedrlprune/mnist."
    ),
    "cifar10": (
        "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the official "
        "python version), extract it into a folder (it creates cifar-10-batches-py/) and pass "
        f"that folder as data_path, or extract it into ${ENV_VAR}/cifar10 or "
        "~/.cache/fedrlprune/cifar10."
    ),
}


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A train/test split held in memory as read-only arrays, shared by every client."""

    name: str
    x_train: np.ndarray  # float32, N x C x H x W for images, N x D for flat data
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    # The client each train sample belongs to, for data that comes split (the natural split).
    owners: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, which is what a model needs to be built."""
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, data_path: str | None = None) -> ArrayDataset:
    """Load a dataset by name; repeated calls in one process return the same cached object.

    `data_path` is a folder for fashion-mnist/mnist/cifar10, the `.npz` file for npz, and
    is ignored for digits (it ships with scikit-learn).
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}. Use one of: {', '.join(DATASETS)}.")
    if name == "synthetic":
        raise DataError(
            "Dataset 'synthetic' is generated, not loaded: its data depends on clients, "
            "synthetic_alpha, synthetic_beta and seed, so get it with "
            "fedrlprune.data.federated.named_dataset(cfg)."
        )
    if name == "digits":
        return _load_cached(name, None)
    if name == "npz":
        return _load_cached(name, str(_npz_file(data_path)))
    return _load_cached(name, str(_find_folder(name, data_path)))


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    name: str = "arrays",
) -> ArrayDataset:
    """Validate user arrays and standardise them like the built-in datasets."""
    x_train, y_train = _check_split("train", x_train, y_train)
    x_test, y_test = _check_split("test", x_test, y_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"Train samples have shape {x_train.shape[1:]} but test samples have shape "
            f"{x_test.shape[1:]}; give both splits the same per-sample shape."
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return _finish(name, x_train, y_train, x_test, y_test, num_classes)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, source: str | None) -> ArrayDataset:
    """Load once per (name, resolved path): every simulated client asks for the same arrays."""
    if name == "digits":
        return _load_digits()
    assert source is not None
    if name == "npz":
        return _load_npz(Path(source))
    if name == "cifar10":
        return _load_cifar10(Path(source))
    return _load_idx_dataset(name, Path(source))


def _finish(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
) -> ArrayDataset:
    """Standardise with train statistics and freeze the arrays so a caller can't corrupt them."""
    x_train, x_test = _standardise(x_train, x_test)
    arrays = (x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))
    for array in arrays:
        array.setflags(write=False)
    return ArrayDataset(name, *arrays, num_classes=num_classes)


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit std per channel (4-D) or globally (2-D), using train statistics only."""
    is_bytes = x_train.dtype == np.uint8
    # Fresh float32 copies worked on in place: full-size temporaries dominate the load time.
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    if is_bytes:
        x_train /= 255
        x_test /= 255
    axes = (0, 2, 3) if x_train.ndim == 4 else None
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True).astype(np.float32)
    x_train -= mean
    x_test -= mean
    var = np.square(x_train).mean(axis=axes, dtype=np.float64, keepdims=True)
    std = np.maximum(np.sqrt(var), _STD_FLOOR).astype(np.float32)
    x_train /= std
    x_test /= std
    return x_train, x_test


def _check_split(split: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse arrays that would fail later in a less readable way; add the channel axis."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"x_{split} has {x.ndim} dimensions (shape {x.shape}); give N x D features, "
            "N x H x W images or N x C x H x W images."
        )
    if len(x) == 0:
        raise DataError(f"x_{split} is empty; give at least one {split} sample.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"y_{split} has shape {y.shape} but x_{split} has {len(x)} samples; give one "
            "label per sample as a 1-D array."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"y_{split} has dtype {y.dtype}; labels must be integer class ids "
            "(e.g. y.astype(np.int64))."
        )
    if y.min() < 0:
        raise DataError(
            f"y_{split} contains negative labels ({int(y.min())}); use class ids 0..K-1."
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"x_{split} has dtype {x.dtype}; give numeric (integer or float) data.")
    if not np.isfinite(x).all():
        raise DataError(f"x_{split} contains NaN or infinite values; clean or impute them first.")
    if x.ndim == 3:
        x = x[:, None]
    return x, y


def _search_folders(name: str, data_path: str | None) -> list[Path]:
    """Folders to look in: data_path alone when set (a folder the user named is never swapped
    for another copy found elsewhere), else $FEDRLPRUNE_DATA/<name>, system, user cache."""
    if data_path:
        folders = [_given_folder(data_path)]
    else:
        env = os.environ.get(ENV_VAR)
        folders = [Path(env).expanduser() / name] if env else []
        folders += [Path(p) for p in SYSTEM_LOCATIONS.get(name, [])]
        folders.append(Path.home() / ".cache" / "fedrlprune" / name)
    if name == "cifar10":  # the official archive extracts into a subfolder
        folders = [f for base in folders for f in (base / _CIFAR_SUBDIR, base)]
    return folders


def _given_folder(data_path: str) -> Path:
    """The folder data_path names; one that is not there is refused before any training."""
    folder = Path(data_path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(
            f"data_path {folder} {what}; set data_path to the folder holding the dataset's "
            "files (--set data_path=/path/to/folder), or leave it empty to search the "
            "standard places (docs/data.md)."
        )
    return folder


def _missing_files(folder: Path, name: str) -> list[str]:
    """Required files absent from `folder` (IDX files may be gzipped)."""
    if name == "cifar10":
        return [f for f in _CIFAR_FILES if not (folder / f).is_file()]
    return [f for f in _IDX_FILES if _idx_file(folder, f) is None]


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The plain or gzipped IDX file, preferring plain because it loads faster."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_folder(name: str, data_path: str | None) -> Path:
    """First folder holding every file of the dataset, or an error listing where we looked."""
    looked = []
    for folder in _search_folders(name, data_path):
        if not folder.is_dir():
            looked.append(f"  - {folder} (no such folder)")
            continue
        missing = _missing_files(folder, name)
        if not missing:
            return folder.resolve()
        looked.append(f"  - {folder} (missing: {', '.join(missing)})")
    raise DataError(
        f"Dataset {name!r} not found. Looked in:\n" + "\n".join(looked) + f"\n{_HOW_TO_GET[name]}"
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (big-endian header, unsigned bytes) by hand, checking it is whole."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"Cannot read {path}: {exc}. The file is corrupt or truncated; download it again."
        ) from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes((0, 0, 0x08, ndim)):
        raise DataError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes (bad magic number "
            f"{raw[:4].hex() or 'empty'}); replace it with the official file."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected} bytes of data for "
            f"shape {shape} but it holds {len(raw) - header}; download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _load_idx_dataset(name: str, folder: Path) -> ArrayDataset:
    """MNIST-style IDX files -> N x 1 x H x W images."""
    arrays = []
    for stem in _IDX_FILES:
        path = _idx_file(folder, stem)
        assert path is not None  # _find_folder checked it
        arrays.append(_read_idx(path, ndim=3 if "images" in stem else 1))
    x_train, y_train, x_test, y_test = arrays
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(images) != len(labels):
            raise DataError(
                f"{folder}: {split} images hold {len(images)} samples but {split} labels hold "
                f"{len(labels)}; the files come from different downloads, fetch both again."
            )
        if labels.size and labels.max() >= 10:
            raise DataError(
                f"{folder}: {split} labels go up to {labels.max()} but {name} has 10 classes; "
                "the label file is not from this dataset, replace it."
            )
    return _finish(name, x_train[:, None], y_train, x_test[:, None], y_test, num_classes=10)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (N x 3 x 32 x 32 uint8, labels)."""
    try:
        with path.open("rb") as handle:
            # pickle is the official format of the CIFAR-10 python batches the user placed here.
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch.get(b"data", batch.get("data")), dtype=np.uint8)
        labels = np.asarray(batch.get(b"labels", batch.get("labels")), dtype=np.int64)
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise DataError(
            f"Cannot read CIFAR-10 batch {path}: {exc!r}. It is corrupt or not from the python "
            "version of CIFAR-10; extract cifar-10-python.tar.gz again."
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"CIFAR-10 batch {path} holds data of shape {data.shape} and {len(labels)} labels, "
            "expected N x 3072 and N labels; extract cifar-10-python.tar.gz again."
        )
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(folder: Path) -> ArrayDataset:
    """CIFAR-10 python pickle batches -> N x 3 x 32 x 32 images."""
    train = [_read_cifar_batch(folder / f) for f in _CIFAR_FILES[:-1]]
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_FILES[-1])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return _finish("cifar10", x_train, y_train, x_test, y_test, num_classes=10)


def _load_digits() -> ArrayDataset:
    """scikit-learn's 8x8 digits, split 80/20 stratified with a fixed seed for reproducibility."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return _finish("digits", x_train, y_train, x_test, y_test, num_classes=10)


def _npz_file(data_path: str | None) -> Path:
    """The .npz file named by data_path, resolved so it can key the cache."""
    if not data_path:
        raise DataError(
            "Dataset 'npz' needs data_path pointing to an .npz file holding "
            f"{', '.join(_NPZ_KEYS)}; set data_path."
        )
    path = Path(data_path).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; fix data_path to point to the file.")
    return path.resolve()


def _load_npz(path: Path) -> ArrayDataset:
    """User arrays saved with np.savez; objects are refused so loading never runs code."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = sorted(archive.files)
            arrays = {key: archive[key] for key in _NPZ_KEYS if key in found}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"Cannot read {path} as an .npz of plain numeric arrays: {exc}; save it with "
            "np.savez and numeric (not object) arrays."
        ) from exc
    missing = [key for key in _NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks the key(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}; "
            f"required: {', '.join(_NPZ_KEYS)}); save it with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        )
    x_train, y_train, x_test, y_test = (arrays[key] for key in _NPZ_KEYS)
    return from_arrays(x_train, y_train, x_test, y_test, name="npz")
