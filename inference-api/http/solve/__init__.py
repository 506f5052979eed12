"""The task routes: POST /solve/math and /solve/coding (JSON or SSE).

prompts wraps a problem in its settable template; extract reads the answer or the code from a
solution (pure functions); protocol holds the request body and the answers as pydantic models;
routes validates, generates and answers. It may import the http package's shared modules,
serving and the leaves; never another API's subpackage.
"""
