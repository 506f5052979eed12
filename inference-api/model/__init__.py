"""The real model: the runner the engine drives, and everything below it.

ModelRunner (runner) turns a step plan into new tokens: one forward over the plan, the
structured outputs' masks, the sampler. DecoderModel (forward) is our batched forward pass over
a KV cache preallocated for the fixed rows, built from small pieces: layers, linear, rope (the
rotary tables of every scaling), attention/ (decode attention), prompt_chunks (a step's prompt
chunks and their attention), step_bounds (a step's rows and positions checked against the
cache), and the norms and rotary in our C++ kernel (fused, fused_ops.cpp), which gives torch's
results to the bit. architectures says what each supported family changes (norms, soft-capping,
sliding windows, rope per layer). With BATCH_INVARIANT=1 every product runs over fixed tiles of
rows and prompts' attention through the decode kernel (invariant). With QUANTIZATION=int8 the
linear layers are int8 products (quantized), their inputs quantized per row by another kernel
(quantize_kernel, quantize_rows.cpp). C++ kernels are compiled for the host at first use
(native_build). Weights are found and converted once (files), loaded on a device in a dtype
(loading) and prepared for the forward pass, converted, stacked and quantized (weights), which
the weight cache keeps on disk so that a restart maps them instead of loading the model through
transformers (weight_cache). LoRA adapters (LORA_MODULES) are read and checked against the model
(adapter_files) and applied per row in the forward pass, batched by adapter, without merging
weights (lora). It may import engine (the plan and the sequences), sampling and the leaves.
"""
