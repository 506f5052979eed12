"""The API worker caps glibc's malloc arenas: a thread per stream must not mean an arena each."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from processes import REPO

# Sixteen threads allocate at once and hold their memory until all have, then glibc's heaps
# (the main arena and one per extra arena) are counted from malloc_info's report.
PROBE = r"""
import ctypes, re, sys, tempfile, threading
from inference_api.http.worker import limit_malloc_arenas
if sys.argv[1] == "capped":
    limit_malloc_arenas()
allocated, done = threading.Barrier(17), threading.Barrier(17)
def work():
    keep = [bytearray(2000) for _ in range(2000)]
    allocated.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
for thread in threads:
    thread.start()
allocated.wait()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
report = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(report))
libc.fclose(ctypes.c_void_p(report))
done.wait()
print(len(re.findall(r"<heap nr=", open(path).read())))
"""


def heaps(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return int(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas only")
def test_stream_threads_share_two_malloc_arenas():
    assert heaps("uncapped") > 2  # the probe does make an arena per thread when allowed
    assert heaps("capped") <= 2
