"""Live notifications to the user's open apps: the hub (idp.accounts.live.hub) and its WebSocket
(idp.accounts.live.socket)."""
