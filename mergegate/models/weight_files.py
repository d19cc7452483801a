"""Reading weight files that may be hostile: safetensors with strict header validation and
zero-copy tensor views, pickled ``.bin`` only through ``torch.load(weights_only=True)``, and a
cheap NaN/Inf scan. Shared by the merging engine and the audit (neither imports the other).

The format (huggingface/safetensors README.md, "Format"): 8 bytes little-endian header length N,
N bytes of UTF-8 JSON mapping tensor names to ``{"dtype", "shape", "data_offsets"}`` (plus an
optional ``__metadata__`` string map), then the byte buffer the offsets index, contiguous and
without holes. Anything else is a :class:`~mergegate.errors.ModelFilesError` (exit code 2) that
names the file and, where there is one, the tensor, before a single tensor byte is read.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from mergegate.errors import ModelFilesError

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        ST_DTYPES[_name] = getattr(torch, _attr)
TORCH_TO_ST = {v: k for k, v in ST_DTYPES.items()}
FLOAT8_DTYPES = tuple(ST_DTYPES[n] for n in ("F8_E4M3", "F8_E5M2") if n in ST_DTYPES)
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the header length
_REDOWNLOAD = "re-download the file (or re-save the model with safetensors)"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _bad(path: Path, message: str, name: str | None = None) -> ModelFilesError:
    return ModelFilesError(message, source=str(path), field=name, hint=_REDOWNLOAD)


def _read_header_json(path: Path) -> tuple[dict, int, int]:
    """(header object, header length, file size)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise _bad(path, "file is truncated (no safetensors header)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER or 8 + header_len > size:
                raise _bad(path, "corrupt or truncated safetensors file (header length beyond the end of "
                                 "the file or over 100 MB)")
            blob = f.read(header_len)
    except OSError as exc:
        raise ModelFilesError(f"cannot read the file ({exc.strerror or exc})", source=str(path)) from None
    try:
        header = json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and too-long integers are ValueErrors
        raise _bad(path, f"corrupt safetensors header (not JSON: {str(exc)[:120]})") from None
    except RecursionError:
        raise _bad(path, "corrupt safetensors header (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise _bad(path, "corrupt safetensors header (not a JSON object)")
    return header, header_len, size


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0  # noqa: E721 - bool is an int subclass, and not a count


def _entry(path: Path, name: str, meta: object) -> tuple[torch.dtype, tuple[int, ...], int, int]:
    if not isinstance(meta, dict):
        raise _bad(path, f"corrupt safetensors header: the entry of tensor '{name}' is "
                         f"{type(meta).__name__}, not an object", name)
    dtype_name = meta.get("dtype")
    if not isinstance(dtype_name, str):
        raise _bad(path, f"corrupt safetensors header: tensor '{name}' has no dtype", name)
    if dtype_name not in ST_DTYPES:
        raise ModelFilesError(f"tensor '{name}' has dtype {dtype_name}, which mergegate does not read "
                              f"(supported: {', '.join(ST_DTYPES)})", source=str(path), field=name,
                              hint="convert the checkpoint to a supported dtype (e.g. bfloat16)")
    shape, offsets = meta.get("shape"), meta.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(path, f"corrupt safetensors header: tensor '{name}' has shape {str(shape)[:80]}, "
                         "not a list of non-negative integers", name)
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise _bad(path, f"corrupt safetensors header: tensor '{name}' has data_offsets "
                         f"{str(offsets)[:80]}, not [begin, end] with 0 <= begin <= end", name)
    return ST_DTYPES[dtype_name], tuple(shape), offsets[0], offsets[1]


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors file's header without reading tensor data.

    Raises:
        ModelFilesError: truncated, not a safetensors header, an entry that is not an object, a
            negative or non-integer shape, an unsupported dtype, overlapping or missing bytes.
    """
    path = Path(path)
    header, header_len, size = _read_header_json(path)
    metadata = header.get("__metadata__")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad(path, "corrupt safetensors header: __metadata__ is not an object", "__metadata__")
    entries = [(name, *_entry(path, name, meta)) for name, meta in header.items() if name != "__metadata__"]
    entries.sort(key=lambda e: (e[3], e[4]))
    base = 8 + header_len
    out: dict[str, TensorInfo] = {}
    expected = 0
    for name, dtype, shape, begin, end in entries:
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if begin != expected or end - begin != numel * itemsize:
            raise _bad(path, f"corrupt safetensors header: bad byte range for tensor '{name}' "
                             f"(shape {list(shape)} of {TORCH_TO_ST[dtype]} needs {numel * itemsize} bytes "
                             f"at offset {expected}, header says {begin}..{end})", name)
        expected = end
        out[name] = TensorInfo(name, path, dtype, shape, base + begin, base + end)
    if base + expected > size:
        raise ModelFilesError(f"file is truncated: {size} bytes, header describes {base + expected}",
                              source=str(path), hint="the download was interrupted; re-download the file")
    if base + expected < size:
        raise _bad(path, f"{size - base - expected} byte(s) after the last tensor that no header entry "
                         "describes (the safetensors library refuses such files too)")
    return out


def map_tensor(info: TensorInfo) -> torch.Tensor:
    """The tensor as stored: a view of a fresh private (copy-on-write) map of the file, so callers
    may modify it in place without touching the file or any other reader of the same tensor."""
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    page = mmap.ALLOCATIONGRANULARITY
    aligned = info.start - info.start % page
    with open(info.file, "rb") as f:
        mm = mmap.mmap(f.fileno(), info.end - aligned, access=mmap.ACCESS_COPY, offset=aligned)
    flat = torch.frombuffer(mm, dtype=torch.uint8, count=info.nbytes, offset=info.start - aligned)
    if (info.start - aligned) % flat.new_empty((), dtype=info.dtype).element_size():
        flat = flat.clone()  # an unaligned tensor (unusual writer): copy to an aligned buffer
    return flat.view(info.dtype).reshape(info.shape)


def load_pickled_weights(file: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict (``*.bin``/``*.pt``) read with ``weights_only=True`` (no arbitrary objects
    are unpickled), memory-mapped.

    Raises:
        ModelFilesError: unreadable, unsafe, or not a mapping of names to tensors.
    """
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad input file
        raise ModelFilesError(f"cannot read pickled weights safely ({type(exc).__name__}: {str(exc)[:200]})",
                              source=str(file)) from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelFilesError("pickled weights are not a mapping of tensor names to tensors", source=str(file),
                              hint="convert the checkpoint to safetensors")
    return state


_FINITE_CHUNK = 1 << 24  # elements per aminmax pass: bounds the float8 upcast buffer to 32 MB


def all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN or ±Inf (always True for integer and bool tensors).

    min/max propagate NaN and expose Inf, and one aminmax pass is several times faster than
    ``isfinite().all()`` on CPU. float8 has no CPU kernels: it is checked in float16 chunks.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    flat = t.reshape(-1)
    step = _FINITE_CHUNK if t.dtype in FLOAT8_DTYPES or flat.numel() > _FINITE_CHUNK else flat.numel()
    for i in range(0, flat.numel(), step):
        chunk = flat[i: i + step]
        if chunk.dtype in FLOAT8_DTYPES:
            chunk = chunk.to(torch.float16)
        lo, hi = torch.aminmax(chunk)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            return False
    return True


def count_non_finite(t: torch.Tensor) -> int:
    flat = t.reshape(-1)
    total = 0
    for i in range(0, flat.numel(), _FINITE_CHUNK):
        chunk = flat[i: i + _FINITE_CHUNK]
        if chunk.dtype in FLOAT8_DTYPES:
            chunk = chunk.to(torch.float16)
        total += int((~torch.isfinite(chunk)).sum())
    return total


def scan_non_finite(files: list[Path]) -> list[tuple[str, str, int]]:
    """``(file name, tensor, NaN/Inf count)`` of every floating tensor holding NaN or ±Inf, in file
    and offset order. Every safetensors header is validated before any tensor is read, so a broken
    file is named as such (not as NaN). One aminmax pass per tensor, streamed from a memory map.

    Raises:
        ModelFilesError: a file that is not valid safetensors / safe pickled weights.
    """
    tensors: list[tuple[str, str, torch.Tensor | TensorInfo]] = []
    for file in files:
        file = Path(file)
        if file.suffix == ".safetensors":
            infos = sorted(read_safetensors_header(file).values(), key=lambda i: i.start)
            tensors.extend((file.name, i.name, i) for i in infos if i.dtype.is_floating_point)
        else:
            state = load_pickled_weights(file)
            tensors.extend((file.name, n, t) for n, t in state.items() if t.is_floating_point())
    bad: list[tuple[str, str, int]] = []
    for file_name, name, item in tensors:
        t = map_tensor(item) if isinstance(item, TensorInfo) else item
        if not all_finite(t):
            bad.append((file_name, name, count_non_finite(t)))
    return bad


def check_finite_weights(files: list[Path], *, source: str) -> None:
    """Refuse a checkpoint with NaN/Inf weights: an error naming the model and the first bad tensors.

    A broken input is bad input (exit code 2), as in the merging engine, which refuses NaN/Inf
    inputs with the same error; NaN/Inf in a merge mergegate built itself is a failure (exit 3).

    Raises:
        ModelFilesError: a file is malformed, or some weights are not finite.
    """
    bad = scan_non_finite(files)
    if not bad:
        return
    shown = ", ".join(f"'{name}' ({count} in {file})" for file, name, count in bad[:3])
    more = f" and {len(bad) - 3} more tensor(s)" if len(bad) > 3 else ""
    raise ModelFilesError(f"{len(bad)} weight tensor(s) contain NaN/Inf values: {shown}{more}", source=source,
                          field=bad[0][1], hint="the checkpoint is broken (a failed conversion, training "
                          "divergence or a corrupt download); re-download or fix it before auditing")


__all__ = ["ST_DTYPES", "TORCH_TO_ST", "FLOAT8_DTYPES", "MAX_HEADER", "TensorInfo", "read_safetensors_header",
           "map_tensor", "load_pickled_weights", "all_finite", "count_non_finite", "scan_non_finite",
           "check_finite_weights"]
