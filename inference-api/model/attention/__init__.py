"""Attention over the KV cache: decode attention in our own CPU kernel (native_decode, with
decode_attention.cpp beside it, built for the host at first use) or in torch ops for GPUs and
CPUs without a compiler (torch_decode), and the masks and plain attention of prompt chunks (ops).
It imports nothing of the project but the leaves.
"""
