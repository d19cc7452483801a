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
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from mergegate.atomic import write_redacted_json
from mergegate.errors import ModelFilesError
from mergegate.models.resolver import pickle_weight_files
from mergegate.models.weight_files import (  # noqa: F401 - re-exported: the engine's names for these
    MAX_HEADER,
    ST_DTYPES,
    TORCH_TO_ST,
    TensorInfo,
    load_pickled_weights,
    map_tensor,
    read_safetensors_header,
)

MAX_INDEX_BYTES = 64 << 20  # a model.safetensors.index.json lists names; real ones are < 10 MB

def read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a ``model.safetensors.index.json``: tensor name -> shard file name.

    Raises:
        ModelFilesError: not JSON, nested too deeply, too large, no ``weight_map`` object of strings,
            or a shard name that is not a plain file name in the model directory.
    """
    hint = "re-download the model (the index lists which shard holds which tensor)"
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise ModelFilesError(f"the index is larger than {MAX_INDEX_BYTES:,} bytes", source=str(index),
                                  hint=hint)
        data = json.loads(index.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise ModelFilesError(f"corrupt model.safetensors.index.json ({type(exc).__name__})", source=str(index),
                              hint=hint) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise ModelFilesError("corrupt model.safetensors.index.json: no 'weight_map' object of file names",
                              source=str(index), field="weight_map", hint=hint)
    for name, file in weight_map.items():
        if not file or "/" in file or "\\" in file or file in (".", ".."):
            raise ModelFilesError(f"the index puts tensor '{name}' in '{file[:80]}', which is not a file of "
                                  "this directory", source=str(index), field="weight_map", hint=hint)
    return weight_map


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
        weight_map = read_index(index)
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
            state.update(load_pickled_weights(file))  # weights_only: never unpickle arbitrary objects
        self._bin = state
        for name, t in state.items():
            self.tensors[name] = TensorInfo(name, self.directory, t.dtype, tuple(t.shape), 0, 0)

    def get(self, name: str) -> torch.Tensor:
        """The tensor as stored: a view of a fresh private (copy-on-write) map of the file, so callers
        may modify it in place without touching the file or any other reader of the same tensor."""
        if self._bin is not None:
            return self._bin[name].clone()
        return map_tensor(self.tensors[name])


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
        write_redacted_json(self.out_dir / "model.safetensors.index.json", index)
        return self.file_hashes

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
