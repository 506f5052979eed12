"""Choosing each row's next token: the per-row sampler (sampler) built on pure draw functions
(draws), token log probabilities (logprobs), and structured outputs: the grammar matchers and
masks of the real model's rows (grammar_rows) and the closing search both backends use to end
an output that max_tokens would cut (closing, which needs no torch). It imports only the leaves.
"""
