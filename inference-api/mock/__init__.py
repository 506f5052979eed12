"""The mock backend's runner: the engine, queues and messages of the real one, no model, no torch.

MockRunner (runner) sleeps MOCK_STEP_MS a step and gives each row its next token number; the
text of token i is a word of the prompt and i (text), so tests can predict every answer.
Structured outputs draw bytes the grammar allows, reproducibly (grammar). It may import engine,
sampling's torch-free closing search and the leaves.
"""
