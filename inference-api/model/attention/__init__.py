"""Attention over the KV cache: decode attention in our own CPU kernel (native_decode, with
decode_attention.cpp beside it, built for the host at first use by model.native_build) or in
torch ops for GPUs and CPUs without a compiler (torch_decode); the 8-bit cache of
KV_CACHE_DTYPE=int8 (int8_cache); and the masks and plain attention of prompt chunks (ops). It
imports nothing of the project but the leaves and native_build.
"""
