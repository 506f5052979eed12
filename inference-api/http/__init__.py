"""The HTTP side of the server process: the Flask app, one subpackage per API, what they share.

It owns the app factory and gunicorn worker (app, worker), the request plumbing every route
uses (plumbing: bodies, limits, validation; errors: the error shapes; fields: request field
types; samples: a request's generations collected or streamed as SSE; conversation: what the
chat-like APIs share, turns and tools to a prompt and an answer read back as text and tool
calls), /health, /metrics and /openapi.json, and the APIs: native/ (/inference, /predictions,
/generate), openai/ (/v1/models, completions, chat completions, /tokenize, /detokenize),
responses/ (OpenAI's Responses API) and anthropic/ (Anthropic's Messages API). It reaches the
backend only through serving's EngineClient, and may import serving, the package's leaves and
`common`; nothing below serving.
"""
