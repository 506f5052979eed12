"""The JWT-authenticating reverse proxy in front of the Inference API, on asyncio and aiohttp.

It checks each request's Bearer token (auth) and its policy claims (claims: which models,
checked by access; its own rate limits, counted by ratelimit in a rate_store from the usage of
the answers), relays the request and streams the answer back (app, relay, forward, exchange),
holds slow and hostile clients to limits (body, limits, protocol), drains on SIGTERM (drain),
serves the chat page (static), and its own metrics on a port of their own. It imports only
`common` from the project.
"""
