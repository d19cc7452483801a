"""Streaming tensor I/O over safetensors files.

Reading: every ``*.safetensors`` header of a model is parsed up front (names, dtypes, shapes, byte
ranges), so a truncated or corrupt file, a missing shard or a missing tensor is an error before any
output is written. Tensors are then read one at a time as zero-copy views of a private
(copy-on-write) memory map: the model never sits in memory as a whole.

Writing: the output layout is known before merging (names, dtypes, shapes come from the plan), so
each shard's safetensors header is computed first and tensor bytes are streamed straight to disk in
plan order, hashing as they go. Memory stays at one tensor at a time, whatever the shard size.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from mergegate.errors import ModelFilesError
from mergegate.models.resolver import pickle_weight_files

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        ST_DTYPES[_name] = getattr(torch, _attr)
TORCH_TO_ST = {v: k for k, v in ST_DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


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


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors file's header without reading tensor data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise ModelFilesError("file is truncated (no safetensors header)", source=str(path),
                                      hint="re-download the file")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER or 8 + header_len > size:
                raise ModelFilesError("corrupt or truncated safetensors file (header length beyond the end "
                                      "of the file)", source=str(path), hint="re-download the file")
            header = json.loads(f.read(header_len))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"corrupt safetensors header ({exc})", source=str(path),
                              hint="re-download the file") from None
    if not isinstance(header, dict):
        raise ModelFilesError("corrupt safetensors header (not a JSON object)", source=str(path))
    base = 8 + header_len
    out: dict[str, TensorInfo] = {}
    expected_end = 0
    for name, meta in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                             key=lambda kv: tuple(kv[1].get("data_offsets", (0, 0)))):
        try:
            dtype = ST_DTYPES[meta["dtype"]]
            shape = tuple(int(d) for d in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFilesError(f"corrupt safetensors header entry for tensor '{name}'", source=str(path),
                                  field=name) from None
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if begin != expected_end or end - begin != numel * itemsize:
            raise ModelFilesError(f"corrupt safetensors header: bad byte range for tensor '{name}'",
                                  source=str(path), field=name, hint="re-download the file")
        expected_end = end
        out[name] = TensorInfo(name, path, dtype, shape, base + begin, base + end)
    if base + expected_end > size:
        raise ModelFilesError(f"file is truncated: {size} bytes, header describes {base + expected_end}",
                              source=str(path), hint="the download was interrupted; re-download the file")
    return out


class ModelReader:
    """Lazy, validated access to one model's tensors."""

    def __init__(self, directory: Path, *, allow_pickle: bool = False, label: str | None = None) -> None:
        self.directory = Path(directory)
        self.label = label or str(directory)
        self.tensors: dict[str, TensorInfo] = {}
        self._bin: dict[str, torch.Tensor] | None = None
        files = sorted(self.directory.glob("*.safetensors"))
        if files:
            for file in files:
                for name, info in read_safetensors_header(file).items():
                    if name in self.tensors:
                        raise ModelFilesError(f"tensor '{name}' appears in two shards", source=str(file),
                                              field=name)
                    self.tensors[name] = info
            self._check_index()
        elif allow_pickle and pickle_weight_files(self.directory):
            self._load_bin()
        else:
            raise ModelFilesError("no *.safetensors weights", source=self.label)

    def _check_index(self) -> None:
        index = self.directory / "model.safetensors.index.json"
        if not index.is_file():
            return
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise ModelFilesError("corrupt model.safetensors.index.json", source=str(index)) from None
        missing_files = sorted({f for f in weight_map.values() if not (self.directory / f).is_file()})
        if missing_files:
            raise ModelFilesError(f"index lists shard(s) that are missing: {', '.join(missing_files)}",
                                  source=str(index), hint="re-download the model")
        missing = sorted(set(weight_map) - set(self.tensors))
        if missing:
            raise ModelFilesError(f"index lists tensor(s) not found in the shards: {', '.join(missing[:5])}",
                                  source=str(index), field=missing[0])

    def _load_bin(self) -> None:
        state: dict[str, torch.Tensor] = {}
        for file in pickle_weight_files(self.directory):
            try:
                # weights_only: never unpickle arbitrary objects
                part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - any load failure is a bad input file
                raise ModelFilesError(f"cannot read pickled weights safely ({type(exc).__name__}: {exc})",
                                      source=str(file)) from None
            state.update(part)
        self._bin = state
        for name, t in state.items():
            self.tensors[name] = TensorInfo(name, self.directory, t.dtype, tuple(t.shape), 0, 0)

    def get(self, name: str) -> torch.Tensor:
        """The tensor as stored: a view of a fresh private (copy-on-write) map of the file, so callers
        may modify it in place without touching the file or any other reader of the same tensor."""
        if self._bin is not None:
            return self._bin[name].clone()
        info = self.tensors[name]
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


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * torch.empty((), dtype=self.dtype).element_size()


def parse_size(text: str | int | None, default: int = 5_000_000_000) -> int:
    """mergekit's --out-shard-size: bytes, with K/M/B (x1000) or KB/MB/GB (x1000) suffixes."""
    if text is None:
        return default
    if isinstance(text, int):
        return text
    s = str(text).strip().upper().removesuffix("B") if str(text).strip().upper().endswith(("KB", "MB", "GB", "TB")) \
        else str(text).strip().upper()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(float(s))
    except ValueError:
        raise ModelFilesError(f"cannot read shard size '{text}'", field="out_shard_size",
                              hint="use e.g. 5B, 500M or a byte count") from None


class ShardedWriter:
    """Writes tensors in a fixed, pre-planned order into HF-style safetensors shards."""

    def __init__(self, out_dir: Path, tensors: Iterable[OutputTensor], max_shard_bytes: int) -> None:
        self.out_dir = Path(out_dir)
        self.layout: list[list[OutputTensor]] = [[]]
        size = 0
        for t in tensors:
            if self.layout[-1] and size + t.nbytes > max_shard_bytes:
                self.layout.append([])
                size = 0
            self.layout[-1].append(t)
            size += t.nbytes
        n = len(self.layout)
        self.filenames = (["model.safetensors"] if n == 1
                          else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self._order = [t for shard in self.layout for t in shard]
        self._pos = 0
        self._shard = -1
        self._file = None
        self._hash: hashlib._Hash | None = None
        self.file_hashes: dict[str, str] = {}
        self.total_size = sum(t.nbytes for t in self._order)

    def _open_next(self) -> None:
        self._close_current()
        self._shard += 1
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in self.layout[self._shard]:
            header[t.name] = {"dtype": TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._file = open(self.out_dir / self.filenames[self._shard], "wb")
        self._hash = hashlib.sha256()
        self._emit(struct.pack("<Q", len(blob)) + blob)
        self._in_shard = 0

    def _emit(self, data: bytes | memoryview) -> None:
        assert self._file is not None and self._hash is not None
        self._file.write(data)
        self._hash.update(data)

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            assert self._hash is not None
            self.file_hashes[self.filenames[self._shard]] = self._hash.hexdigest()
            self._file = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self._order[self._pos]
        if name != expected.name or tensor.dtype != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise RuntimeError(f"writer expected {expected} but got {name} {tensor.dtype} {tuple(tensor.shape)}")
        if self._file is None or self._in_shard == len(self.layout[self._shard]):
            self._open_next()
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._emit(memoryview(data))
        self._in_shard += 1
        self._pos += 1

    def finish(self, metadata: dict[str, object] | None = None) -> dict[str, str]:
        if self._pos != len(self._order):
            raise RuntimeError(f"writer finished after {self._pos} of {len(self._order)} tensors")
        self._close_current()
        weight_map = {t.name: self.filenames[i] for i, shard in enumerate(self.layout) for t in shard}
        index = {"metadata": {"total_size": self.total_size, **(metadata or {})}, "weight_map": weight_map}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return self.file_hashes

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
