"""What the API server and the proxy share: settings read from the environment and checked
(settings), and the rule for X-Request-ID values (request_id). It imports nothing of either.
"""
