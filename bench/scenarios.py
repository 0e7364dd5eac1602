"""The scenarios of bench/run.py and the issue-14 targets they are held to."""

from __future__ import annotations

from dataclasses import dataclass

SERVERS = ("peer", "idp_pg", "idp_embedded")
IDP_SERVERS = ("idp_pg", "idp_embedded")
LABELS = {"peer": "node-oidc-provider", "idp_pg": "idp PostgreSQL + Redis", "idp_embedded": "idp embedded"}
CONNECTIONS = 8  # wrk's connections, and the Python generator's workers for refresh and code exchange
LOW_CONNECTIONS = 2  # the embedded configuration again, for its p99 target
FAMILIES_PER_WORKER = 4  # refresh-token families per generator worker
SIGNIN_CLIENTS = 16  # browsers signing in at once: more than idp's hash threads, to saturate them
SIGNIN_USERS = 4
LOOP_STALL_MS = 10.0  # issue 14: the event loop never blocked longer than this
X = "\u00d7"  # the multiplication sign of the ratios


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    alg: str  # the server group it runs in (the access-token signing algorithm)
    method: str = "GET"
    path: str = ""
    body: str = ""
    auth: str = ""  # "client" (Basic), "user" (Bearer user access token) or ""
    target: float | None = 1.0  # issue 14: idp / peer req/s at least this (None: no such target)
    p99_factor: float | None = None  # issue 14: idp p99 at most this times the peer's
    # "wrk", or the Python generator's "refresh", "code", "signin" (and the bare argon2id rate),
    # "storm" (client_credentials by wrk while the generator signs in)
    kind: str = "wrk"
    servers: tuple[str, ...] = SERVERS
    low: bool = True  # the embedded configuration also at LOW_CONNECTIONS

    @property
    def generated(self) -> bool:
        return self.kind != "wrk"


CC = "grant_type=client_credentials&scope=api"
SCENARIOS = (
    Scenario("cc_rs256", "client_credentials, RS256", "RS256", "POST", "/token", CC, "client", 0.5, 2.0),
    Scenario("cc_es256", "client_credentials, ES256", "ES256", "POST", "/token", CC, "client", 0.5, 2.0),
    Scenario("cc_ed25519", "client_credentials, Ed25519", "Ed25519", "POST", "/token", CC, "client", 0.5, 2.0),
    Scenario(
        "introspection",
        "introspection of a user access token",
        "RS256",
        "POST",
        "/introspect",
        "token={user}&token_type_hint=access_token",
        "client",
        0.5,
    ),
    Scenario("userinfo", "userinfo (GET, Bearer)", "RS256", "GET", "/userinfo", "", "user", 0.5),
    Scenario("jwks", "JWKS", "RS256", "GET", "/jwks", target=1.0),
    Scenario("discovery", "discovery", "RS256", "GET", "/.well-known/openid-configuration", target=1.0),
    # The generator's scenarios run last in their group: the peer's in-memory store keeps about
    # 2,000 entries (an LRU), and the rotated tokens and codes would push out the user access token
    # the wrk scenarios use.
    Scenario(
        "refresh",
        "refresh_token grant with rotation, ES256",
        "ES256",
        "POST",
        "/token",
        kind="refresh",
        target=1.0,
    ),
    Scenario(
        "code",
        "authorization code exchange with a session (authorize + token), ES256",
        "ES256",
        "GET",
        "/authorize",
        kind="code",
        target=None,
    ),
    Scenario(
        "signin",
        "password sign-in (form GET + POST)",
        "ES256",
        "POST",
        "/login",
        kind="signin",
        target=None,
        servers=IDP_SERVERS,
        low=False,
    ),
    Scenario(
        "storm",
        "client_credentials, ES256, during a sign-in storm",
        "ES256",
        "POST",
        "/token",
        CC,
        "client",
        target=None,
        kind="storm",
        servers=("idp_pg",),
        low=False,
    ),
)
NOT_YET = (
    "registration and password change (the password-strength estimate, zxcvbn, up to about 65 ms a "
    "password: issue 14 asks for its loop stall)",
    "WebSocket notification fan-out (bench/notifications.py measures idp's alone, not side by side)",
)
