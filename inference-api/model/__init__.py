"""The real model: the runner the engine drives, and everything below it.

ModelRunner (runner) turns a step plan into new tokens: one forward over the plan, the
structured outputs' masks, the sampler. DecoderModel (forward) is our batched forward pass
over a KV cache preallocated for the fixed rows, built from small pieces (layers, linear,
attention/); its norms and rotary run in our C++ kernel (fused, fused_ops.cpp, compiled for the
host at first use by native_build), with the same results as torch ops to the bit. Weights are found and converted once (files) and loaded on a device in a dtype
(loading). With QUANTIZATION=int8 the linear layers are int8 products (quantized), their inputs
quantized per row by another kernel (quantize_kernel, quantize_rows.cpp). It may import engine
(the plan and the sequences), sampling and the leaves.
"""
