"""The JWT-authenticating reverse proxy in front of the Inference API, on asyncio and aiohttp.

It checks each request's Bearer token (auth), relays the request and streams the answer back
(app, relay, forward, exchange), holds slow and hostile clients to limits (body, limits,
protocol), drains on SIGTERM (drain), serves the chat page (static) and its own metrics. It
imports only `common` from the project.
"""
