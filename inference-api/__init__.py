"""Inference API: a streaming LLM server with continuous batching."""
