"""Anthropic's Messages API: POST /v1/messages (whole or streamed as Anthropic's events) and
POST /v1/messages/count_tokens, with tools and Anthropic's error shape.

protocol holds the request bodies (pydantic) and turns their messages and tools into the chat
template's turns and serving's ToolUse; routes validates, builds the prompt and answers in one
piece; stream makes the streamed events; answers holds what both share (tool_use blocks,
stop_reason, usage); protocol_answers describes the answers for /openapi.json. They generate
through the http package's shared conversation module, as the OpenAI routes do; they may import
the http package's shared modules, serving and the leaves, never another API's subpackage.
"""
