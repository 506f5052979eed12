"""OpenAI's Responses API: POST /v1/responses (whole or streamed as its typed events), GET and
DELETE /v1/responses/{id}, with function tools, text.format and stored responses that a later
request continues with previous_response_id.

protocol holds the request body (pydantic) and turns its input items into the chat template's
turns; store keeps stored responses in memory, bounded in count and age; routes validates,
builds the prompt and answers in one piece; stream makes the streamed events; answers holds
what both share (output items, usage, the response object); protocol_answers describes the
answers for /openapi.json. They generate
through the http package's shared conversation module, as the OpenAI routes do; they may import
the http package's shared modules, serving and the leaves, never another API's subpackage.
"""
