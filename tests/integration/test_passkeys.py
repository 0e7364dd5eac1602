"""Passkeys (idp.accounts.security.passkeys): WebAuthn registration, second-factor and passwordless sign-in,
and management, on both databases and both key-value stores.

The browser and authenticator are tests/webauthn_soft.py. Every refusal asserts the reason and
that nothing was stored or updated. Covers WebAuthn §7.1/§7.2 (origin, RP ID, challenge, type,
user presence and verification, signature), §6.1.1 (signature counter), §6.1.3 (backup flags),
§14.6.1 (user handle), ASVS 6.5.6 (a passkey can be removed) and 6.7.2 (challenge size).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
from sqlalchemy import pool, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from idp.accounts.security import mfa, passkeys
from idp.accounts.security.passkeys import Passkey, PasskeyAssertion
from idp.accounts.security.relying_party import PasskeyError, RelyingParty, ceremony_key
from idp.accounts.users import AccountError
from idp.storage import migrate
from idp.storage.models import AuditEvent, MfaCredential, utcnow
from tests.oauth_helpers import add_user
from tests.webauthn_soft import (
    ExcludedCredential,
    SoftAuthenticator,
    b64url,
    decode_attestation,
    tamper_attestation_signature,
    tamper_authenticator_data,
    tamper_signature,
    unb64url,
    with_attestation_object,
    with_client_data,
    with_public_key,
)

ORIGIN = "http://localhost:8000"
RP = RelyingParty(id="localhost", name="idp test", origins=(ORIGIN,))
BROWSER = "browser-binding-1"
ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSKEY_EVENTS = ("passkey_registered", "passkey_renamed", "passkey_removed", "mfa_enabled", "mfa_disabled")


# -- helpers --------------------------------------------------------------------------------


async def begin_registration(
    runtime: Any, user_id: str, *, binding: str = BROWSER, rp: RelyingParty = RP
) -> tuple[str, dict[str, Any]]:
    return await passkeys.registration_options(
        runtime.db, runtime.kv, rp, user_id=user_id, user_name=ALICE, display_name="Alice", binding=binding
    )


async def finish_registration(
    runtime: Any,
    user_id: str,
    ceremony_id: str,
    credential: Any,
    *,
    name: str = "Phone",
    binding: str = BROWSER,
    rp: RelyingParty = RP,
) -> Passkey:
    return await passkeys.register_passkey(
        runtime.db,
        runtime.kv,
        runtime.events,
        rp,
        user_id=user_id,
        ceremony_id=ceremony_id,
        binding=binding,
        credential=credential,
        name=name,
    )


async def register(
    runtime: Any, user_id: str, authenticator: SoftAuthenticator, *, name: str = "Phone", **create: Any
) -> tuple[Passkey, dict[str, Any]]:
    """A passkey registered end to end: (what the list shows, the browser's response)."""
    ceremony_id, options = await begin_registration(runtime, user_id)
    response = authenticator.create(options, origin=ORIGIN, **create)
    return await finish_registration(runtime, user_id, ceremony_id, response, name=name), response


async def begin_sign_in(
    runtime: Any, user_id: str | None, *, binding: str = BROWSER, rp: RelyingParty = RP
) -> tuple[str, dict[str, Any]]:
    return await passkeys.authentication_options(runtime.db, runtime.kv, rp, user_id=user_id, binding=binding)


async def finish_sign_in(
    runtime: Any, ceremony_id: str, credential: Any, *, binding: str = BROWSER, rp: RelyingParty = RP
) -> PasskeyAssertion:
    return await passkeys.authenticate_passkey(
        runtime.db, runtime.kv, rp, ceremony_id=ceremony_id, binding=binding, credential=credential
    )


async def sign_in(runtime: Any, user_id: str | None, authenticator: SoftAuthenticator, **get: Any) -> PasskeyAssertion:
    ceremony_id, options = await begin_sign_in(runtime, user_id)
    return await finish_sign_in(runtime, ceremony_id, authenticator.get(options, origin=ORIGIN, **get))


async def rows(runtime: Any, user_id: str | None = None) -> list[MfaCredential]:
    async with runtime.db.session() as session:
        query = select(MfaCredential).order_by(MfaCredential.created_at)
        if user_id is not None:
            query = query.where(MfaCredential.user_id == user_id)
        return list((await session.execute(query)).scalars())


async def state(runtime: Any) -> list[tuple[Any, ...]]:
    """Everything a refused ceremony must leave as it was."""
    return [
        (row.id, row.user_id, row.name, row.credential_id, row.sign_count, row.last_used_at, row.backed_up)
        for row in await rows(runtime)
    ]


async def audit(runtime: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    async with runtime.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.event.in_(PASSKEY_EVENTS)).order_by(AuditEvent.id)
        found = (await session.execute(query)).scalars().all()
    return [(row.event, row.subject_id, {k: v for k, v in row.details.items() if k != "via"}) for row in found]


async def expire_ceremony(runtime: Any, ceremony_id: str) -> None:
    """Let the store expire the ceremony the way its TTL would (without waiting 5 minutes)."""
    key = ceremony_key(ceremony_id)
    assert await runtime.kv.expire(key, 0.001)
    await asyncio.sleep(0.05)
    assert not await runtime.kv.exists(key)


async def ceremony_exists(runtime: Any, ceremony_id: str) -> bool:
    return bool(await runtime.kv.exists(ceremony_key(ceremony_id)))


@pytest.fixture
async def alice(runtime: Any) -> str:
    return await add_user(runtime, ALICE)


@pytest.fixture
async def bob(runtime: Any) -> str:
    return await add_user(runtime, BOB)


@pytest.fixture
def phone() -> SoftAuthenticator:
    return SoftAuthenticator()


# -- registration options -------------------------------------------------------------------


async def test_registration_options(runtime: Any, alice: str) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)

    assert options["rp"] == {"id": "localhost", "name": "idp test"}
    # user.id is the opaque account id, no personal data (WebAuthn §14.6.1).
    assert options["user"] == {"id": b64url(alice.encode()), "name": ALICE, "displayName": "Alice"}
    assert len(unb64url(options["challenge"])) >= 32  # ASVS 6.7.2
    assert [param["alg"] for param in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert {param["type"] for param in options["pubKeyCredParams"]} == {"public-key"}
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["extensions"] == {"credProps": True}
    assert options["timeout"] == RP.timeout_ms
    assert options["excludeCredentials"] == []
    json.dumps(options)  # ready for the browser as it is

    # The store holds the ceremony under a digest of its id, for challenge_ttl seconds.
    assert len(ceremony_id) >= 43
    assert await runtime.kv.get(f"webauthn:ceremony:{ceremony_id}") is None
    ttl = await runtime.kv.ttl(ceremony_key(ceremony_id))
    assert ttl is not None and RP.challenge_ttl - 5 < ttl <= RP.challenge_ttl
    stored = json.loads(await runtime.kv.get(ceremony_key(ceremony_id)))
    assert stored["challenge"] == options["challenge"]
    assert stored["user_id"] == alice
    assert BROWSER not in json.dumps(stored)

    other_id, other = await begin_registration(runtime, alice)
    assert other_id != ceremony_id
    assert other["challenge"] != options["challenge"]


async def test_exclude_credentials_lists_the_users_passkeys(runtime: Any, alice: str, bob: str) -> None:
    phone, key = SoftAuthenticator(), SoftAuthenticator(transports=("usb", "nfc"), attachment="cross-platform")
    await register(runtime, alice, phone)
    await register(runtime, alice, key, name="YubiKey")
    await register(runtime, bob, SoftAuthenticator())

    _, options = await begin_registration(runtime, alice)

    [one, two] = await rows(runtime, alice)
    assert options["excludeCredentials"] == [
        {"id": one.credential_id, "type": "public-key", "transports": ["internal", "hybrid"]},
        {"id": two.credential_id, "type": "public-key", "transports": ["usb", "nfc"]},
    ]
    # The browser then refuses to make a second passkey on an authenticator that has one.
    with pytest.raises(ExcludedCredential):
        phone.create(options, origin=ORIGIN)
    assert SoftAuthenticator().create(options, origin=ORIGIN)


async def test_registration_options_for_an_account_at_the_limit(
    runtime: Any, alice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passkeys, "MAX_PASSKEYS", 2)
    await register(runtime, alice, SoftAuthenticator())
    late_ceremony, late_options = await begin_registration(runtime, alice)  # started at one passkey
    await register(runtime, alice, SoftAuthenticator())

    with pytest.raises(PasskeyError) as caught:
        await begin_registration(runtime, alice)
    assert caught.value.reason == "limit"
    # A ceremony started before the limit was reached is refused at the end too.
    with pytest.raises(PasskeyError) as caught:
        await finish_registration(
            runtime, alice, late_ceremony, SoftAuthenticator().create(late_options, origin=ORIGIN)
        )
    assert caught.value.reason == "limit"
    assert await passkeys.count_passkeys(runtime.db, alice) == 2


# -- registration ---------------------------------------------------------------------------


async def test_register_stores_the_passkey_and_publishes(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    before = utcnow()
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)

    passkey = await finish_registration(runtime, alice, ceremony_id, response, name="  My phone  ")

    [row] = await rows(runtime, alice)
    credential = phone.credential(response["id"])
    assert row.id == passkey.id
    assert (row.type, row.name, row.credential_id) == ("webauthn", "My phone", response["id"])
    assert unb64url(row.public_key or "") == credential.cose_public_key()
    assert (row.sign_count, row.transports, row.aaguid) == (
        0,
        ["internal", "hybrid"],
        "01234567-89ab-cdef-0123-456789abcdef",
    )
    assert (row.backup_eligible, row.backed_up, row.discoverable) == (False, False, True)
    assert row.confirmed_at is not None and before <= row.confirmed_at <= utcnow()
    assert row.created_at == row.confirmed_at
    assert row.last_used_at is None
    assert row.secret_encrypted is None and row.last_used_step is None
    assert passkey == Passkey(
        id=row.id,
        name="My phone",
        created_at=row.created_at,
        last_used_at=None,
        discoverable=True,
        backed_up=False,
        backup_eligible=False,
        transports=("internal", "hybrid"),
    )
    assert await audit(runtime) == [
        ("passkey_registered", alice, {"passkey": row.id, "discoverable": True}),
        ("mfa_enabled", alice, {"method": "webauthn"}),
    ]
    assert await mfa.has_second_factor(runtime.db, alice)
    assert await passkeys.count_passkeys(runtime.db, alice) == 1
    assert not await ceremony_exists(runtime, ceremony_id)


async def test_mfa_enabled_only_for_the_first_passkey(runtime: Any, alice: str, bob: str) -> None:
    first, _ = await register(runtime, alice, SoftAuthenticator())
    second, _ = await register(runtime, alice, SoftAuthenticator(), name="Laptop")
    bobs, _ = await register(runtime, bob, SoftAuthenticator())

    assert await audit(runtime) == [
        ("passkey_registered", alice, {"passkey": first.id, "discoverable": True}),
        ("mfa_enabled", alice, {"method": "webauthn"}),
        ("passkey_registered", alice, {"passkey": second.id, "discoverable": True}),
        ("passkey_registered", bob, {"passkey": bobs.id, "discoverable": True}),
        ("mfa_enabled", bob, {"method": "webauthn"}),
    ]


async def test_packed_self_attestation_and_backup_flags(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    passkey, _ = await register(runtime, alice, phone, fmt="packed", backup_eligible=True, backed_up=True)

    [row] = await rows(runtime, alice)
    assert (row.backup_eligible, row.backed_up) == (True, True)
    assert (passkey.backup_eligible, passkey.backed_up) == (True, True)


@pytest.mark.parametrize(("reported", "stored", "published"), [(None, None, False), (False, False, False)])
async def test_discoverable_as_credprops_reports_it(
    runtime: Any, alice: str, reported: bool | None, stored: bool | None, published: bool
) -> None:
    passkey, _ = await register(runtime, alice, SoftAuthenticator(), discoverable=reported)

    [row] = await rows(runtime, alice)
    assert row.discoverable is stored
    assert passkey.discoverable is stored
    assert (await audit(runtime))[0] == ("passkey_registered", alice, {"passkey": row.id, "discoverable": published})


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (["usb", "bogus", "usb", "nfc", "smart-card", "ble", "cable", "hybrid", "internal"], None),
        ("usb", []),
        ([], []),
    ],
)
async def test_only_known_transports_are_stored(runtime: Any, alice: str, sent: Any, stored: Any) -> None:
    await register(runtime, alice, SoftAuthenticator(), transports=sent)

    [row] = await rows(runtime, alice)
    expected = ["usb", "nfc", "smart-card", "ble", "cable", "hybrid", "internal"] if stored is None else stored
    assert row.transports == expected


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\x00b", "tab\there", "\u202eevil", "zero\u200bwidth"])
async def test_a_bad_name_is_refused_before_the_ceremony_is_used(
    runtime: Any, alice: str, phone: SoftAuthenticator, name: str
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)

    with pytest.raises(AccountError) as caught:
        await finish_registration(runtime, alice, ceremony_id, response, name=name)
    assert caught.value.field == "name"
    assert not isinstance(caught.value, PasskeyError)
    assert await rows(runtime) == []
    # The user corrects the name and sends the same response again.
    passkey = await finish_registration(runtime, alice, ceremony_id, response, name="Phone 👨\u200d👩\u200d👧")
    assert passkey.name == "Phone 👨\u200d👩\u200d👧"


async def test_a_second_accepted_origin(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    rp = RelyingParty(id="localhost", name="idp test", origins=(ORIGIN, "http://localhost:9000"))
    ceremony_id, options = await begin_registration(runtime, alice, rp=rp)

    await finish_registration(runtime, alice, ceremony_id, phone.create(options, origin="http://localhost:9000"), rp=rp)

    assert len(await rows(runtime, alice)) == 1


# -- registration refused -------------------------------------------------------------------


async def assert_registration_refused(
    runtime: Any, user_id: str, ceremony_id: str, response: Any, reason: str, **kwargs: Any
) -> PasskeyError:
    before = await state(runtime)
    events = await audit(runtime)
    with pytest.raises(PasskeyError) as caught:
        await finish_registration(runtime, user_id, ceremony_id, response, **kwargs)
    assert caught.value.reason == reason, caught.value
    assert caught.value.field == "passkey"
    assert caught.value.message
    assert await state(runtime) == before
    assert await audit(runtime) == events
    return caught.value


async def test_tampered_packed_attestation_signature(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = tamper_attestation_signature(phone.create(options, origin=ORIGIN, fmt="packed"))

    await assert_registration_refused(runtime, alice, ceremony_id, response, "signature")
    assert not await mfa.has_second_factor(runtime.db, alice)


async def test_authenticator_data_changed_after_packed_attestation(
    runtime: Any, alice: str, phone: SoftAuthenticator
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = tamper_authenticator_data(phone.create(options, origin=ORIGIN, fmt="packed"), set_flags=0x08)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "signature")


@pytest.mark.parametrize(
    ("statement", "fmt", "reason"),
    [
        ({"sig": b"\x00" * 8}, "none", "attestation"),
        ({}, "fido-u3f", "attestation"),
        ({"alg": -7}, "packed", "malformed"),
        ({"alg": -257, "sig": b"\x00" * 64}, "packed", "attestation"),
    ],
    ids=["none-with-statement", "unknown-format", "packed-without-signature", "packed-other-alg"],
)
async def test_unverifiable_attestation_statement(
    runtime: Any, alice: str, phone: SoftAuthenticator, statement: dict[str, Any], fmt: str, reason: str
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)
    attestation = decode_attestation(response)
    response = with_attestation_object(response, {**attestation, "fmt": fmt, "attStmt": statement})

    await assert_registration_refused(runtime, alice, ceremony_id, response, reason)


async def test_registration_for_another_rp_id(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN, rp_id="evil.example")

    await assert_registration_refused(runtime, alice, ceremony_id, response, "rp_id")


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:8001", "https://localhost:8000"])
async def test_registration_from_another_origin(
    runtime: Any, alice: str, phone: SoftAuthenticator, origin: str
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)

    await assert_registration_refused(runtime, alice, ceremony_id, phone.create(options, origin=origin), "origin")


async def test_registration_in_a_cross_origin_frame(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(
        options, origin=ORIGIN, client_data={"crossOrigin": True, "topOrigin": "https://evil.example"}
    )

    await assert_registration_refused(runtime, alice, ceremony_id, response, "origin")


async def test_registration_with_the_wrong_client_data_type(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN, client_data={"type": "webauthn.get"})

    await assert_registration_refused(runtime, alice, ceremony_id, response, "malformed")


async def test_registration_without_user_presence(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN, user_present=False)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "user_presence")


async def test_registration_with_an_unsupported_algorithm(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = with_public_key(phone.create(options, origin=ORIGIN), alg=-35)  # ES384: not offered

    await assert_registration_refused(runtime, alice, ceremony_id, response, "algorithm")


async def test_registration_with_a_point_off_the_curve(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = with_public_key(phone.create(options, origin=ORIGIN), y=b"\x01" * 32)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "malformed")


@pytest.mark.parametrize(
    "attestation_object",
    [b"\xff\xff\xff", b"", cbor2.dumps([1, 2, 3]), cbor2.dumps({"fmt": "none", "attStmt": {}}), b"\xa1\x63fmt"],
    ids=["garbage", "empty", "list", "no-authdata", "truncated"],
)
async def test_malformed_attestation_object(
    runtime: Any, alice: str, phone: SoftAuthenticator, attestation_object: bytes
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = with_attestation_object(phone.create(options, origin=ORIGIN), attestation_object)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "malformed")


async def test_registration_id_other_than_the_attested_one(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)
    other = b64url(b"another credential id")
    response = {**response, "id": other, "rawId": other}

    await assert_registration_refused(runtime, alice, ceremony_id, response, "malformed")


async def test_registration_ceremony_works_once(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)
    await finish_registration(runtime, alice, ceremony_id, response)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "challenge")
    assert len(await rows(runtime, alice)) == 1


async def test_response_to_another_ceremonys_challenge(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    first_id, first_options = await begin_registration(runtime, alice)
    second_id, _ = await begin_registration(runtime, alice)
    response = phone.create(first_options, origin=ORIGIN)

    await assert_registration_refused(runtime, alice, second_id, response, "challenge")
    assert not await ceremony_exists(runtime, second_id)  # a failed attempt burns the ceremony
    # The ceremony the response was made for is untouched and still works.
    await finish_registration(runtime, alice, first_id, response)
    assert len(await rows(runtime, alice)) == 1


async def test_expired_registration_ceremony(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)
    await expire_ceremony(runtime, ceremony_id)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "challenge")


@pytest.mark.parametrize("ceremony_id", ["", "no-such-ceremony", "x" * 500])
async def test_unknown_registration_ceremony(
    runtime: Any, alice: str, phone: SoftAuthenticator, ceremony_id: str
) -> None:
    _, options = await begin_registration(runtime, alice)

    await assert_registration_refused(runtime, alice, ceremony_id, phone.create(options, origin=ORIGIN), "challenge")


async def test_another_users_registration_ceremony(
    runtime: Any, alice: str, bob: str, phone: SoftAuthenticator
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)

    await assert_registration_refused(runtime, bob, ceremony_id, response, "challenge")
    # Consumed: not even Alice can finish it now.
    await assert_registration_refused(runtime, alice, ceremony_id, response, "challenge")


async def test_registration_from_another_browser(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)

    await assert_registration_refused(runtime, alice, ceremony_id, response, "challenge", binding="browser-binding-2")
    await assert_registration_refused(runtime, alice, ceremony_id, response, "challenge")


async def test_a_sign_in_ceremony_cannot_register(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    sign_in_id, _ = await begin_sign_in(runtime, alice)
    _, options = await begin_registration(runtime, alice)
    options = {**options, "excludeCredentials": []}

    await assert_registration_refused(
        runtime, alice, sign_in_id, SoftAuthenticator().create(options, origin=ORIGIN), "challenge"
    )


async def test_a_credential_id_registers_once(runtime: Any, alice: str, bob: str) -> None:
    _, alices_response = await register(runtime, alice, SoftAuthenticator())
    ceremony_id, options = await begin_registration(runtime, bob)
    clash = SoftAuthenticator().create(options, origin=ORIGIN, credential_id=unb64url(alices_response["id"]))

    error = await assert_registration_refused(runtime, bob, ceremony_id, clash, "duplicate")
    assert ALICE not in error.message
    assert await rows(runtime, bob) == []


@pytest.mark.parametrize(
    "credential",
    [
        "{not json",
        "[]",
        "null",
        '"a string"',
        [],
        {},
        {"id": "x"},
        {"id": "x", "rawId": "x", "type": "public-key", "response": "nope"},
        "x" * (64 * 1024 + 1),
        "[" * 60_000,
    ],
    ids=[
        "bad-json",
        "json-list",
        "json-null",
        "json-string",
        "list",
        "empty",
        "no-response",
        "bad-response",
        "huge",
        "deeply-nested",
    ],
)
async def test_malformed_registration_input(
    runtime: Any, alice: str, phone: SoftAuthenticator, credential: Any
) -> None:
    ceremony_id, _ = await begin_registration(runtime, alice)

    await assert_registration_refused(runtime, alice, ceremony_id, credential, "malformed")


async def test_oversized_registration_is_refused_before_the_ceremony_is_used(
    runtime: Any, alice: str, phone: SoftAuthenticator
) -> None:
    ceremony_id, options = await begin_registration(runtime, alice)
    response = phone.create(options, origin=ORIGIN)
    padded = {**response, "clientExtensionResults": {"padding": "x" * 70_000}}

    await assert_registration_refused(runtime, alice, ceremony_id, padded, "malformed")
    await assert_registration_refused(runtime, alice, ceremony_id, json.dumps(padded), "malformed")
    assert await ceremony_exists(runtime, ceremony_id)
    await finish_registration(runtime, alice, ceremony_id, json.dumps(response))  # a JSON string works too
    assert len(await rows(runtime, alice)) == 1


# -- authentication options -----------------------------------------------------------------


async def test_second_factor_options_list_the_users_passkeys(runtime: Any, alice: str, bob: str) -> None:
    await register(runtime, alice, SoftAuthenticator())
    await register(runtime, alice, SoftAuthenticator(transports=("usb",)))
    await register(runtime, bob, SoftAuthenticator())

    ceremony_id, options = await begin_sign_in(runtime, alice)

    [one, two] = await rows(runtime, alice)
    assert options["allowCredentials"] == [
        {"id": one.credential_id, "type": "public-key", "transports": ["internal", "hybrid"]},
        {"id": two.credential_id, "type": "public-key", "transports": ["usb"]},
    ]
    assert options["userVerification"] == "preferred"
    assert options["rpId"] == "localhost"
    assert options["timeout"] == RP.timeout_ms
    assert len(unb64url(options["challenge"])) >= 32
    stored = json.loads(await runtime.kv.get(ceremony_key(ceremony_id)))
    assert (stored["kind"], stored["user_id"], stored["challenge"]) == ("authentication", alice, options["challenge"])


async def test_passwordless_options(runtime: Any) -> None:
    ceremony_id, options = await begin_sign_in(runtime, None)

    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    assert options["rpId"] == "localhost"
    assert await ceremony_exists(runtime, ceremony_id)


async def test_second_factor_options_without_a_passkey(runtime: Any, alice: str) -> None:
    with pytest.raises(PasskeyError) as caught:
        await begin_sign_in(runtime, alice)
    assert caught.value.reason == "unknown_credential"


# -- sign-in --------------------------------------------------------------------------------


async def test_second_factor_sign_in(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    passkey, _ = await register(runtime, alice, phone)
    events = await audit(runtime)
    before = utcnow()

    assertion = await sign_in(runtime, alice, phone)

    assert assertion == PasskeyAssertion(
        user_id=alice, passkey_id=passkey.id, user_verified=True, backup_eligible=False
    )
    [row] = await rows(runtime, alice)
    assert row.sign_count == 1
    assert row.last_used_at is not None and before <= row.last_used_at <= utcnow()
    assert await audit(runtime) == events  # the login step publishes, not this layer
    [listed] = await passkeys.list_passkeys(runtime.db, alice)
    assert listed.last_used_at == row.last_used_at


async def test_second_factor_without_user_verification(runtime: Any, alice: str) -> None:
    key = SoftAuthenticator(transports=("usb",), attachment="cross-platform")
    await register(runtime, alice, key, discoverable=False, user_verified=False)

    # A security key without a PIN: presence is enough after the password; no user handle either.
    assertion = await sign_in(runtime, alice, key, user_verified=False, user_handle=None)

    assert (assertion.user_id, assertion.user_verified) == (alice, False)


async def test_passwordless_sign_in(runtime: Any, alice: str, bob: str) -> None:
    phone = SoftAuthenticator()
    alices, _ = await register(runtime, alice, phone, backup_eligible=True, backed_up=True)
    await register(runtime, bob, SoftAuthenticator())

    assertion = await sign_in(runtime, None, phone)

    assert assertion == PasskeyAssertion(user_id=alice, passkey_id=alices.id, user_verified=True, backup_eligible=True)
    [row] = await rows(runtime, alice)
    assert (row.sign_count, row.backed_up) == (1, True)
    assert row.last_used_at is not None


async def test_sign_counter_advances(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)

    for expected in (1, 2, 3):
        await sign_in(runtime, alice, phone)
        [row] = await rows(runtime, alice)
        assert row.sign_count == expected
    await sign_in(runtime, alice, phone, counter=1000)  # gaps are fine: used elsewhere meanwhile
    [row] = await rows(runtime, alice)
    assert row.sign_count == 1000


async def test_an_authenticator_without_a_counter(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    # Synced passkeys report 0 every time (§6.1.1: then there is nothing to compare).
    await register(runtime, alice, phone, backup_eligible=True)
    used: list[Any] = []
    for _ in range(3):
        await sign_in(runtime, None, phone, counter=0)
        [row] = await rows(runtime, alice)
        assert row.sign_count == 0
        used.append(row.last_used_at)
    assert used[0] < used[1] < used[2]


async def test_backup_state_is_refreshed(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone, backup_eligible=True, backed_up=False)

    await sign_in(runtime, alice, phone, backed_up=True)
    [listed] = await passkeys.list_passkeys(runtime.db, alice)
    assert (listed.backup_eligible, listed.backed_up) == (True, True)

    await sign_in(runtime, alice, phone, backed_up=False)
    [listed] = await passkeys.list_passkeys(runtime.db, alice)
    assert listed.backed_up is False


# -- sign-in refused ------------------------------------------------------------------------


async def assert_sign_in_refused(
    runtime: Any, ceremony_id: str, response: Any, reason: str, **kwargs: Any
) -> PasskeyError:
    before = await state(runtime)
    events = await audit(runtime)
    with pytest.raises(PasskeyError) as caught:
        await finish_sign_in(runtime, ceremony_id, response, **kwargs)
    assert caught.value.reason == reason, caught.value
    assert caught.value.message
    assert await state(runtime) == before
    assert await audit(runtime) == events
    return caught.value


async def test_bad_assertion_signature(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(runtime, ceremony_id, tamper_signature(phone.get(options, origin=ORIGIN)), "signature")


async def test_flags_changed_after_signing(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, None)
    # Claiming user verification the authenticator didn't sign.
    response = tamper_authenticator_data(phone.get(options, origin=ORIGIN, user_verified=False), set_flags=0x04)

    await assert_sign_in_refused(runtime, ceremony_id, response, "signature")


async def test_signature_by_another_key(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    _, response = await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    impostor = SoftAuthenticator()
    # Same credential id and user handle, a different private key.
    impostor.create(
        {
            **options,
            "rp": {"id": "localhost"},
            "user": {"id": b64url(alice.encode())},
            "pubKeyCredParams": [{"alg": -7}],
        },
        origin=ORIGIN,
        credential_id=unb64url(response["id"]),
    )

    await assert_sign_in_refused(runtime, ceremony_id, impostor.get(options, origin=ORIGIN), "signature")


async def test_client_data_rewritten_after_signing(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    # Signed on a phishing page, passed off as ours: the signature covers the client data.
    response = with_client_data(phone.get(options, origin="https://evil.example"), origin=ORIGIN)

    await assert_sign_in_refused(runtime, ceremony_id, response, "signature")


async def test_sign_in_ceremony_works_once(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN)
    await finish_sign_in(runtime, ceremony_id, response)

    await assert_sign_in_refused(runtime, ceremony_id, response, "challenge")
    [row] = await rows(runtime, alice)
    assert row.sign_count == 1


async def test_a_response_replayed_into_a_new_ceremony(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    first_id, first_options = await begin_sign_in(runtime, alice)
    second_id, _ = await begin_sign_in(runtime, alice)
    response = phone.get(first_options, origin=ORIGIN)

    await assert_sign_in_refused(runtime, second_id, response, "challenge")
    await finish_sign_in(runtime, first_id, response)


async def test_expired_sign_in_ceremony(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN)
    await expire_ceremony(runtime, ceremony_id)

    await assert_sign_in_refused(runtime, ceremony_id, response, "challenge")


async def test_sign_in_from_another_browser(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, None)
    response = phone.get(options, origin=ORIGIN)

    await assert_sign_in_refused(runtime, ceremony_id, response, "challenge", binding="browser-binding-2")
    await assert_sign_in_refused(runtime, ceremony_id, response, "challenge")  # burnt


async def test_a_registration_ceremony_cannot_sign_in(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    registration_id, _ = await begin_registration(runtime, alice)
    _, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(runtime, registration_id, phone.get(options, origin=ORIGIN), "challenge")


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:8001", "null"])
async def test_sign_in_from_another_origin(runtime: Any, alice: str, phone: SoftAuthenticator, origin: str) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(runtime, ceremony_id, phone.get(options, origin=origin), "origin")


async def test_sign_in_in_a_cross_origin_frame(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN, client_data={"crossOrigin": True})

    await assert_sign_in_refused(runtime, ceremony_id, response, "origin")


async def test_sign_in_for_another_rp_id(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(runtime, ceremony_id, phone.get(options, origin=ORIGIN, rp_id="evil.example"), "rp_id")


async def test_sign_in_at_another_rp(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    # A relying party with another RP ID sees localhost's assertion as made for someone else.
    other = RelyingParty(id="idp.example", name="other", origins=(ORIGIN,))
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice, rp=other)

    await assert_sign_in_refused(
        runtime, ceremony_id, phone.get(options, origin=ORIGIN, rp_id="localhost"), "rp_id", rp=other
    )


async def test_sign_in_with_the_wrong_client_data_type(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN, client_data={"type": "webauthn.create"})

    await assert_sign_in_refused(runtime, ceremony_id, response, "malformed")


async def test_sign_in_without_user_presence(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(
        runtime, ceremony_id, phone.get(options, origin=ORIGIN, user_present=False), "user_presence"
    )


@pytest.mark.parametrize("counter", [3, 5, 0], ids=["lower", "equal", "zero"])
async def test_counter_that_did_not_grow(runtime: Any, alice: str, phone: SoftAuthenticator, counter: int) -> None:
    await register(runtime, alice, phone)
    await sign_in(runtime, alice, phone, counter=5)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    # A correctly signed response: a cloned authenticator (§6.1.1), not a forgery.
    await assert_sign_in_refused(runtime, ceremony_id, phone.get(options, origin=ORIGIN, counter=counter), "counter")
    [row] = await rows(runtime, alice)
    assert row.sign_count == 5


async def test_a_forged_low_counter_is_a_bad_signature(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    await sign_in(runtime, alice, phone, counter=5)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    response = tamper_signature(phone.get(options, origin=ORIGIN, counter=2))
    await assert_sign_in_refused(runtime, ceremony_id, response, "signature")


async def test_concurrent_assertion_with_the_same_count(
    runtime: Any, alice: str, phone: SoftAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another sign-in stores its count between this one's read and its UPDATE: this one is refused."""
    await register(runtime, alice, phone)
    await sign_in(runtime, alice, phone, counter=1)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN, counter=2)
    real_session = runtime.db.session
    opened = 0
    this_sign_in = asyncio.current_task()

    @asynccontextmanager
    async def session_with_a_rival() -> AsyncIterator[Any]:
        nonlocal opened
        # Only this sign-in's sessions count: background work (the outbox, the audit batches)
        # opens sessions of its own from other tasks.
        opened += asyncio.current_task() is this_sign_in
        if opened == 2 and asyncio.current_task() is this_sign_in:  # the UPDATE after its read
            async with real_session() as rival:
                await rival.execute(update(MfaCredential).values(sign_count=2))
        async with real_session() as session:
            yield session

    monkeypatch.setattr(runtime.db, "session", session_with_a_rival)

    with pytest.raises(PasskeyError) as caught:
        await finish_sign_in(runtime, ceremony_id, response)
    assert caught.value.reason == "counter"
    assert opened == 2
    [row] = await rows(runtime, alice)
    assert row.sign_count == 2  # the rival's count, not overwritten
    assert row.last_used_at is not None


async def test_concurrent_sign_ins_with_one_count(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremonies = [await begin_sign_in(runtime, alice) for _ in range(2)]
    responses = [phone.get(options, origin=ORIGIN, counter=1) for _, options in ceremonies]

    results = await asyncio.gather(
        *(finish_sign_in(runtime, ceremony_id, response) for (ceremony_id, _), response in zip(ceremonies, responses)),
        return_exceptions=True,
    )

    assert sum(isinstance(result, PasskeyAssertion) for result in results) == 1
    [refused] = [result for result in results if isinstance(result, PasskeyError)]
    assert refused.reason == "counter"
    [row] = await rows(runtime, alice)
    assert row.sign_count == 1


async def test_another_users_passkey_as_second_factor(runtime: Any, alice: str, bob: str) -> None:
    alices_phone, bobs_phone = SoftAuthenticator(), SoftAuthenticator()
    await register(runtime, alice, alices_phone)
    _, bobs_response = await register(runtime, bob, bobs_phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    response = bobs_phone.get(options, origin=ORIGIN, credential=bobs_response["id"])
    await assert_sign_in_refused(runtime, ceremony_id, response, "user_mismatch")


async def test_passwordless_without_user_verification(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, None)

    await assert_sign_in_refused(
        runtime, ceremony_id, phone.get(options, origin=ORIGIN, user_verified=False), "user_verification"
    )


@pytest.mark.parametrize("handle", [None, b"someone-else", b""], ids=["missing", "other", "empty"])
async def test_passwordless_user_handle_must_name_the_owner(
    runtime: Any, alice: str, bob: str, phone: SoftAuthenticator, handle: bytes | None
) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, None)
    response = phone.get(options, origin=ORIGIN, user_handle=bob.encode() if handle == b"someone-else" else handle)

    await assert_sign_in_refused(runtime, ceremony_id, response, "user_mismatch")


async def test_second_factor_user_handle_must_name_the_owner(
    runtime: Any, alice: str, bob: str, phone: SoftAuthenticator
) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    await assert_sign_in_refused(
        runtime, ceremony_id, phone.get(options, origin=ORIGIN, user_handle=bob.encode()), "user_mismatch"
    )


async def test_unknown_credential(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    stranger = SoftAuthenticator()
    _, registration_options = await begin_registration(runtime, alice)
    stranger.create({**registration_options, "excludeCredentials": []}, origin=ORIGIN)  # never sent to us
    ceremony_id, options = await begin_sign_in(runtime, None)

    await assert_sign_in_refused(runtime, ceremony_id, stranger.get(options, origin=ORIGIN), "unknown_credential")


async def test_backup_eligibility_cannot_change(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone, backup_eligible=False)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    response = phone.get(options, origin=ORIGIN, backup_eligible=True)
    await assert_sign_in_refused(runtime, ceremony_id, response, "backup_eligibility")


async def test_backed_up_without_eligibility_is_malformed(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)

    response = phone.get(options, origin=ORIGIN, backup_eligible=False, backed_up=True)
    await assert_sign_in_refused(runtime, ceremony_id, response, "malformed")


@pytest.mark.parametrize(
    "breakage",
    [
        lambda response: "{not json",
        lambda response: [],
        lambda response: "x" * (64 * 1024 + 1),
        lambda response: {**response, "type": "private-key"},
        lambda response: {**response, "id": b64url(b"other"), "rawId": response["rawId"]},
        lambda response: {**response, "response": {**response["response"], "signature": 7}},
        lambda response: {**response, "response": {**response["response"], "userHandle": "a"}},
        lambda response: {**response, "response": {**response["response"], "authenticatorData": b64url(b"short")}},
        lambda response: {**response, "response": {**response["response"], "clientDataJSON": b64url(b"[]")}},
    ],
    ids=[
        "bad-json",
        "list",
        "huge",
        "type",
        "id-rawid",
        "signature-type",
        "user-handle-base64",
        "short-authdata",
        "client-data-list",
    ],
)
async def test_malformed_sign_in_input(runtime: Any, alice: str, phone: SoftAuthenticator, breakage: Any) -> None:
    await register(runtime, alice, phone)
    ceremony_id, options = await begin_sign_in(runtime, alice)
    response = phone.get(options, origin=ORIGIN)

    error = await assert_sign_in_refused(runtime, ceremony_id, breakage(response), "malformed")
    assert error.reason == "malformed"


# -- listing, renaming, removing ------------------------------------------------------------


async def test_list_passkeys_oldest_first(runtime: Any, alice: str, bob: str) -> None:
    first, _ = await register(runtime, alice, SoftAuthenticator(), name="Phone")
    second, _ = await register(
        runtime, alice, SoftAuthenticator(transports=("usb",)), name="Key", discoverable=None, backup_eligible=True
    )
    await register(runtime, bob, SoftAuthenticator(), name="Bob's")

    listed = await passkeys.list_passkeys(runtime.db, alice)

    assert listed == [first, second]
    assert [(p.name, p.transports, p.discoverable, p.backup_eligible) for p in listed] == [
        ("Phone", ("internal", "hybrid"), True, False),
        ("Key", ("usb",), None, True),
    ]
    assert await passkeys.list_passkeys(runtime.db, "no-such-user") == []
    assert await passkeys.count_passkeys(runtime.db, alice) == 2


async def test_totp_is_not_a_passkey(runtime: Any, alice: str) -> None:
    enrolment = await mfa.start_totp_enrolment(
        runtime.db, runtime.encryptor, alice, issuer_name="idp", account_name=ALICE
    )

    assert await passkeys.list_passkeys(runtime.db, alice) == []
    assert await passkeys.count_passkeys(runtime.db, alice) == 0
    with pytest.raises(AccountError) as caught:
        await passkeys.rename_passkey(runtime.db, runtime.events, alice, enrolment.credential_id, "Mine")
    assert caught.value.field == "passkey"
    assert not await passkeys.remove_passkey(runtime.db, runtime.events, alice, enrolment.credential_id)
    assert [row.type for row in await rows(runtime, alice)] == ["totp"]


async def test_rename_passkey(runtime: Any, alice: str) -> None:
    passkey, _ = await register(runtime, alice, SoftAuthenticator())
    events = await audit(runtime)

    renamed = await passkeys.rename_passkey(runtime.db, runtime.events, alice, passkey.id, "  Work laptop ")

    assert renamed.name == "Work laptop"
    assert renamed.id == passkey.id and renamed.created_at == passkey.created_at
    [row] = await rows(runtime, alice)
    assert row.name == "Work laptop"
    assert await audit(runtime) == [*events, ("passkey_renamed", alice, {"passkey": passkey.id})]

    with pytest.raises(AccountError) as caught:
        await passkeys.rename_passkey(runtime.db, runtime.events, alice, passkey.id, "\x07bell")
    assert caught.value.field == "name"
    [row] = await rows(runtime, alice)
    assert row.name == "Work laptop"


async def test_renaming_someone_elses_passkey_is_refused(runtime: Any, alice: str, bob: str) -> None:
    passkey, _ = await register(runtime, alice, SoftAuthenticator())
    before = await state(runtime)
    events = await audit(runtime)

    for owner, passkey_id in ((bob, passkey.id), (alice, "no-such-passkey")):
        with pytest.raises(AccountError) as caught:
            await passkeys.rename_passkey(runtime.db, runtime.events, owner, passkey_id, "Mine now")
        assert caught.value.field == "passkey"

    assert await state(runtime) == before
    assert await audit(runtime) == events


async def test_remove_passkeys(runtime: Any, alice: str, phone: SoftAuthenticator) -> None:
    first, _ = await register(runtime, alice, phone)
    second, _ = await register(runtime, alice, SoftAuthenticator())
    events = await audit(runtime)

    assert await passkeys.remove_passkey(runtime.db, runtime.events, alice, first.id)
    assert await passkeys.list_passkeys(runtime.db, alice) == [second]
    assert await mfa.has_second_factor(runtime.db, alice)
    assert await audit(runtime) == [*events, ("passkey_removed", alice, {"passkey": first.id})]

    assert await passkeys.remove_passkey(runtime.db, runtime.events, alice, second.id)
    assert await rows(runtime, alice) == []
    assert not await mfa.has_second_factor(runtime.db, alice)
    assert await audit(runtime) == [
        *events,
        ("passkey_removed", alice, {"passkey": first.id}),
        ("passkey_removed", alice, {"passkey": second.id}),
        ("mfa_disabled", alice, {"method": "webauthn"}),
    ]
    assert not await passkeys.remove_passkey(runtime.db, runtime.events, alice, second.id)

    # A removed passkey no longer signs in (ASVS 6.5.6).
    ceremony_id, options = await begin_sign_in(runtime, None)
    await assert_sign_in_refused(runtime, ceremony_id, phone.get(options, origin=ORIGIN), "unknown_credential")


async def test_removing_someone_elses_passkey_is_refused(runtime: Any, alice: str, bob: str) -> None:
    passkey, _ = await register(runtime, alice, SoftAuthenticator())
    before = await state(runtime)
    events = await audit(runtime)

    assert not await passkeys.remove_passkey(runtime.db, runtime.events, bob, passkey.id)
    assert not await passkeys.remove_passkey(runtime.db, runtime.events, "no-such-user", passkey.id)
    assert not await passkeys.remove_passkey(runtime.db, runtime.events, alice, "no-such-passkey")

    assert await state(runtime) == before
    assert await audit(runtime) == events


async def test_a_deleted_users_ceremony_stores_nothing(runtime: Any, phone: SoftAuthenticator) -> None:
    user_id = await add_user(runtime, "carol@example.com")
    ceremony_id, options = await begin_registration(runtime, user_id)
    async with runtime.db.session() as session:
        await session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})

    with pytest.raises(AccountError) as caught:
        await finish_registration(runtime, user_id, ceremony_id, phone.create(options, origin=ORIGIN))
    assert caught.value.field == "user"
    assert await rows(runtime) == []


# -- migration ------------------------------------------------------------------------------


async def _run(url: str, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params or {})
            return list(result.mappings()) if result.returns_rows else []
    finally:
        await engine.dispose()


def test_migration_0003_keeps_existing_credentials(fresh_database_url: str) -> None:
    url = fresh_database_url
    migrate.upgrade(url, "0002")
    asyncio.run(
        _run(
            url,
            "INSERT INTO users (id, email, email_normalized, email_verified, is_admin, disabled, created_at,"
            " updated_at) VALUES ('u1', 'a@example.com', 'a@example.com', false, false, false, CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP)",
        )
    )
    asyncio.run(
        _run(
            url,
            "INSERT INTO mfa_credentials (id, user_id, type, sign_count, transports, created_at)"
            " VALUES ('c1', 'u1', 'totp', 0, '[]', CURRENT_TIMESTAMP)",
        )
    )

    migrate.upgrade(url, "0003")
    [row] = asyncio.run(_run(url, "SELECT backup_eligible, backed_up, aaguid, discoverable FROM mfa_credentials"))
    assert (bool(row["backup_eligible"]), bool(row["backed_up"]), row["aaguid"], row["discoverable"]) == (
        False,
        False,
        None,
        None,
    )

    migrate.downgrade(url, "0002")
    [row] = asyncio.run(_run(url, "SELECT * FROM mfa_credentials"))
    assert row["id"] == "c1"
    assert "backup_eligible" not in row and "aaguid" not in row
