"""The native API: /inference and /predictions (plain text streams) and /generate (JSON or SSE).

protocol holds its request bodies and answer shapes as pydantic models; routes and generate
hold the routes and make their answers. It may import the http package's shared modules,
serving and the leaves; never the openai API beside it.
"""
