"""Model loading: the conversion cache, bad paths and unsupported models fail clearly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import api_server, health_response, wait_for
from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model.files import (COMPLETE_MARKER, KEYS_FILE, bundled_gguf_path,
                                       cache_folder, is_complete, prepare_model_folder)
from processes import REPO


def run_script(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/run.py"], cwd=REPO, capture_output=True,
                          text=True, env={"HOME": os.environ.get("HOME", "/"), **env}, timeout=60)


def test_missing_model_path_is_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    result = run_script({"MODEL_PATH": str(missing)})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: model not found: {missing}"


def test_bad_setting_is_one_line_naming_the_variable():
    result = run_script({"MAX_USERS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: MAX_USERS='lots' is not valid")


@pytest.mark.processes
def test_server_with_an_unreadable_model_says_why_on_health(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    server = api_server({"MODEL_PATH": str(bad), "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    server.start(wait_ready=False)
    try:
        assert wait_for(lambda: (r := health_response(server)) is not None
                        and "failed to start" in r.text, 120)
        response = health_response(server)
        assert response.status_code == 503 and str(bad) in response.json()["message"]
        assert "Traceback" not in server.output()
    finally:
        server.stop()


def test_unsupported_architecture_is_refused_at_start(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from inference_api.model.loading import UnsupportedArchitecture
    from inference_api.model.runner import ModelRunner

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitecture) as err:
        ModelRunner(Config(model_path=str(tmp_path / "gpt2"), max_users=1, max_seq_len=64))
    assert "GPT2LMHeadModel" in str(err.value) and "LlamaForCausalLM" in str(err.value)


@pytest.mark.slow
def test_corrupt_cache_folder_is_not_loaded_but_converted_again(tmp_path):
    gguf = bundled_gguf_path()
    folder = cache_folder(str(tmp_path), gguf)
    good = prepare_model_folder("", str(tmp_path))
    assert good == folder and is_complete(folder)
    weights = folder / "model.safetensors"
    # A crash mid-write: the weights file is cut short after the marker was written.
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert not is_complete(folder)
    assert prepare_model_folder("", str(tmp_path)) == folder
    assert is_complete(folder)
    sizes = json.loads((folder / COMPLETE_MARKER).read_text())["sizes"]
    assert weights.stat().st_size == sizes["model.safetensors"]
    # A folder without its marker is never taken for a finished conversion either.
    (folder / COMPLETE_MARKER).unlink()
    assert not is_complete(folder)
    # Nothing half-written is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, KEYS_FILE])
    shutil.rmtree(folder)


def test_the_cache_is_keyed_by_content_not_by_path(tmp_path):
    gguf = bundled_gguf_path()
    copy = tmp_path / "elsewhere" / gguf.name
    copy.parent.mkdir()
    shutil.copy(gguf, copy)
    cache = tmp_path / "cache"
    # Another clone's copy of the same file shares its conversion.
    assert cache_folder(str(cache), copy) == cache_folder(str(cache), gguf)
    other = tmp_path / "other" / gguf.name
    other.parent.mkdir()
    other.write_bytes(copy.read_bytes()[:-1] + b"x")
    assert cache_folder(str(cache), other) != cache_folder(str(cache), gguf)
    # A file seen before is not read again: its hash is remembered by path, size and mtime.
    remembered = json.loads((cache / KEYS_FILE).read_text())
    assert len(remembered) == 3
    assert cache_folder(str(cache), copy) == cache_folder(str(cache), gguf)
    assert json.loads((cache / KEYS_FILE).read_text()) == remembered
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed anew
    assert cache_folder(str(cache), copy) == cache_folder(str(cache), gguf)
    assert len(json.loads((cache / KEYS_FILE).read_text())) == 4


CPU_THREADS_PROBE = """
import os, torch
from inference_api.config import Config
from inference_api.model.runner import ModelRunner, cpu_threads
print(cpu_threads())
ModelRunner(Config(cpu_threads=int(os.environ["WANTED"]), max_users=1, max_seq_len=64))
print(torch.get_num_threads())
"""


@pytest.mark.slow
def test_torch_threads_follow_cpu_threads_else_the_cores_the_process_may_use():
    def probe(wanted: int, cores: set[int]) -> list[str]:
        done = subprocess.run([sys.executable, "-c", CPU_THREADS_PROBE], cwd=REPO, text=True,
                              capture_output=True, timeout=300,
                              env={**os.environ, "WANTED": str(wanted)},
                              preexec_fn=lambda: os.sched_setaffinity(0, cores))
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    one_core = {min(os.sched_getaffinity(0))}
    assert probe(0, one_core) == ["1", "1"]  # a process pinned to one core: one thread
    assert probe(3, one_core) == ["1", "3"]  # CPU_THREADS wins
    with pytest.raises(ConfigError):
        Config(cpu_threads=-1)
