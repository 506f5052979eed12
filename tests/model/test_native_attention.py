"""The CPU decode-attention kernel against float64 attention, and how it is built and chosen."""
import logging
import re

import pytest
import torch

from helpers import api_server, health_response, post, wait_for
from inference_api.model.attention import native_decode as native_attention
from inference_api.model.attention.torch_decode import DecodeAttention
from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model.attention.native_decode import (KernelUnavailable, NativeDecodeAttention,
                                            choose_decode_attention)

CPU = torch.device("cpu")
MAX_SEQ = 83  # not a multiple of the 16-position key tile: the last tile is part stale


def tiled(keys: torch.Tensor) -> torch.Tensor:
    """Keys [rows, kv, dim, seq] in the kernel's layout [rows, kv, seq / 16, dim / 2, 16, 2]."""
    rows, kv, dim, seq = keys.shape
    return keys.view(rows, kv, dim // 2, 2, seq // 16, 16).permute(0, 1, 4, 2, 5, 3).contiguous()


def reference(q, keys, values, rows, positions, window):
    """Float64 attention of q [D, kv, groups, dim] over keys [rows, kv, dim, seq] and values
    [rows, kv, seq, dim], each row's visible positions only."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for i, (row, pos) in enumerate(zip(rows.tolist(), positions.tolist())):
        first = max(0, pos + 1 - window) if window else 0
        k = keys[row, :, :, first:pos + 1].double()  # [kv, dim, n]
        v = values[row, :, first:pos + 1].double()  # [kv, n, dim]
        scores = torch.einsum("hgd,hdn->hgn", q[i].double(), k)
        out[i] = torch.einsum("hgn,hnd->hgd", scores.softmax(-1), v)
    return out


@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("group,dim", [(1, 16), (3, 64), (5, 128)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_kernel_matches_float64_attention_and_writes_only_the_new_positions(
        dtype, tol, group, dim, window):
    torch.manual_seed(0)
    kv_heads, cache_rows = 2, 4
    attention = NativeDecodeAttention(CPU, dtype, kv_heads * group, kv_heads, dim)
    k_cache, v_cache = (c[0] for c in attention.allocate_cache(1, cache_rows, MAX_SEQ, CPU))
    seq = v_cache.shape[2]
    assert seq == 96 and k_cache.shape == (cache_rows, kv_heads, 6, dim // 2, 16, 2)
    rows = torch.tensor([3, 0, 2, 1])  # the last cache row reads up to the allocation's end
    positions = torch.tensor([MAX_SEQ - 1, 0, 16, 40])
    # NaN wherever a row holds no token: a read of a stale or masked position poisons the output.
    keys = torch.full((cache_rows, kv_heads, dim, seq), float("nan"), dtype=dtype)
    v_cache.fill_(float("nan"))
    for row, pos in zip(rows.tolist(), positions.tolist()):
        first = max(0, pos + 1 - window) if window else 0
        keys[row, ..., first:pos] = torch.randn(kv_heads, dim, pos - first).to(dtype)
        v_cache[row, :, first:pos] = torch.randn(kv_heads, pos - first, dim).to(dtype)
    k_cache.copy_(tiled(keys))
    q = (torch.randn(len(rows), kv_heads, group, dim) * dim ** -0.5).to(dtype)
    k_new = torch.randn(len(rows), kv_heads, dim).to(dtype)
    v_new = torch.randn(len(rows), kv_heads, dim).to(dtype)
    keys[rows, :, :, positions] = k_new
    values = v_cache.clone()
    values[rows, :, positions] = v_new

    out = torch.empty_like(q)
    attention.run(0, q, k_new, v_new, k_cache, v_cache, rows, positions,
                  attention.group_rows(rows, positions, {window}), window, out)

    assert torch.equal(k_cache.nan_to_num(7.0), tiled(keys).nan_to_num(7.0))
    assert torch.equal(v_cache.nan_to_num(7.0), values.nan_to_num(7.0))
    want = reference(q, keys, values, rows, positions, window)
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prompt_keys_go_into_tiles_and_come_back_in_order(dtype):
    torch.manual_seed(2)
    attention = NativeDecodeAttention(CPU, dtype, 6, 3, 32)
    k_cache = attention.allocate_cache(1, 2, 50, CPU)[0][0]  # [rows, kv, 4 tiles, 16, 16, 2]
    chunks = [torch.randn(n, 3, 32).to(dtype) for n in (5, 20, 1, 14)]  # crossing tile edges
    start = 0
    for chunk in chunks:
        attention.write_prompt_keys(k_cache, 1, start, chunk)
        start += chunk.shape[0]
    keys = torch.cat(chunks).permute(1, 2, 0)  # [kv, dim, 40]
    assert torch.equal(attention.prompt_keys(k_cache, 1, 40), keys)
    assert torch.equal(attention.prompt_keys(k_cache, 1, 33), keys[..., :33])
    logical = torch.zeros(2, 3, 32, 64, dtype=dtype)
    logical[1, ..., :40] = keys
    assert torch.equal(k_cache, tiled(logical))  # row 0 and positions 40.. untouched


def test_kernel_agrees_with_the_torch_ops_it_replaces():
    torch.manual_seed(1)
    kv_heads, group, dim, max_seq = 3, 3, 64, 256
    keys, values = torch.randn(6, kv_heads, dim, max_seq), torch.randn(6, kv_heads, max_seq, dim)
    rows, positions = torch.tensor([5, 1, 2]), torch.tensor([200, 3, 64])
    q = torch.randn(3, kv_heads, group, dim) / 8
    k_new, v_new = torch.randn(3, kv_heads, dim), torch.randn(3, kv_heads, dim)
    results = []
    for attention in (NativeDecodeAttention(CPU, torch.float32, kv_heads * group, kv_heads, dim),
                      DecodeAttention(1, max_seq, kv_heads, dim, torch.float32)):
        k, v = (c[0] for c in attention.allocate_cache(1, 6, max_seq, CPU))
        k.copy_(tiled(keys) if isinstance(attention, NativeDecodeAttention) else keys)
        v.copy_(values)
        out = torch.empty_like(q)
        groups = attention.group_rows(rows, positions, {None})
        order = torch.cat([g.index for g in groups]) if groups else torch.arange(3)
        attention.run(0, q[order].contiguous(), k_new[order], v_new[order], k, v, rows[order],
                      positions[order], groups, None, out)
        results.append((out[order.argsort()], attention.prompt_keys(k, 5, 201), v))
    (out_native, k_native, v_native), (out_torch, k_torch, v_torch) = results
    assert torch.equal(k_native, k_torch) and torch.equal(v_native, v_torch)
    torch.testing.assert_close(out_native, out_torch, atol=1e-5, rtol=1e-5)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """Builds in an empty cache folder; later tests get the usual build back."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native_attention.build.cache_clear()
    yield tmp_path / "inference-api" / "kernels"
    native_attention.build.cache_clear()


def test_the_kernel_is_built_once_into_the_cache_folder(fresh_build):
    native_attention.build()
    built = list(fresh_build.iterdir())
    assert len(built) == 1 and built[0].name.startswith("decode_attention-")
    stamp = built[0].stat().st_mtime_ns
    native_attention.build.cache_clear()
    native_attention.build()  # as a new process would: the cached library is loaded, not rebuilt
    assert list(fresh_build.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


def torch_ops():
    return DecodeAttention(1, 64, 2, 16, torch.float32)


@pytest.mark.parametrize("compiler,reason", [("no-such-compiler", "no C++ compiler"),
                                             ("false", "failed to build")])
def test_without_a_working_compiler_auto_falls_back_and_native_refuses(
        fresh_build, monkeypatch, caplog, compiler, reason):
    monkeypatch.setenv("CXX", compiler)
    with caplog.at_level(logging.WARNING):
        chosen = choose_decode_attention("auto", CPU, torch.float32, 4, 2, 16, torch_ops)
    assert isinstance(chosen, DecodeAttention) and reason in caplog.text
    with pytest.raises(KernelUnavailable, match=re.escape(reason)):
        choose_decode_attention("native", CPU, torch.float32, 4, 2, 16, torch_ops)
    assert not list(fresh_build.glob("*.so"))  # nothing half-built left behind


def test_an_unwritable_cache_folder_means_torch_ops_not_a_failed_start(fresh_build, monkeypatch):
    blocker = fresh_build.parent.parent / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert isinstance(choose_decode_attention("auto", CPU, torch.float32, 4, 2, 16, torch_ops),
                      DecodeAttention)
    with pytest.raises(KernelUnavailable, match="cannot build or load"):
        choose_decode_attention("native", CPU, torch.float32, 4, 2, 16, torch_ops)


def test_choice_of_decode_attention():
    native = choose_decode_attention("auto", CPU, torch.bfloat16, 4, 2, 16, torch_ops)
    assert isinstance(native, NativeDecodeAttention)
    assert isinstance(choose_decode_attention("torch", CPU, torch.bfloat16, 4, 2, 16, torch_ops),
                      DecodeAttention)
    # Outside what the kernel covers, auto uses torch ops and native says why it cannot run.
    for dtype, heads, dim, reason in [(torch.float16, 4, 16, "float16"),
                                      (torch.float32, 4, 24, "head_dim 24")]:
        assert isinstance(choose_decode_attention("auto", CPU, dtype, heads, 2, dim, torch_ops),
                          DecodeAttention)
        with pytest.raises(KernelUnavailable, match=reason):
            choose_decode_attention("native", CPU, dtype, heads, 2, dim, torch_ops)
    with pytest.raises(KernelUnavailable, match="cuda"):
        choose_decode_attention("native", torch.device("cuda"), torch.bfloat16, 4, 2, 16,
                                torch_ops)


def test_decode_attention_setting_is_validated():
    assert Config.from_env({}).decode_attention == "auto"
    assert Config.from_env({"DECODE_ATTENTION": "torch"}).decode_attention == "torch"
    with pytest.raises(ConfigError, match="DECODE_ATTENTION='fast' is not valid"):
        Config.from_env({"DECODE_ATTENTION": "fast"})


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["native", "auto"])
def test_server_without_a_compiler(tmp_path, choice):
    """DECODE_ATTENTION=native refuses to start and /health says why; auto serves anyway."""
    server = api_server({"DECODE_ATTENTION": choice, "CXX": "no-such-compiler",
                         "XDG_CACHE_HOME": str(tmp_path), "MAX_SEQ_LEN": "256",
                         "MODEL_CACHE_DIR": Config.from_env().model_cache_dir})
    server.start(wait_ready=False)
    try:
        def settled():
            response = health_response(server)
            return response is not None and (response.status_code == 200
                                             or "failed to start" in response.text)

        assert wait_for(settled, 180)
        response = health_response(server)
        if choice == "native":
            assert response.status_code == 503
            assert "no C++ compiler" in response.json()["message"]
        else:
            assert response.status_code == 200
            answer = post(server, {"text": "The capital of France is", "max_tokens": 4,
                                   "temperature": 0})
            assert answer.status_code == 200 and answer.text.strip()
            assert "decode attention runs as torch ops: no C++ compiler" in server.output()
        assert "Traceback" not in server.output()
    finally:
        server.stop()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_queries_keys_and_values_are_read_in_place_from_the_stacked_projection(dtype):
    torch.manual_seed(4)
    kv_heads, group, dim, rows = 3, 3, 64, torch.tensor([4, 0, 2])
    attention = NativeDecodeAttention(CPU, dtype, kv_heads * group, kv_heads, dim)
    qkv = torch.randn(3, (kv_heads * group + 2 * kv_heads) * dim).to(dtype)  # as a step has it
    q = qkv[:, :kv_heads * group * dim].view(3, kv_heads, group, dim)
    k = qkv[:, kv_heads * group * dim:-kv_heads * dim].view(3, kv_heads, dim)
    v = qkv[:, -kv_heads * dim:].view(3, kv_heads, dim)
    results = []
    for views in ((q, k, v), (q.contiguous(), k.contiguous(), v.contiguous())):
        k_cache, v_cache = (c[0] for c in attention.allocate_cache(1, 5, 64, CPU))
        out = torch.empty(q.shape, dtype=dtype)
        attention.run(0, *views, k_cache, v_cache, rows, torch.tensor([0, 17, 40]), [], None, out)
        results.append((out, k_cache, v_cache))
    (out_views, k_views, v_views), (out_copies, k_copies, v_copies) = results
    assert torch.equal(out_views, out_copies)
    assert torch.equal(k_views, k_copies) and torch.equal(v_views, v_copies)
    assert k_views.any() and out_views.abs().sum() > 0  # something was written and attended
