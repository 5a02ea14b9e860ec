"""Hashes and Ed25519 signatures.

Public keys are raw 32-byte Ed25519 keys (``bytes``) everywhere in the ledger, the same bytes as
``Party.owning_key``. Private keys are ``cryptography`` ``Ed25519PrivateKey`` objects and never
cross the wire.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
from dataclasses import dataclass
from typing import Final, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fibers import serializable

__all__ = ["DigitalSignature", "SecureHash", "public_key_bytes", "sign", "verify"]

HASH_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64


@serializable
@dataclass(frozen=True, order=True, slots=True)
class SecureHash:
    """A SHA-256 digest. Ordered by its bytes; ``str()`` is lower-case hex."""

    bytes: builtins.bytes

    def __post_init__(self) -> None:
        if type(self.bytes) is not builtins.bytes or len(self.bytes) != HASH_SIZE:
            raise ValueError(f"a SecureHash is {HASH_SIZE} bytes, got {self.bytes!r:.80}")

    @classmethod
    def sha256(cls, data: builtins.bytes) -> SecureHash:
        """The SHA-256 digest of ``data``."""
        return cls(hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> SecureHash:
        """The hash whose hex form is ``text`` (as ``str()`` prints it, either case).

        Raises ``ValueError`` naming the text if it is not 64 hex digits.
        """
        try:
            raw = builtins.bytes.fromhex(text)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != HASH_SIZE or len(text) != 2 * HASH_SIZE:
            raise ValueError(f"not a SHA-256 hash (64 hex digits): {text!r:.80}")
        return cls(raw)

    def __str__(self) -> str:
        return self.bytes.hex()

    def __repr__(self) -> str:
        return f"SecureHash({self.bytes[:6].hex()}…)"


ZERO_HASH: Final = SecureHash(builtins.bytes(HASH_SIZE))


@serializable
@dataclass(frozen=True, slots=True)
class DigitalSignature:
    """An Ed25519 signature ``bytes`` made by the key whose raw public bytes are ``by``."""

    by: builtins.bytes
    bytes: builtins.bytes

    def is_valid(self, data: builtins.bytes) -> bool:
        """Whether this is a valid signature of ``data`` by ``self.by`` (see :func:`verify`)."""
        return verify(self.by, self.bytes, data)

    def __repr__(self) -> str:
        return f"DigitalSignature(by={self.by[:4].hex()}…)"


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private_key``."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private_key: Ed25519PrivateKey, data: bytes) -> DigitalSignature:
    """Sign ``data`` with ``private_key``; the signature records the signer's public key."""
    return DigitalSignature(public_key_bytes(private_key), private_key.sign(data))


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key``.

    Never raises for a bad or malformed signature (it is simply not valid). Raises
    ``ValueError`` if ``public_key`` is not 32 raw key bytes, since that is a caller's bug.
    """
    key = _public_key(public_key)
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _public_key(raw: bytes) -> Ed25519PublicKey:
    if type(raw) is not bytes or len(raw) != PUBLIC_KEY_SIZE:
        _refuse_key(raw)
    return _loaded_key(raw)


@functools.lru_cache(maxsize=4096)
def _loaded_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of ``raw`` (32 bytes), loaded once per key: a node verifies the same
    parties' keys over and over. Keyed by the exact bytes, so it is the same key either way."""
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"not a valid Ed25519 public key: {raw.hex()} ({exc})") from exc


def _refuse_key(raw: object) -> NoReturn:
    raise ValueError(
        f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes (as Party.owning_key), "
        f"got {raw!r:.80}"
    )


def describe_key(key: bytes, name: str | None = None) -> str:
    """A short human label for a public key: ``"Alice (key 1a2b3c4d…)"`` or ``"key 1a2b3c4d…"``."""
    short = f"key {key[:4].hex()}…"
    return f"{name} ({short})" if name else short
