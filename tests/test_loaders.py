"""Dataset loading from tiny files written in each official format, and input validation."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from fedrlprune.data import DATASETS, ArrayDataset, from_arrays, load_dataset, loaders
from fedrlprune.errors import DataError

IDX_STEMS = {
    "train-images-idx3-ubyte": (3, 12),
    "train-labels-idx1-ubyte": (1, 12),
    "t10k-images-idx3-ubyte": (3, 5),
    "t10k-labels-idx1-ubyte": (1, 5),
}


@pytest.fixture(autouse=True)
def isolated_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep real system folders, $FEDRLPRUNE_DATA and ~/.cache out of every test, and the cache."""
    empty = tmp_path / "system"
    monkeypatch.setattr(
        loaders,
        "SYSTEM_LOCATIONS",
        {name: [str(empty / name)] for name in ("fashion-mnist", "mnist", "cifar10")},
    )
    monkeypatch.delenv(loaders.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaders._load_cached.cache_clear()


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: two zero bytes, type 0x08 (ubyte), ndim, big-endian dims, then the data."""
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, *, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """The four MNIST-style files with random content; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, (ndim, n) in IDX_STEMS.items():
        shape = (n, 28, 28) if ndim == 3 else (n,)
        array = rng.integers(0, 256 if ndim == 3 else 10, size=shape, dtype=np.uint8)
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
        written[stem] = array
    return written


def write_cifar_folder(folder: Path, per_batch: int = 4) -> None:
    """Python-pickle batches as in cifar-10-python.tar.gz (bytes keys, N x 3072 uint8)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_from_data_path(tmp_path: Path, name: str, gz: bool) -> None:
    written = write_idx_folder(tmp_path / "data", gz=gz)
    ds = load_dataset(name, str(tmp_path / "data"))
    assert isinstance(ds, ArrayDataset)
    assert ds.name == name
    assert ds.x_train.shape == (12, 1, 28, 28)
    assert ds.x_test.shape == (5, 1, 28, 28)
    assert ds.input_shape == (1, 28, 28)
    assert ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    assert ds.num_classes == 10
    np.testing.assert_array_equal(ds.y_train, written["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, written["t10k-labels-idx1-ubyte"])
    # Standardisation is monotone, so pixel order survives.
    raw = written["train-images-idx3-ubyte"].astype(np.float64)
    assert np.corrcoef(raw.ravel(), ds.x_train.ravel())[0, 1] > 0.999


def test_normalisation_uses_train_statistics_per_channel(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / "cifar")
    ds = load_dataset("cifar10", str(tmp_path / "cifar"))
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert abs(float(ds.x_test.mean())) < 0.2  # same distribution, train statistics


def test_cifar10_in_official_subfolder(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / "root" / "cifar-10-batches-py", per_batch=3)
    ds = load_dataset("cifar10", str(tmp_path / "root"))
    assert ds.x_train.shape == (15, 3, 32, 32)
    assert ds.x_test.shape == (3, 3, 32, 32)
    assert ds.num_classes == 10


def test_corrupt_cifar_batch_names_the_file(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path / "cifar"))


def test_env_var_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_folder(tmp_path / "store" / "mnist", gz=True)
    monkeypatch.setenv(loaders.ENV_VAR, str(tmp_path / "store"))
    assert load_dataset("mnist").x_train.shape == (12, 1, 28, 28)


def test_system_location_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_folder(tmp_path / "usr" / "fmnist", gz=True)
    monkeypatch.setitem(loaders.SYSTEM_LOCATIONS, "fashion-mnist", [str(tmp_path / "usr/fmnist")])
    assert load_dataset("fashion-mnist").x_test.shape == (5, 1, 28, 28)


def test_user_cache_folder(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "home" / ".cache" / "fedrlprune" / "mnist", gz=False)
    assert load_dataset("mnist").num_classes == 10


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "cifar10"])
def test_nothing_found_lists_every_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(loaders.ENV_VAR, str(tmp_path / "store"))
    (tmp_path / "store" / name).mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_dataset(name)
    message = str(info.value)
    for place in (
        tmp_path / "store" / name,
        tmp_path / "system" / name,
        tmp_path / "home" / ".cache" / "fedrlprune" / name,
    ):
        assert str(place) in message
    assert "missing" in message  # the env folder exists but lacks the files
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")
    assert "data_path" in message


def test_data_path_alone_is_searched_when_set(tmp_path: Path) -> None:
    """A folder the user named is never swapped for a copy found elsewhere."""
    write_idx_folder(tmp_path / "system" / "mnist", gz=True)  # a copy the search would find
    assert load_dataset("mnist").num_classes == 10
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", str(given))
    assert str(given) in str(info.value) and str(tmp_path / "system") not in str(info.value)
    for missing in (tmp_path / "nonexistent" / "fmnist", tmp_path / "a-file"):
        (tmp_path / "a-file").touch()
        with pytest.raises(DataError, match="data_path") as info:
            load_dataset("mnist", str(missing))
        assert str(missing) in str(info.value) and "leave it empty" in str(info.value)


def test_partial_folder_reports_missing_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "data", gz=True)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", str(tmp_path / "data"))


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "data", gz=False)
    path = tmp_path / "data" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*magic"):
        load_dataset("mnist", str(tmp_path / "data"))


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "data", gz=False)
    path = tmp_path / "data" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", str(tmp_path / "data"))


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "data", gz=True)
    path = tmp_path / "data" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        load_dataset("fashion-mnist", str(tmp_path / "data"))


def test_cache_returns_same_read_only_object(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "data", gz=True)
    first = load_dataset("mnist", str(tmp_path / "data"))
    assert load_dataset("mnist", str(tmp_path / "data" / ".." / "data")) is first
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        first.y_test[0] = 1


def test_digits_split_is_stratified_and_deterministic() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == 360
    assert set(np.unique(ds.y_test)) == set(range(10))
    loaders._load_cached.cache_clear()
    again = load_dataset("digits")
    assert again is not ds
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_npz_loads_and_standardises(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.normal(5, 3, size=(20, 6)),
        y_train=rng.integers(0, 3, size=20),
        x_test=rng.normal(5, 3, size=(7, 6)),
        y_test=np.array([0, 1, 2, 3, 0, 1, 2]),
    )
    ds = load_dataset("npz", str(path))
    assert ds.name == "npz"
    assert ds.input_shape == (6,)
    assert ds.num_classes == 4
    assert ds.x_train.dtype == np.float32
    assert abs(float(ds.x_train.mean())) < 1e-5
    assert abs(float(ds.x_train.std()) - 1) < 1e-4


def test_npz_missing_key_lists_found_and_required(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2, int), x_test=np.zeros((1, 3)))
    with pytest.raises(DataError, match="y_test") as info:
        load_dataset("npz", str(path))
    assert "found: x_test, x_train, y_train" in str(info.value)


def test_npz_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_path"):
        load_dataset("npz")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", str(tmp_path / "absent.npz"))
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.npz"):
        load_dataset("npz", str(tmp_path / "bad.npz"))


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in DATASETS)


def test_from_arrays_adds_channel_axis_and_casts() -> None:
    rng = np.random.default_rng(0)
    ds = from_arrays(
        rng.integers(0, 256, size=(10, 4, 4), dtype=np.uint8),
        np.arange(10, dtype=np.int32) % 2,
        rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8),
        np.array([0, 1, 1], dtype=np.uint8),
    )
    assert ds.name == "arrays"
    assert ds.input_shape == (1, 4, 4)
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.x_test.dtype == np.float32
    assert ds.num_classes == 2


@pytest.mark.parametrize(
    ("x_train", "y_train", "x_test", "match"),
    [
        (np.zeros((4, 3)), np.zeros(3, int), np.zeros((2, 3)), "one label per sample"),
        (np.zeros((4, 3)), np.zeros((4, 1), int), np.zeros((2, 3)), "1-D"),
        (np.zeros((4, 3)), np.zeros(4), np.zeros((2, 3)), "integer class ids"),
        (np.zeros((4, 3)), np.array([0, -1, 0, 0]), np.zeros((2, 3)), "negative"),
        (np.full((4, 3), np.nan), np.zeros(4, int), np.zeros((2, 3)), "NaN"),
        (np.zeros((4, 3)), np.zeros(4, int), np.zeros((2, 5)), "same per-sample shape"),
        (np.zeros(4), np.zeros(4, int), np.zeros((2, 3)), "dimensions"),
        (np.zeros((0, 3)), np.zeros(0, int), np.zeros((2, 3)), "empty"),
        (np.array([["a"]] * 4), np.zeros(4, int), np.zeros((2, 1)), "numeric"),
    ],
)
def test_from_arrays_rejects_bad_input(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        from_arrays(x_train, y_train, x_test, np.zeros(len(x_test), int))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="dataset-fashion-mnist package not installed",
)
def test_system_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        loaders.SYSTEM_LOCATIONS, "fashion-mnist", ["/usr/share/datasets/fashion-mnist"]
    )
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert set(np.unique(ds.y_train)) == set(range(10))
