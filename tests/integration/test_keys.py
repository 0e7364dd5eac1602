"""Signing keys: first start, encryption at rest, the published JWKS, rotation, and several nodes.

Each test checks the rows in ``signing_keys`` as well as what the KeyManager and ``/jwks`` report.
Extra KeyManagers over ``runtime.db`` stand in for other nodes, or carry an injected clock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from sqlalchemy import delete

from idp.config import KeySettings, TokenSettings, decode_kek, generate_secrets, load_settings
from idp.oauth.keys import KeyManager
from idp.oauth.routes import JWKS_MAX_AGE
from idp.runtime import StartupError, open_runtime
from idp.security.encryption import DecryptionError, Encryptor, fingerprint
from idp.storage.models import SigningKey
from idp.storage.repositories import SigningKeyRepository

ALGS = ("RS256", "ES256", "Ed25519")
KEY_TYPES = {"RS256": ("RSA", None), "ES256": ("EC", "P-256"), "Ed25519": ("OKP", "Ed25519")}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
GRACE = timedelta(minutes=5)
DEFAULT_WINDOW = timedelta(seconds=2592000) + GRACE  # refresh_token_ttl (the longest) + grace
CLAIMS = {"iss": "http://127.0.0.1:8000", "sub": "alice", "aud": "rp-1", "iat": 1700000000}


# -- helpers ---------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """JWK thumbprint (RFC 7638 §3): SHA-256 over the required members, sorted, no whitespace."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_part(jwk: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name not in PRIVATE_MEMBERS}


def manager(
    runtime: Any,
    clock: FakeClock | None = None,
    *,
    keys: KeySettings | None = None,
    tokens: TokenSettings | None = None,
    kv: Any = "shared",
) -> KeyManager:
    """Another KeyManager over the same database (another node, or one with a fake clock)."""
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return KeyManager(
        runtime.db,
        runtime.encryptor,
        keys or runtime.settings.keys,
        tokens or runtime.settings.tokens,
        kv=runtime.kv if kv == "shared" else kv,
        **extra,
    )


async def key_rows(runtime: Any) -> list[SigningKey]:
    async with runtime.db.session() as session:
        return list(await SigningKeyRepository(session).all())


def snapshot(rows: list[SigningKey]) -> dict[str, tuple[Any, ...]]:
    return {
        row.kid: (
            row.alg,
            row.status,
            row.public_jwk,
            row.private_jwk_encrypted,
            row.created_at,
            row.retired_at,
            row.publish_until,
        )
        for row in rows
    }


def sign(loaded: Any, claims: dict[str, Any] = CLAIMS) -> str:
    return jwt.encode({"alg": loaded.alg, "kid": loaded.kid}, claims, loaded.key, algorithms=[loaded.alg])


async def fetch_jwks(client: Any) -> dict[str, Any]:
    response = await client.get("/jwks")
    assert response.status_code == 200
    return await response.get_json()


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """The shared overrides, plus ``request.param`` for tests parametrized indirectly."""
    return {**settings_overrides, **getattr(request, "param", {})}


# -- the thumbprint helper itself --------------------------------------------------------------------


def test_thumbprint_helper_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
            "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic"
            "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3"
            "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert rfc7638_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# -- first start -----------------------------------------------------------------------------------


async def test_first_start_creates_one_active_key_per_algorithm(runtime) -> None:
    rows = await key_rows(runtime)
    assert sorted(row.alg for row in rows) == sorted(ALGS)
    for row in rows:
        kty, crv = KEY_TYPES[row.alg]
        assert row.status == "active"
        assert row.retired_at is None
        assert row.publish_until is None
        assert row.created_at.tzinfo is not None
        assert abs(datetime.now(UTC) - row.created_at) < timedelta(minutes=5)
        assert row.public_jwk["kty"] == kty
        if crv is not None:
            assert row.public_jwk["crv"] == crv
        else:
            assert len(_b64url_decode(row.public_jwk["n"])) * 8 == runtime.settings.keys.rsa_key_size == 2048
        assert row.kid == rfc7638_thumbprint(row.public_jwk)
        assert row.public_jwk["kid"] == row.kid
        assert row.public_jwk["use"] == "sig"
        assert row.public_jwk["alg"] == row.alg
        assert not PRIVATE_MEMBERS & set(row.public_jwk)
        # The running manager signs with exactly these keys.
        loaded = runtime.keys.signing_key(row.alg)
        assert loaded.kid == row.kid
        assert loaded.status == "active"
        assert loaded.public_jwk == row.public_jwk
        assert rfc7638_thumbprint(loaded.key.as_dict(private=False)) == row.kid
    assert runtime.keys.signing_key().alg == "RS256"  # the first configured algorithm is the default


async def test_ensure_active_keys_twice_creates_nothing(runtime) -> None:
    before = snapshot(await key_rows(runtime))
    assert await runtime.keys.ensure_active_keys() == []
    assert await manager(runtime).ensure_active_keys() == []  # a second node starting later
    after = snapshot(await key_rows(runtime))
    assert after == before
    assert len(after) == 3


class _RacingStore:
    """The shared store, but both nodes must reach the bootstrap lock before either may take it:
    each has already seen "no keys" when they race for it."""

    def __init__(self, inner: Any, parties: int) -> None:
        self._inner = inner
        self._parties = parties
        self._barrier = asyncio.Barrier(parties)
        self.attempts = 0
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def set_if_absent(self, key: str, value: str, ttl: float | None = None) -> bool:
        self.attempts += 1
        if self.attempts <= self._parties:
            async with asyncio.timeout(10):
                await self._barrier.wait()
        created = await self._inner.set_if_absent(key, value, ttl=ttl)
        self.refused += not created
        return created


async def test_concurrent_first_start_of_two_nodes_creates_one_key_per_algorithm(runtime) -> None:
    async with runtime.db.session() as session:
        await session.execute(delete(SigningKey))
    assert await key_rows(runtime) == []

    store = _RacingStore(runtime.kv, parties=2)
    first, second = manager(runtime, kv=store), manager(runtime, kv=store)
    created = await asyncio.gather(first.ensure_active_keys(), second.ensure_active_keys())

    assert store.refused >= 1  # the lock really was contended
    assert sorted(len(kids) for kids in created) == [0, 3]
    rows = await key_rows(runtime)
    assert sorted(row.alg for row in rows) == sorted(ALGS)
    assert {row.status for row in rows} == {"active"}
    assert {row.kid for row in rows} == set(created[0]) | set(created[1])
    for alg in ALGS:
        assert first.signing_key(alg).kid == second.signing_key(alg).kid
    # The lock is released afterwards.
    assert await runtime.kv.get("lock:signing-keys") is None


class _LockTakenOverStore:
    """The shared store, where the bootstrap lock expires and another node takes it just after
    the first holder read its own token back (the gap a read-then-delete release leaves open)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _take_over(self, key: str) -> None:
        await self._inner.set(key, "another-node", ttl=30)

    async def get(self, key: str) -> str | None:
        value = await self._inner.get(key)
        await self._take_over(key)
        return value  # type: ignore[no-any-return]

    async def delete_if_equal(self, key: str, value: str) -> bool:
        await self._take_over(key)
        return await self._inner.delete_if_equal(key, value)  # type: ignore[no-any-return]


async def test_releasing_the_bootstrap_lock_never_deletes_another_holders_lock(runtime) -> None:
    """The release compares the token and deletes in one atomic step (architecture review):
    a node whose lock expired and was retaken must leave the new holder's lock in place."""
    from idp.oauth.keys import _KvLock

    store = _LockTakenOverStore(runtime.kv)
    async with _KvLock(store, "lock:test", ttl=5):
        assert (await runtime.kv.get("lock:test")) not in (None, "another-node")
    assert await runtime.kv.get("lock:test") == "another-node"


# -- encryption at rest ------------------------------------------------------------------------------


async def test_private_keys_are_encrypted_at_rest(runtime, test_secrets) -> None:
    encryptor = Encryptor(decode_kek(test_secrets["key_encryption_key"]))
    rows = await key_rows(runtime)
    assert len(rows) == 3
    for row in rows:
        stored = row.private_jwk_encrypted
        assert stored.split(".")[:2] == ["v1", fingerprint(decode_kek(test_secrets["key_encryption_key"]))]
        private = json.loads(encryptor.decrypt(stored, associated_data=row.kid.encode()))
        assert "d" in private
        assert public_part(private) == {k: v for k, v in row.public_jwk.items() if k not in ("kid", "use", "alg")}
        assert rfc7638_thumbprint(private) == row.kid

        secret_members = [name for name in PRIVATE_MEMBERS if name in private]
        assert set(secret_members) == ({"d", "p", "q", "dp", "dq", "qi"} if row.alg == "RS256" else {"d"})
        for name in secret_members:
            value = private[name]
            raw = _b64url_decode(value)
            for needle in (value, base64.b64encode(raw).decode(), raw.hex(), _b64url(raw[1:])):
                assert needle not in stored
            # No 16-character run of the private value shows through either.
            for start in range(0, len(value) - 16, 8):
                assert value[start : start + 16] not in stored
        assert '"d"' not in stored

        # The ciphertext is bound to its row: under another kid it doesn't decrypt.
        other_kid = next(other.kid for other in rows if other.kid != row.kid)
        with pytest.raises(DecryptionError):
            encryptor.decrypt(stored, associated_data=other_kid.encode())


async def test_start_with_another_kek_fails_and_leaves_keys_untouched(runtime, settings_overrides) -> None:
    before = snapshot(await key_rows(runtime))
    other = load_settings(environ={}, overrides={**settings_overrides, "secrets": generate_secrets()})

    with pytest.raises(StartupError) as excinfo:
        await open_runtime(other)
    message = str(excinfo.value)
    assert message.startswith("secrets.key_encryption_key: cannot decrypt the stored signing keys")
    assert "previous_key_encryption_keys" in message
    assert other.secrets.key_encryption_key.get_secret_value() not in message
    # Nothing was generated or overwritten by the failed start.
    assert snapshot(await key_rows(runtime)) == before


async def test_start_with_rotated_kek_reads_keys_through_previous_kek(
    runtime, settings_overrides, test_secrets
) -> None:
    before = snapshot(await key_rows(runtime))
    secrets = {**generate_secrets(), "previous_key_encryption_keys": [test_secrets["key_encryption_key"]]}
    rotated = load_settings(environ={}, overrides={**settings_overrides, "secrets": secrets})
    node = await open_runtime(rotated)
    try:
        for alg in ALGS:
            assert node.keys.signing_key(alg).kid == runtime.keys.signing_key(alg).kid
        for row in await key_rows(runtime):
            assert node.encryptor.needs_reencryption(row.private_jwk_encrypted) is True
    finally:
        await node.close()
    assert snapshot(await key_rows(runtime)) == before


# -- the published JWKS ------------------------------------------------------------------------------


async def test_jwks_endpoint_publishes_public_keys_only(client, runtime) -> None:
    response = await client.get("/jwks")
    assert response.status_code == 200
    assert response.mimetype == "application/jwk-set+json"
    assert response.headers["Content-Type"] == "application/jwk-set+json"
    directives = [part.strip() for part in response.headers["Cache-Control"].split(",")]
    assert "public" in directives
    assert "no-store" not in directives
    assert f"max-age={JWKS_MAX_AGE}" in directives
    assert JWKS_MAX_AGE > 0
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    body = await response.get_json()
    assert set(body) == {"keys"}
    rows = {row.kid: row for row in await key_rows(runtime)}
    assert sorted(key["kid"] for key in body["keys"]) == sorted(rows)
    for key in body["keys"]:
        assert key["use"] == "sig"
        assert key["alg"] == rows[key["kid"]].alg
        assert key["kty"] == KEY_TYPES[key["alg"]][0]
        assert not PRIVATE_MEMBERS & set(key)
        assert key == rows[key["kid"]].public_jwk
        assert rfc7638_thumbprint(key) == key["kid"]
    assert body == runtime.keys.jwks()

    # Relying parties can import it and verify what the current keys sign.
    keyset = KeySet.import_key_set(body)
    for alg in ALGS:
        token = jwt.decode(sign(runtime.keys.signing_key(alg)), keyset, algorithms=[alg])
        assert token.claims == CLAIMS
        assert not any(isinstance(key, RSAKey | ECKey | OKPKey) and key.is_private for key in keyset.keys)


# -- rotation --------------------------------------------------------------------------------------


async def test_rotation_keeps_old_keys_published_until_their_tokens_expire(client, runtime) -> None:
    # Rotated "3 minutes from the start" on this node's clock, which is in the serving node's past:
    # an immediate hand-over there has happened by the time it reloads.
    clock = FakeClock(datetime.now(UTC).replace(microsecond=250000) - timedelta(minutes=10))
    node = manager(runtime, clock)
    await node.reload()
    before_rows = {row.kid: row for row in await key_rows(runtime)}
    old = {alg: node.signing_key(alg) for alg in ALGS}
    assert {alg: key.kid for alg, key in old.items()} == {alg: runtime.keys.signing_key(alg).kid for alg in ALGS}
    old_tokens = {alg: sign(key) for alg, key in old.items()}

    rotated_at = clock.advance(timedelta(minutes=3))
    new_kids = await node.rotate(immediately=True)

    # Storage: three new active keys, the three old ones retired with the publication window.
    assert len(new_kids) == 3
    assert not set(new_kids) & {key.kid for key in old.values()}
    rows = {row.kid: row for row in await key_rows(runtime)}
    assert len(rows) == 6
    assert node.max_token_lifetime == timedelta(seconds=2592000)
    for alg, key in old.items():
        row = rows[key.kid]
        assert (row.alg, row.status) == (alg, "retired")
        assert row.retired_at == rotated_at
        assert row.publish_until == rotated_at + DEFAULT_WINDOW
        assert row.created_at == before_rows[key.kid].created_at
        assert row.private_jwk_encrypted == before_rows[key.kid].private_jwk_encrypted
    new_rows = [rows[kid] for kid in new_kids]
    assert sorted(row.alg for row in new_rows) == sorted(ALGS)
    for row in new_rows:
        assert row.status == "active"
        assert row.created_at == rotated_at
        assert row.retired_at is None
        assert row.publish_until is None
        assert row.kid == rfc7638_thumbprint(row.public_jwk)

    # The rotating node signs with the new keys and still verifies the old ones.
    new = {alg: node.signing_key(alg) for alg in ALGS}
    assert {key.kid for key in new.values()} == set(new_kids)
    for alg in ALGS:
        assert new[alg].alg == alg
        assert rows[new[alg].kid].alg == alg
        retired = node.verification_key(old[alg].kid)
        assert retired is not None
        assert retired.status == "retired"
        assert retired.publish_until == rotated_at + DEFAULT_WINDOW
    assert sorted(key["kid"] for key in node.jwks()["keys"]) == sorted(rows)

    # The serving node, once it has re-read the key set, publishes old and new over /jwks.
    await runtime.keys.reload()
    body = await fetch_jwks(client)
    assert sorted(key["kid"] for key in body["keys"]) == sorted(rows)
    assert all(not PRIVATE_MEMBERS & set(key) for key in body["keys"])
    keyset = KeySet.import_key_set(body)
    new_only = KeySet.import_key_set({"keys": [key for key in body["keys"] if key["kid"] in new_kids]})
    for alg in ALGS:
        assert runtime.keys.signing_key(alg).kid == new[alg].kid
        # A token signed before the rotation still verifies against the published set ...
        token = jwt.decode(old_tokens[alg], keyset, algorithms=[alg])
        assert token.header["kid"] == old[alg].kid
        assert token.claims == CLAIMS
        # ... it is really the old key that verifies it ...
        with pytest.raises(InvalidKeyIdError):
            jwt.decode(old_tokens[alg], new_only, algorithms=[alg])
        # ... and new signatures carry the new kid.
        fresh = jwt.decode(sign(runtime.keys.signing_key(alg)), keyset, algorithms=[alg])
        assert fresh.header["kid"] == new[alg].kid
        assert fresh.header["alg"] == alg


async def test_retired_key_window_is_longest_token_lifetime_plus_grace(runtime) -> None:
    cases = [
        (TokenSettings(), timedelta(seconds=2592000)),  # refresh token the longest
        (
            TokenSettings(access_token_ttl=600, id_token_ttl=7200, refresh_token_ttl=3600, refresh_token_idle_ttl=600),
            timedelta(seconds=7200),  # ID token the longest
        ),
        (
            TokenSettings(access_token_ttl=86400, id_token_ttl=3600, refresh_token_ttl=60, refresh_token_idle_ttl=60),
            timedelta(seconds=86400),  # access token the longest
        ),
    ]
    clock = FakeClock(datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    for tokens, window in cases:
        node = manager(runtime, clock, tokens=tokens)
        await node.reload()
        assert node.max_token_lifetime == window
        old_kid = node.signing_key("ES256").kid
        rotated_at = clock.advance(timedelta(hours=1, microseconds=7))
        [new_kid] = await node.rotate(["ES256"], immediately=True)
        rows = {row.kid: row for row in await key_rows(runtime)}
        assert rows[old_kid].status == "retired"
        assert rows[old_kid].retired_at == rotated_at
        assert rows[old_kid].publish_until == rotated_at + window + GRACE
        assert (rows[new_kid].status, rows[new_kid].created_at) == ("active", rotated_at)


async def test_retired_key_disappears_after_its_window_and_is_purged(runtime) -> None:
    clock = FakeClock(datetime.now(UTC))
    node = manager(runtime, clock)
    await node.reload()
    old = node.signing_key("ES256")
    old_token = sign(old)
    [new_kid] = await node.rotate(["ES256"], immediately=True)
    publish_until = clock.now + DEFAULT_WINDOW
    assert {row.kid: row.publish_until for row in await key_rows(runtime)}[old.kid] == publish_until

    # Just inside the window: published, verifiable, not purgeable.
    clock.now = publish_until - timedelta(microseconds=1)
    await node.reload()
    assert old.kid in {key["kid"] for key in node.jwks()["keys"]}
    assert node.verification_key(old.kid) is not None
    jwt.decode(old_token, KeySet.import_key_set(node.jwks()), algorithms=["ES256"])
    assert await node.purge_expired() == 0
    assert old.kid in {row.kid for row in await key_rows(runtime)}

    # At the end of the window, without a reload: gone from the JWKS and from verification.
    clock.now = publish_until
    assert old.kid not in {key["kid"] for key in node.jwks()["keys"]}
    assert old.kid not in {key.kid for key in node.published()}
    assert node.verification_key(old.kid) is None
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(old_token, KeySet.import_key_set(node.jwks()), algorithms=["ES256"])
    # A node that reloads now doesn't load it at all.
    late = manager(runtime, FakeClock(publish_until + timedelta(seconds=1)))
    await late.reload()
    assert late.verification_key(old.kid) is None
    assert len(late.jwks()["keys"]) == 3
    # The row is still there until purged ...
    assert {row.kid: row.status for row in await key_rows(runtime)}[old.kid] == "retired"

    # ... and purge deletes exactly that row.
    assert await node.purge_expired() == 1
    rows = await key_rows(runtime)
    assert old.kid not in {row.kid for row in rows}
    assert sorted(row.alg for row in rows) == sorted(ALGS)
    assert {row.status for row in rows} == {"active"}
    assert node.signing_key("ES256").kid == new_kid
    assert node.verification_key(new_kid) is not None
    assert sorted(key["kid"] for key in node.jwks()["keys"]) == sorted(row.kid for row in rows)
    assert await node.purge_expired() == 0


async def test_rotating_one_algorithm_leaves_the_others_unchanged(runtime) -> None:
    node = manager(runtime)
    await node.reload()
    before = snapshot(await key_rows(runtime))
    old = {alg: node.signing_key(alg).kid for alg in ALGS}

    [new_kid] = await node.rotate(["ES256"], immediately=True)

    after = snapshot(await key_rows(runtime))
    assert len(after) == 4
    for alg in ("RS256", "Ed25519"):
        assert after[old[alg]] == before[old[alg]]
        assert node.signing_key(alg).kid == old[alg]
    assert after[old["ES256"]][1] == "retired"
    assert after[new_kid][:2] == ("ES256", "active")
    assert node.signing_key("ES256").kid == new_kid
    assert sorted(key["kid"] for key in node.jwks()["keys"]) == sorted(after)


async def test_rotation_with_the_old_eddsa_name_rotates_the_ed25519_key(runtime) -> None:
    node = manager(runtime)
    await node.reload()
    old = node.signing_key("Ed25519").kid
    [new_kid] = await node.rotate(["EdDSA"], immediately=True)
    rows = {row.kid: row for row in await key_rows(runtime)}
    assert len(rows) == 4
    assert (rows[old].alg, rows[old].status) == ("Ed25519", "retired")
    assert (rows[new_kid].alg, rows[new_kid].status) == ("Ed25519", "active")
    assert rows[new_kid].public_jwk["alg"] == "Ed25519"
    assert [row.alg for row in rows.values() if row.status == "active"].count("Ed25519") == 1
    assert node.signing_key("EdDSA").kid == new_kid
    assert await node.ensure_active_keys() == []


async def test_failed_rotation_changes_nothing(runtime) -> None:
    node = manager(runtime)
    await node.reload()
    before = snapshot(await key_rows(runtime))
    with pytest.raises(ValueError, match="PS256"):
        await node.rotate(["ES256", "PS256"], immediately=True)
    assert snapshot(await key_rows(runtime)) == before
    await node.reload()
    assert {alg: node.signing_key(alg).kid for alg in ALGS} == {row[0]: kid for kid, row in before.items()}


async def test_signing_key_accepts_the_old_eddsa_name(runtime) -> None:
    keys = runtime.keys
    ed25519 = keys.signing_key("Ed25519")
    assert keys.signing_key("EdDSA") is ed25519
    assert ed25519.alg == "Ed25519"
    assert isinstance(ed25519.key, OKPKey)
    assert ed25519.public_jwk["crv"] == "Ed25519"
    assert ed25519.public_jwk["alg"] == "Ed25519"
    rows = {row.kid: row.alg for row in await key_rows(runtime)}
    assert rows[ed25519.kid] == "Ed25519"
    assert keys.signing_key() is keys.signing_key("RS256")
    with pytest.raises(LookupError, match="no active signing key for PS256"):
        keys.signing_key("PS256")


# -- several nodes -----------------------------------------------------------------------------------


async def test_second_node_sees_a_rotation_after_reload(runtime) -> None:
    first, second = manager(runtime), manager(runtime)
    await first.reload()
    await second.reload()
    old = second.signing_key("ES256").kid

    [new_kid] = await first.rotate(["ES256"], immediately=True)
    # Until it re-reads the database, the other node still has the old view.
    assert second.signing_key("ES256").kid == old
    assert second.verification_key(new_kid) is None

    await second.reload()
    assert second.signing_key("ES256").kid == new_kid
    assert second.verification_key(new_kid) is not None
    retired = second.verification_key(old)
    assert retired is not None
    assert retired.status == "retired"
    assert sorted(key["kid"] for key in second.jwks()["keys"]) == sorted(key["kid"] for key in first.jwks()["keys"])
    assert len(second.jwks()["keys"]) == 4


@pytest.mark.parametrize("settings_overrides", [{"keys": {"reload_interval": 1}}], indirect=True)
async def test_nodes_pick_up_a_rotation_once_the_reload_interval_has_passed(client, runtime) -> None:
    assert runtime.settings.keys.reload_interval == 1
    watcher = manager(runtime, keys=KeySettings(reload_interval=1))
    await watcher.reload()
    await runtime.keys.reload()
    loaded_at = time.monotonic()
    old = runtime.keys.signing_key("ES256").kid

    # On another node whose announcement is lost (kv=None: it announces nothing), so the serving
    # node can only learn of it by its periodic reload; with Redis it would otherwise hear at once.
    [new_kid] = await manager(runtime, kv=None).rotate(["ES256"], immediately=True)

    # Within the interval both still serve what they loaded.
    await watcher.refresh_if_stale()
    assert watcher.signing_key("ES256").kid == old
    body = await fetch_jwks(client)
    assert new_kid not in {key["kid"] for key in body["keys"]}
    assert runtime.keys.signing_key("ES256").kid == old
    assert time.monotonic() - loaded_at < 1  # otherwise the checks above proved nothing

    await asyncio.sleep(max(0.0, loaded_at + 1.05 - time.monotonic()))

    await watcher.refresh_if_stale()
    assert watcher.signing_key("ES256").kid == new_kid
    body = await fetch_jwks(client)  # the request hook refreshes the serving node
    assert {old, new_kid} <= {key["kid"] for key in body["keys"]}
    assert len(body["keys"]) == 4
    assert runtime.keys.signing_key("ES256").kid == new_kid
