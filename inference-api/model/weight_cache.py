"""The weight cache: the model's weights kept on disk as our forward pass takes them (weights), so
that a restarted backend maps one file instead of importing transformers, loading the model
through it, converting its dtype, stacking and quantizing again.

One file per model folder, dtype and quantization, in $XDG_CACHE_HOME/inference-api/weights,
named by a key over everything its contents depend on: the folder's files (names, sizes,
modification times), the dtype, the quantization, the torch and transformers versions, and the
source of the modules that decide what is stored. Anything else gives another name, so a stale
file is never read; the one it replaces is deleted. A file is written aside and renamed into
place, and loaded with its tensors mapped, not read (torch.load's mmap). One that does not load,
was written for another key, lacks a tensor, or whose tensors' checksums differ from those
recorded when it was written, is ignored, and the model is converted and written again.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
from pathlib import Path

import numpy
import torch

from . import architectures, linear, quantized, weights as weights_module
from .loading import load_hf_model
from .weights import ACTIVATIONS, ModelWeights, weights_of

log = logging.getLogger(__name__)

FORMAT = 1  # of the file's layout: {"format", "key", "meta", "tensors", "sums"}


def load_model(folder: Path, device: str, dtype: torch.dtype, quantization: str = "none",
               cache: Path | None = None) -> ModelWeights:
    """The model's weights on the device: from the cache folder `cache` where it holds them,
    else loaded through transformers and then written there (no cache when None)."""
    path, key = cache_file(cache, folder, dtype, quantization) if cache else (None, "")
    found = read(path, key) if path else None
    if found is not None:
        return found.to(device)
    weights = weights_of(load_hf_model(folder, device, dtype), quantization)
    if path:
        write(path, key, weights)
    return weights


def cache_file(cache: Path, folder: Path, dtype: torch.dtype, quantization: str) -> tuple:
    """(the cache file's path, its full key) for a model folder in a dtype and quantization."""
    folder = Path(folder).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.iterdir() if p.is_file())
    sources = [weights_module, architectures, linear]
    sources += [quantized] if quantization != "none" else []
    parts = [str(FORMAT), str(folder), repr(files), str(dtype), quantization,
             _version("torch"), _version("transformers")]
    parts += [Path(module.__file__).read_text() for module in sources]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return Path(cache) / f"{_stem(folder, dtype, quantization)}-{key[:16]}.pt", key


def read(path: Path, key: str) -> ModelWeights | None:
    """The weights in a cache file, their tensors mapped from it; None where there is no file
    or it is not sound (said in one warning line)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        problem = _problem(data, key)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is only a missed cache
        problem = f"{type(exc).__name__}: {str(exc).partition(chr(10))[0]}"  # its first line
    if problem:
        log.warning("weight cache %s not used (%s); converting the model again", path.name,
                    problem)
        return None
    return ModelWeights(data["meta"], data["tensors"], ACTIVATIONS[data["meta"]["hidden_act"]],
                        from_cache=True)


def write(path: Path, key: str, weights: ModelWeights) -> None:
    """Write the weights into the cache file, aside and then renamed, and delete the files an
    older key left for the same model, dtype and quantization; a failure is one warning line."""
    if weights.meta["hidden_act"] not in ACTIVATIONS:
        log.info("weight cache: activation %r is not cached", weights.meta["hidden_act"])
        return
    # A tensor that is a view into a larger buffer is copied: torch.save writes whole buffers.
    tensors = {name: t if _owns_storage(t) else t.clone(memory_format=torch.contiguous_format)
               for name, t in ((n, t.detach().cpu()) for n, t in weights.tensors.items())}
    data = {"format": FORMAT, "key": key, "meta": weights.meta, "tensors": tensors,
            "sums": {name: checksum(t) for name, t in tensors.items()}}
    scratch = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as file:
            torch.save(data, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before it has its name: a crash leaves no torn file
        os.replace(scratch, path)
        scratch = None
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as RuntimeError
        log.warning("weight cache %s not written: %s", path, exc)
        return
    finally:
        if scratch and os.path.exists(scratch):
            os.unlink(scratch)
    _delete_older(path)


def checksum(t: torch.Tensor) -> int:
    """The sum of a contiguous tensor's bytes as 64-bit words (wrapping; bytes one by one where
    its size is not a multiple of 8): any one changed word changes it. Summed by numpy, on one
    thread: a few hundredths of a second for the whole model, where torch's two threads wait
    for each other at every tensor, and on a busy machine took 0.9 s (measured)."""
    raw = t.reshape(-1).view(torch.uint8).numpy()
    words = raw.view(numpy.int64) if raw.size % 8 == 0 else raw.astype(numpy.int64)
    return int(words.sum(dtype=numpy.int64))


def _problem(data, key: str) -> str | None:
    """Why a loaded file cannot be used, or None."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "another format"
    if data.get("key") != key:
        return "written for another key"
    meta, tensors, sums = data["meta"], data["tensors"], data["sums"]
    if meta.get("hidden_act") not in ACTIVATIONS:
        return f"activation {meta.get('hidden_act')!r}"
    missing = [n for n in ModelWeights(meta, tensors, None).names() if n not in tensors]
    if missing:
        return f"no tensor {missing[0]}"
    wrong = [n for n, t in tensors.items() if sums.get(n) != checksum(t)]
    return f"tensor {wrong[0]} does not match its checksum" if wrong else None


def _delete_older(path: Path) -> None:
    """Delete the files of other keys for the same stem (the model, dtype and quantization)."""
    stem = path.stem.rsplit("-", 1)[0]
    for old in path.parent.iterdir():
        key = old.name.removeprefix(stem + "-").removesuffix(".pt")
        if old != path and old.name == f"{stem}-{key}.pt" and len(key) == 16 and \
                all(c in "0123456789abcdef" for c in key):
            try:
                old.unlink(missing_ok=True)
            except OSError:  # another user's file, say: it only takes room
                pass


def _owns_storage(t: torch.Tensor) -> bool:
    return (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.nbytes)


def _stem(folder: Path, dtype: torch.dtype, quantization: str) -> str:
    name = f"{folder.name}-{str(dtype).removeprefix('torch.')}"
    return name if quantization == "none" else f"{name}-{quantization}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"
