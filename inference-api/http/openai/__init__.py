"""The OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions, and vLLM's
/tokenize and /detokenize, which take its prompt and message shapes.

routes validates and prepares a request (prompt, structured output, tools); serving makes its
answer, whole or as a stream of chunks, with logprobs in OpenAI's two shapes (logprobs). The
pydantic models are in protocol (request bodies), protocol_messages (messages, tools, tool
calls) and protocol_answers (answers). It may import the http package's shared modules, serving
and the leaves; never the native API beside it.
"""
