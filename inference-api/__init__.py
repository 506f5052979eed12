"""Inference API: a streaming LLM server with continuous batching, in two processes.

A request goes down the layers in this order, and each layer imports only the ones below it:

    http/      the server process's HTTP side: Flask app, routes per API, answers, metrics
    serving/   the server's link to the backend: admission, prompts, the process and its queues
    backend/   the backend process: builds the engine on the model or the mock, serves the queues
    model/     the real runner: our forward pass, its attention and weights, loading
    mock/      the mock runner: the same engine and messages, no model and no torch
    engine/    continuous batching: scheduler, step plan, prefix reuse, sequences, text
    sampling/  drawing tokens, log probabilities, structured outputs' per-row grammars

The modules at this level are the leaves every layer may share: `config` (the settings),
`sampling_params` (a request's sampling parameters and limits), `process_messages` (what goes
over the queues between the two processes) and `quote` (short quotes in messages).
tests/test_layout.py holds the package to these rules.
"""
