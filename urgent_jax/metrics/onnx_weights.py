"""ONNX weight loading without the `onnx` package: a minimal protobuf wire-format reader.

Parses just enough of onnx.proto (ModelProto -> GraphProto -> initializers, nodes, graph inputs and
outputs) to rebuild small inference graphs in jax: initializers become numpy arrays by name, nodes
keep their op type, input / output names and decoded attributes. Field numbers are those of
onnx/onnx.proto3. Not supported (a clear error): external data, sparse initializers, custom domains.

The DNSMOS models ship inside the `speechmos` wheel (`speechmos/dnsmos_models/*.onnx`);
`speechmos_model_path` finds them without importing speechmos (whose modules import `requests` and
`onnxruntime`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SPEECHMOS_INSTALL_HINT = "pip install --no-deps speechmos==0.0.1.1"

# TensorProto.DataType -> numpy dtype (those with a fixed-width numpy twin).
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


@dataclasses.dataclass(frozen=True)
class OnnxNode:
    """One graph node: `op_type` applied to named `inputs`, producing named `outputs`."""

    op_type: str
    name: str
    inputs: tuple[str, ...]  # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attributes: dict[str, Any]  # int, float, bytes, list[int], list[float], np.ndarray (tensor)


@dataclasses.dataclass(frozen=True)
class OnnxValueInfo:
    """A graph input or output: name, element type, shape (str: symbolic dim, None: unknown)."""

    name: str
    elem_type: int  # TensorProto.DataType
    shape: tuple[int | str | None, ...]


@dataclasses.dataclass(frozen=True)
class OnnxGraph:
    """The parts of an ONNX model that inference needs."""

    initializers: dict[str, np.ndarray]
    nodes: tuple[OnnxNode, ...]
    inputs: tuple[OnnxValueInfo, ...]  # graph inputs that are not initializers
    outputs: tuple[OnnxValueInfo, ...]
    opset: dict[str, int]  # domain ("" = ai.onnx) -> version

    @property
    def op_types(self) -> tuple[str, ...]:
        """Sorted distinct op types used by the nodes."""
        return tuple(sorted({n.op_type for n in self.nodes}))


# --- wire format ---


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("malformed protobuf varint")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field of a message; LEN values are bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == _FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, wire, value


def _packed_varints(wire: int, value: Any) -> list[int]:
    """A repeated integer field entry: either one varint or a packed run of them."""
    if wire == _VARINT:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _packed_fixed(value: bytes, fmt: str) -> list[float]:
    """A repeated float / double field entry: one fixed32 / fixed64 value or a packed run."""
    size = struct.calcsize(fmt)
    return list(struct.unpack(f"<{len(value) // size}{fmt}", value))


# --- messages ---


def _tensor(buf: bytes) -> tuple[str, np.ndarray]:
    """TensorProto -> (name, array)."""
    dims: list[int] = []
    data_type = 0
    name = ""
    raw: bytes | None = None
    floats: list[float] = []
    doubles: list[float] = []
    int32s: list[int] = []
    int64s: list[int] = []
    uint64s: list[int] = []
    for field, wire, value in _fields(buf):
        if field == 1:
            dims += [_signed64(v) for v in _packed_varints(wire, value)]
        elif field == 2:
            data_type = value
        elif field == 4:
            floats += _packed_fixed(value, "f")
        elif field == 5:
            int32s += [_signed64(v) for v in _packed_varints(wire, value)]
        elif field == 7:
            int64s += [_signed64(v) for v in _packed_varints(wire, value)]
        elif field == 8:
            name = value.decode()
        elif field == 9:
            raw = bytes(value)
        elif field == 10:
            doubles += _packed_fixed(value, "d")
        elif field == 11:
            uint64s += _packed_varints(wire, value)
        elif field == 14 and value == 1:  # data_location EXTERNAL
            raise ValueError(f"tensor {name!r} stores its data externally; not supported")
    if data_type not in _DTYPES:
        raise ValueError(f"tensor {name!r}: unsupported data type {data_type}")
    dtype = _DTYPES[data_type]
    if raw is not None:
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    elif data_type == 1:
        arr = np.asarray(floats, dtype)
    elif data_type == 11:
        arr = np.asarray(doubles, dtype)
    elif data_type == 7:
        arr = np.asarray(int64s, dtype)
    elif data_type in (12, 13):
        arr = np.asarray(uint64s, dtype)
    elif data_type == 10:  # float16 bit patterns are stored in int32_data
        arr = np.asarray(int32s, np.uint16).view(np.float16)
    else:
        arr = np.asarray(int32s).astype(dtype)
    count = int(np.prod(dims)) if dims else 1
    if arr.size != count:
        raise ValueError(f"tensor {name!r}: {arr.size} values for dims {dims}")
    return name, arr.reshape(dims)


def _attribute(buf: bytes) -> tuple[str, Any]:
    """AttributeProto -> (name, value) with the value decoded by its declared type."""
    name = ""
    attr_type = 0
    scalars: dict[int, Any] = {}
    ints: list[int] = []
    floats: list[float] = []
    strings: list[bytes] = []
    for field, wire, value in _fields(buf):
        if field == 1:
            name = value.decode()
        elif field == 20:
            attr_type = value
        elif field == 2:
            scalars[2] = struct.unpack("<f", value)[0]
        elif field == 3:
            scalars[3] = _signed64(value)
        elif field == 4:
            scalars[4] = bytes(value)
        elif field == 5:
            scalars[5] = _tensor(value)[1]
        elif field == 6:
            scalars[6] = _graph(value)
        elif field == 7:
            floats += _packed_fixed(value, "f")
        elif field == 8:
            ints += [_signed64(v) for v in _packed_varints(wire, value)]
        elif field == 9:
            strings.append(bytes(value))
    by_type: dict[int, Any] = {
        1: scalars.get(2, 0.0),
        2: scalars.get(3, 0),
        3: scalars.get(4, b""),
        4: scalars.get(5),
        5: scalars.get(6),
        6: floats,
        7: ints,
        8: strings,
    }
    if attr_type not in by_type:
        raise ValueError(f"attribute {name!r}: unsupported attribute type {attr_type}")
    return name, by_type[attr_type]


def _node(buf: bytes) -> OnnxNode:
    inputs: list[str] = []
    outputs: list[str] = []
    name = op_type = ""
    attributes: dict[str, Any] = {}
    for field, _, value in _fields(buf):
        if field == 1:
            inputs.append(value.decode())
        elif field == 2:
            outputs.append(value.decode())
        elif field == 3:
            name = value.decode()
        elif field == 4:
            op_type = value.decode()
        elif field == 5:
            key, attr = _attribute(value)
            attributes[key] = attr
        elif field == 7 and value:
            raise ValueError(f"node {name!r}: custom domain {value.decode()!r} not supported")
    return OnnxNode(op_type, name, tuple(inputs), tuple(outputs), attributes)


def _value_info(buf: bytes) -> OnnxValueInfo:
    name, elem_type, shape = "", 0, []
    for field, _, value in _fields(buf):
        if field == 1:
            name = value.decode()
        elif field == 2:  # TypeProto
            for f_type, _, tensor_type in _fields(value):
                if f_type != 1:  # only tensor types
                    continue
                for f_t, _, v_t in _fields(tensor_type):
                    if f_t == 1:
                        elem_type = v_t
                    elif f_t == 2:  # TensorShapeProto
                        for f_s, _, dim in _fields(v_t):
                            if f_s != 1:
                                continue
                            size: int | str | None = None
                            for f_d, _, v_d in _fields(dim):
                                if f_d == 1:
                                    size = _signed64(v_d)
                                elif f_d == 2:
                                    size = v_d.decode()
                            shape.append(size)
    return OnnxValueInfo(name, elem_type, tuple(shape))


def _graph(buf: bytes) -> tuple[dict[str, np.ndarray], list[OnnxNode], list, list]:
    initializers: dict[str, np.ndarray] = {}
    nodes: list[OnnxNode] = []
    inputs: list[OnnxValueInfo] = []
    outputs: list[OnnxValueInfo] = []
    for field, _, value in _fields(buf):
        if field == 1:
            nodes.append(_node(value))
        elif field == 5:
            key, arr = _tensor(value)
            initializers[key] = arr
        elif field == 11:
            inputs.append(_value_info(value))
        elif field == 12:
            outputs.append(_value_info(value))
        elif field == 15:
            raise ValueError("sparse initializers are not supported")
    return initializers, nodes, inputs, outputs


def parse_onnx(data: bytes) -> OnnxGraph:
    """Parse a serialised ModelProto."""
    graph = None
    opset: dict[str, int] = {}
    for field, _, value in _fields(data):
        if field == 7:
            graph = _graph(value)
        elif field == 8:
            domain, version = "", 0
            for f, _, v in _fields(value):
                if f == 1:
                    domain = v.decode()
                elif f == 2:
                    version = v
            opset[domain] = version
    if graph is None:
        raise ValueError("no graph in ONNX model")
    initializers, nodes, inputs, outputs = graph
    inputs = [i for i in inputs if i.name not in initializers]
    return OnnxGraph(initializers, tuple(nodes), tuple(inputs), tuple(outputs), opset)


# --- files ---


def speechmos_model_path(filename: str, folder: str = "dnsmos_models") -> Path:
    """Path of a model file shipped in the installed `speechmos` wheel, e.g. 'sig_bak_ovr.onnx'."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "DNSMOS weights come from the speechmos wheel, which is not installed: "
            + SPEECHMOS_INSTALL_HINT
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / folder / filename
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{folder}/{filename} not found in the installed speechmos package "
        f"({list(spec.submodule_search_locations)}); reinstall with: {SPEECHMOS_INSTALL_HINT}"
    )


def read_onnx(path: str | Path) -> OnnxGraph:
    """Read and parse an .onnx file."""
    return parse_onnx(Path(path).read_bytes())
