"""PyTorch checkpoint reading without torch: the zip archive written by `torch.save` (torch >= 1.6).

An archive holds `<prefix>/data.pkl` (the pickled object; every tensor is a call of
`torch._utils._rebuild_tensor_v2` on a persistent storage id), `<prefix>/data/<key>` (raw storage
bytes) and `<prefix>/byteorder` ('little' or 'big'; absent in old files, which are little-endian).

The unpickler is restricted: it resolves only the globals a state dict needs (the tensor and
parameter rebuild functions, the typed storage classes and `collections.OrderedDict`) and refuses
every other global, so loading a file never runs code named by the file. Tensors become numpy arrays
(copies, in native byte order); bfloat16 via `ml_dtypes` (a jax dependency).
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

# torch.<Name>Storage -> element dtype (the typed storages `torch.save` records in data.pkl).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch.<Name>Storage class: only its element dtype matters."""

    name: str
    dtype: np.dtype


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """A strided view of a flat storage, copied into a contiguous array (bounds checked)."""
    del requires_grad, backward_hooks, metadata  # autograd state; meaningless here
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"invalid tensor geometry size={size} stride={stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if storage_offset < 0 or last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor (offset {storage_offset}, size {size}, stride {stride}) exceeds its storage "
            f"of {storage.size} elements"
        )
    base = storage[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False, backward_hooks: Any = None):
    """nn.Parameter -> its data."""
    del requires_grad, backward_hooks
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for data.pkl: whitelisted globals only, storages read from the archive."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = ">" if byteorder == "big" else "<"
        self._storages: dict[str, np.ndarray] = {}  # key -> flat array (storages may be shared)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: not part of a plain tensor state dict"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            dtype = storage_type.dtype.newbyteorder(self._byteorder)
            if len(raw) < int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes, {numel} elements")
            flat = np.frombuffer(raw, dtype, count=int(numel))
            self._storages[key] = flat.astype(storage_type.dtype, copy=False)
        return self._storages[key]


def load_torch_checkpoint(path: str | Path) -> Any:
    """The object saved by `torch.save` (dicts, lists, numbers; tensors as numpy arrays)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip-format torch checkpoint (legacy format unsupported)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(f, archive, prefix, byteorder).load()


def load_torch_state_dict(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """name -> numpy array of a checkpoint's state dict.

    The state dict is the saved object itself, `obj[key]`, or (key=None) the first of
    obj['state_dict'] / obj['model'] that exists.
    """
    obj = load_torch_checkpoint(path)
    if key is not None:
        obj = obj[key]
    elif isinstance(obj, Mapping) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        found = [k for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)]
        if not found:
            raise ValueError(f"{path}: no state dict found among keys {list(obj)}; pass key=")
        obj = obj[found[0]]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: state dict is a {type(obj).__name__}, not a mapping")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: non-tensor entries in the state dict: {bad[:5]}")
    return dict(obj)
