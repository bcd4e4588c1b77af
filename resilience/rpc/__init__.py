"""Nameko-style RPC over HTTP: service classes, ``@rpc`` and dependencies, the server that turns a
service into an aiohttp app, the client proxy (with group commit), and request signing."""
