"""A software WebAuthn authenticator (and the browser around it) for tests.

``SoftAuthenticator.create`` and ``.get`` take the options JSON the server sends and return the
RegistrationResponseJSON / AuthenticationResponseJSON a browser would post back (WebAuthn L3
§5.1.8, §5.1.10), signed with EC P-256 keys (ES256). Knobs make the answers wrong in one chosen
way; the ``tamper_*``/``with_*`` helpers break a finished response afterwards.

Byte layouts: authenticator data §6.1, attested credential data §6.5.1, COSE_Key §6.5.1.2,
"packed" self attestation §8.2, client data §5.8.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ES256 = -7
# Authenticator data flags (§6.1).
UP, UV, BE, BS, AT, ED = 0x01, 0x04, 0x08, 0x10, 0x40, 0x80
DEFAULT_AAGUID = bytes.fromhex("0123456789abcdef0123456789abcdef")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ExcludedCredential(Exception):
    """The authenticator holds a credential the options exclude (the browser's InvalidStateError)."""


@dataclass
class SoftCredential:
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    discoverable: bool
    backup_eligible: bool
    backed_up: bool
    sign_count: int = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        # kty EC2, alg ES256, crv P-256, x, y
        return cbor2.dumps(
            {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def _flags(*, user_present: bool, user_verified: bool, backup_eligible: bool, backed_up: bool) -> int:
    flags = 0
    if user_present:
        flags |= UP
    if user_verified:
        flags |= UV
    if backup_eligible:
        flags |= BE
    if backed_up:
        flags |= BS
    return flags


def _client_data(kind: str, challenge: str, origin: str, extra: dict[str, Any] | None) -> bytes:
    data: dict[str, Any] = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
    data.update(extra or {})
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class SoftAuthenticator:
    """One authenticator holding any number of credentials (a phone, a security key...)."""

    aaguid: bytes = DEFAULT_AAGUID
    transports: tuple[str, ...] = ("internal", "hybrid")
    attachment: str = "platform"
    credentials: dict[bytes, SoftCredential] = field(default_factory=dict)

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        user_verified: bool = True,
        user_present: bool = True,
        backup_eligible: bool = False,
        backed_up: bool = False,
        fmt: str = "none",
        discoverable: bool | None = True,
        counter: int = 0,
        credential_id: bytes | None = None,
        client_data: dict[str, Any] | None = None,
        transports: list[Any] | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.create(): a new ES256 credential for ``options``.

        ``rp_id`` overrides the RP ID hashed into the authenticator data (default: options'
        rp.id); ``discoverable`` is what credProps reports (None: no credProps result at all);
        ``credential_id`` forces the id (to collide with another one); ``client_data`` adds or
        replaces clientDataJSON members; ``fmt`` is "none" or "packed" (self attestation).
        """
        if ES256 not in [param.get("alg") for param in options.get("pubKeyCredParams", [])]:
            raise ValueError("the options don't allow ES256")
        for excluded in options.get("excludeCredentials", []):
            if unb64url(excluded["id"]) in self.credentials:
                raise ExcludedCredential(excluded["id"])
        target_rp = rp_id if rp_id is not None else options["rp"]["id"]
        credential = SoftCredential(
            credential_id=credential_id if credential_id is not None else secrets.token_bytes(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=options["rp"]["id"],
            user_handle=unb64url(options["user"]["id"]),
            discoverable=bool(discoverable),
            backup_eligible=backup_eligible,
            backed_up=backed_up,
            sign_count=counter,
        )
        flags = AT | _flags(
            user_present=user_present,
            user_verified=user_verified,
            backup_eligible=backup_eligible,
            backed_up=backed_up,
        )
        auth_data = (
            hashlib.sha256(target_rp.encode()).digest()
            + bytes([flags])
            + counter.to_bytes(4, "big")
            + self.aaguid
            + len(credential.credential_id).to_bytes(2, "big")
            + credential.credential_id
            + credential.cose_public_key()
        )
        client_data_json = _client_data("webauthn.create", options["challenge"], origin, client_data)
        if fmt == "none":
            statement: dict[str, Any] = {}
        elif fmt == "packed":
            signature = credential.sign(auth_data + hashlib.sha256(client_data_json).digest())
            statement = {"alg": ES256, "sig": signature}
        else:
            raise ValueError(f"unsupported attestation format {fmt!r}")
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        self.credentials[credential.credential_id] = credential
        public_key = credential.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        extensions: dict[str, Any] = {}
        if discoverable is not None and options.get("extensions", {}).get("credProps"):
            extensions["credProps"] = {"rk": discoverable}
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data_json),
                "attestationObject": b64url(attestation_object),
                "authenticatorData": b64url(auth_data),
                "transports": list(self.transports) if transports is None else transports,
                "publicKeyAlgorithm": ES256,
                "publicKey": b64url(public_key),
            },
            "clientExtensionResults": extensions,
            "authenticatorAttachment": self.attachment,
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        user_verified: bool = True,
        user_present: bool = True,
        counter: int | None = None,
        credential: SoftCredential | str | None = None,
        backup_eligible: bool | None = None,
        backed_up: bool | None = None,
        user_handle: bytes | bool | None = True,
        client_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get(): an assertion for ``options``.

        The credential is ``credential`` (object or id), else the first of allowCredentials this
        authenticator holds, else (empty allowCredentials) its newest discoverable credential for
        the RP. The sign counter goes up by one unless ``counter`` is given (then it is that).
        ``user_handle``: True sends the credential's (as browsers do), False or None omits it,
        bytes send those. ``backup_eligible``/``backed_up`` override the credential's flags.
        """
        chosen = self._choose(options, credential)
        if counter is None:
            chosen.sign_count += 1
            counter = chosen.sign_count
        else:
            chosen.sign_count = counter
        target_rp = rp_id if rp_id is not None else options.get("rpId", chosen.rp_id)
        flags = _flags(
            user_present=user_present,
            user_verified=user_verified,
            backup_eligible=chosen.backup_eligible if backup_eligible is None else backup_eligible,
            backed_up=chosen.backed_up if backed_up is None else backed_up,
        )
        auth_data = hashlib.sha256(target_rp.encode()).digest() + bytes([flags]) + counter.to_bytes(4, "big")
        client_data_json = _client_data("webauthn.get", options["challenge"], origin, client_data)
        signature = chosen.sign(auth_data + hashlib.sha256(client_data_json).digest())
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data_json),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if user_handle is True:
            response["userHandle"] = b64url(chosen.user_handle)
        elif isinstance(user_handle, bytes):
            response["userHandle"] = b64url(user_handle)
        return {
            "id": chosen.id,
            "rawId": chosen.id,
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
            "authenticatorAttachment": self.attachment,
        }

    def _choose(self, options: dict[str, Any], credential: SoftCredential | str | None) -> SoftCredential:
        if isinstance(credential, SoftCredential):
            return credential
        if isinstance(credential, str):
            return self.credentials[unb64url(credential)]
        allowed = [unb64url(item["id"]) for item in options.get("allowCredentials", [])]
        if allowed:
            for raw in allowed:
                if raw in self.credentials:
                    return self.credentials[raw]
            raise LookupError("none of the allowed credentials is on this authenticator")
        rp = options.get("rpId")
        for found in reversed(list(self.credentials.values())):
            if found.discoverable and found.rp_id == rp:
                return found
        raise LookupError("no discoverable credential for this RP on this authenticator")

    def credential(self, credential_id: str) -> SoftCredential:
        return self.credentials[unb64url(credential_id)]


# -- breaking a finished response -----------------------------------------------------------


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def tamper_signature(response: dict[str, Any]) -> dict[str, Any]:
    """An assertion whose signature is off by one bit."""
    broken = json.loads(json.dumps(response))
    broken["response"]["signature"] = b64url(_flip_last_bit(unb64url(response["response"]["signature"])))
    return broken


def decode_attestation(response: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = cbor2.loads(unb64url(response["response"]["attestationObject"]))
    return decoded


def with_attestation_object(response: dict[str, Any], attestation_object: bytes | dict[str, Any]) -> dict[str, Any]:
    """The response with another attestationObject (raw bytes, or a dict to CBOR-encode)."""
    raw = attestation_object if isinstance(attestation_object, bytes) else cbor2.dumps(attestation_object)
    broken = json.loads(json.dumps(response))
    broken["response"]["attestationObject"] = b64url(raw)
    return broken


def tamper_attestation_signature(response: dict[str, Any]) -> dict[str, Any]:
    """A "packed" registration whose attestation signature is off by one bit."""
    decoded = decode_attestation(response)
    decoded["attStmt"]["sig"] = _flip_last_bit(decoded["attStmt"]["sig"])
    return with_attestation_object(response, decoded)


def tamper_authenticator_data(response: dict[str, Any], *, set_flags: int = 0, clear_flags: int = 0) -> dict[str, Any]:
    """Change flags in the authenticator data after signing (an assertion, or a registration's
    attestation object): the signature no longer covers what is sent."""
    broken = json.loads(json.dumps(response))
    if "attestationObject" in response["response"]:
        decoded = decode_attestation(response)
        data = bytearray(decoded["authData"])
        data[32] = (data[32] | set_flags) & ~clear_flags & 0xFF
        decoded["authData"] = bytes(data)
        return with_attestation_object(response, decoded)
    data = bytearray(unb64url(response["response"]["authenticatorData"]))
    data[32] = (data[32] | set_flags) & ~clear_flags & 0xFF
    broken["response"]["authenticatorData"] = b64url(bytes(data))
    return broken


def with_client_data(response: dict[str, Any], **members: Any) -> dict[str, Any]:
    """Rewrite clientDataJSON members after the fact (e.g. origin, type, challenge)."""
    broken = json.loads(json.dumps(response))
    data = json.loads(unb64url(response["response"]["clientDataJSON"]))
    data.update(members)
    broken["response"]["clientDataJSON"] = b64url(json.dumps(data).encode())
    return broken


def with_public_key(response: dict[str, Any], **members: Any) -> dict[str, Any]:
    """A registration whose attested COSE key has members replaced (by label: ``alg=-35`` sets 3,
    ``crv=2`` sets -1), e.g. to claim an algorithm the key isn't for. Attestation "none" only:
    nothing signs the key then, so only the key's own checks can catch it."""
    labels = {"kty": 1, "alg": 3, "crv": -1, "x": -2, "y": -3}
    decoded = decode_attestation(response)
    auth_data: bytes = decoded["authData"]
    id_length = int.from_bytes(auth_data[53:55], "big")
    start = 55 + id_length
    key = cbor2.loads(auth_data[start:])
    for name, value in members.items():
        key[labels[name]] = value
    decoded["authData"] = auth_data[:start] + cbor2.dumps(key)
    return with_attestation_object(response, decoded)
