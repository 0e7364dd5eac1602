"""PKCE (RFC 7636) in idp.oauth.pkce: the challenge at the authorization endpoint, the verifier
at the token endpoint. Each refusal asserts the error class and its exact description."""

from __future__ import annotations

import base64
import hashlib

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from idp.oauth import errors, pkce

# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_only_s256_is_supported() -> None:
    assert pkce.METHODS == ("S256",)


def test_the_appendix_b_example() -> None:
    assert s256(VERIFIER) == CHALLENGE
    assert pkce.check_challenge(CHALLENGE, "S256", required=True) == "S256"
    pkce.check_verifier(VERIFIER, CHALLENGE)


# -- the challenge -----------------------------------------------------------------------------------


def test_a_valid_challenge_gives_its_method() -> None:
    assert pkce.check_challenge(CHALLENGE, "S256", required=False) == "S256"
    assert pkce.check_challenge("a" * 128, "S256", required=True) == "S256"


def test_no_challenge_is_fine_only_when_not_required() -> None:
    assert pkce.check_challenge(None, None, required=False) is None
    with pytest.raises(errors.InvalidRequest) as caught:
        pkce.check_challenge(None, None, required=True)
    assert caught.value.description == "code_challenge is required (PKCE with S256)"


def test_a_method_without_a_challenge_is_refused() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        pkce.check_challenge(None, "S256", required=False)
    assert caught.value.description == "code_challenge_method without code_challenge"


@pytest.mark.parametrize("method", [None, "plain", "s256", "S512", ""])
def test_plain_and_unknown_methods_are_refused(method: str | None) -> None:
    # RFC 7636 §4.3: no method means plain, which would send the verifier itself.
    with pytest.raises(errors.InvalidRequest) as caught:
        pkce.check_challenge(CHALLENGE, method, required=True)
    assert caught.value.description == "code_challenge_method must be S256 (plain is not allowed)"


@pytest.mark.parametrize(
    "challenge",
    [
        pytest.param("a" * 42, id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param(CHALLENGE[:-1] + "=", id="padding"),
        pytest.param(CHALLENGE[:-1] + "+", id="plus"),
        pytest.param(CHALLENGE + "\n", id="trailing-newline"),
        pytest.param(CHALLENGE[:-1] + "é", id="non-ascii"),
        pytest.param("\u0661" * 43, id="arabic-indic-digits"),
    ],
)
def test_a_malformed_challenge_is_refused(challenge: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        pkce.check_challenge(challenge, "S256", required=True)
    assert caught.value.description == "code_challenge must be 43-128 characters of [A-Za-z0-9-._~]"


# -- the verifier ------------------------------------------------------------------------------------


def test_the_matching_verifier_passes() -> None:
    verifier = "A-._~" + "z" * 38
    pkce.check_verifier(verifier, s256(verifier))
    pkce.check_verifier(None, None)  # no PKCE in the request, none at the token endpoint


def test_the_challenge_is_authlibs_s256_unpadded() -> None:
    verifier = "x" * 64
    challenge = create_s256_code_challenge(verifier)
    assert challenge == s256(verifier) and "=" not in challenge
    pkce.check_verifier(verifier, challenge)


def test_a_verifier_without_a_challenge_is_a_downgrade() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        pkce.check_verifier("v" * 43, None)
    assert caught.value.description == "code_verifier given, but the authorization request had no code_challenge."


def test_a_missing_verifier_is_invalid_grant() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        pkce.check_verifier(None, CHALLENGE)
    assert caught.value.description == "code_verifier is required (PKCE)."


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("v" * 42, id="too-short"),
        pytest.param("v" * 129, id="too-long"),
        pytest.param("v" * 42 + " ", id="space"),
        pytest.param("v" * 43 + "\n", id="trailing-newline"),
        pytest.param("v" * 42 + "é", id="non-ascii"),
    ],
)
def test_a_malformed_verifier_is_invalid_grant(verifier: str) -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        pkce.check_verifier(verifier, CHALLENGE)
    assert caught.value.description == "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]."


def test_a_wrong_verifier_is_invalid_grant() -> None:
    with pytest.raises(errors.InvalidGrant) as caught:
        pkce.check_verifier("w" * 43, CHALLENGE)
    assert caught.value.description == "code_verifier does not match the code_challenge."
    with pytest.raises(errors.InvalidGrant):
        pkce.check_verifier("w" * 43, s256("w" * 44))
