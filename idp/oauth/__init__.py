"""The protocol core: OAuth 2.0 and OpenID Connect. Only routes.py talks to Quart."""
