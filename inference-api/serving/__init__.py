"""The server process's side of the link to the backend, without Flask: what every API needs
to turn a request into generations and back.

EngineClient (engine_client) is the HTTP side's one way in: admission (ready, not too full,
max_tokens that fit), a request's outputs as they come, cancel when the client leaves, the
request log. BackendLink (backend_link) starts the backend process, reads its output queue in
one thread and restarts it when it dies. Models (models) holds one EngineClient per served
model (MODELS), each with its own backend, and resolves the names requests ask for. Prompts
become token ids here (prompts, templates, tokenizers), a structured output becomes a checked
grammar (grammars), and tools become a prompt and a schema in the generic format, read back as
the answer streams (tool_format, tool_stream). Its errors (errors) say why a request is refused;
the HTTP side picks the status.
It may import backend (to start the process) and the leaves.
"""
