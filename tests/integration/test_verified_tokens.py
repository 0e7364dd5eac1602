"""Access tokens verified once are remembered per process (TokenService._verified), so a resource
server presenting the same token again costs no signature check; what can change about a token
is checked on every use all the same: its expiry, its revocation, and whether the key that signed
it is still published."""

from __future__ import annotations

import time
from typing import Any

import pytest

from idp.oauth import tokens as tokens_module
from idp.oauth.tokens import LEEWAY, TokenInvalid, TokenService


@pytest.fixture
def clock() -> list[float]:
    return [time.time()]


@pytest.fixture
def service(runtime: Any, clock: list[float]) -> TokenService:
    return TokenService(
        runtime.keys,
        runtime.tokens.denylist,
        runtime.settings.issuer,
        access_token_ttl=300,
        id_token_ttl=300,
        clock=lambda: clock[0],
    )


def issue(service: TokenService, subject: str = "user-1") -> str:
    return service.issue_access_token(subject=subject, client_id="client-1", scope="openid").value


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check of a JWT (joserfc's jwt.decode), by token."""
    seen: list[str] = []
    original = tokens_module.jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(tokens_module.jwt, "decode", counting)
    return seen


async def test_a_token_is_checked_once_then_remembered(service: TokenService, decodes: list[str]) -> None:
    token = issue(service)
    first = await service.verify_access_token(token)
    second = await service.verify_access_token(token)
    assert first == second and first["sub"] == "user-1"
    assert decodes == [token]
    second["sub"] = "someone-else"  # a caller's copy: the remembered claims stay as verified
    assert (await service.verify_access_token(token))["sub"] == "user-1"


async def test_a_remembered_token_still_expires(service: TokenService, clock: list[float]) -> None:
    token = issue(service)
    claims = await service.verify_access_token(token)
    clock[0] = claims["exp"] + LEEWAY - 1
    assert (await service.verify_access_token(token))["jti"] == claims["jti"]
    clock[0] = claims["exp"] + LEEWAY
    with pytest.raises(TokenInvalid):
        await service.verify_access_token(token)
    assert token not in service._verified


async def test_a_remembered_token_is_refused_once_revoked(service: TokenService) -> None:
    token = issue(service)
    claims = await service.verify_access_token(token)
    await service.revoke_access_token(claims["jti"], claims["exp"])
    with pytest.raises(TokenInvalid, match="revoked"):
        await service.verify_access_token(token)


async def test_a_remembered_token_is_refused_once_its_key_is_no_longer_published(
    service: TokenService, runtime: Any, monkeypatch: pytest.MonkeyPatch, decodes: list[str]
) -> None:
    token = issue(service)
    await service.verify_access_token(token)
    monkeypatch.setattr(runtime.keys, "verification_key", lambda kid: None)  # its window has ended
    with pytest.raises(TokenInvalid):
        await service.verify_access_token(token)
    assert decodes == [token]  # refused before any signature check: the key is gone


async def test_a_tampered_copy_is_checked_on_its_own(service: TokenService) -> None:
    token = issue(service)
    await service.verify_access_token(token)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(TokenInvalid):
        await service.verify_access_token(forged)


async def test_at_most_so_many_tokens_are_remembered(service: TokenService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "VERIFIED_ACCESS_TOKENS", 3)
    issued = [issue(service, f"user-{n}") for n in range(5)]
    for token in issued:
        await service.verify_access_token(token)
    assert list(service._verified) == issued[2:]
