"""Our C++ kernels, compiled at first use for the CPU they run on and loaded through ctypes.

A source is compiled once per machine with the system's C++ compiler (-march=native), into the
cache under a key made of the source, the flags, the compiler's version and the CPU's features,
so a changed kernel, compiler or CPU builds anew and an unchanged one loads at once. Where no
compiler is found or the build fails, KernelUnavailable says why and the model runs torch ops.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from inference_api.config import cache_dir

FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++17", "-shared", "-fPIC")


class KernelUnavailable(RuntimeError):
    """A kernel cannot be built or does not cover this model; the message says why."""


def cpu_identity() -> str:
    """What -march=native depends on: the machine type and the CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + flags


def compiler() -> str:
    """The C++ compiler: $CXX, else c++."""
    name = os.environ.get("CXX", "c++")
    if shutil.which(name) is None:
        raise KernelUnavailable(f"no C++ compiler ({name!r} not found; set CXX)")
    return name


def build(source: Path, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The compiled library of a C++ source, compiled now unless this machine's build is cached
    (callers keep the library: each call checks the compiler's version)."""
    cxx = compiler()
    flags = FLAGS + extra_flags
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join(
        [source.read_text(), " ".join(flags), version, cpu_identity()]).encode()).hexdigest()
    target = cache_dir("kernels") / f"{source.stem}-{key[:16]}.so"
    try:
        if not target.exists():
            _compile(cxx, source, flags, target)
        return ctypes.CDLL(str(target))
    except OSError as exc:  # an unwritable cache folder, a library that does not load
        raise KernelUnavailable(f"cannot build or load {target}: {exc}") from None


def _compile(cxx: str, source: Path, flags: tuple[str, ...], target: Path) -> None:
    """Compile into `target`, built beside it and renamed into place so that a half-written
    library is never loaded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cxx, *flags, str(source), "-o", partial],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise KernelUnavailable(f"{cxx} failed to build {source.name}: {last}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
