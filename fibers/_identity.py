"""Node identities: a legal name bound to an Ed25519 public key."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fibers._wire import serializable


@serializable
@dataclass(frozen=True, slots=True)
class Party:
    """A well-known identity on the network: a legal name and the raw Ed25519 public key that
    owns it. Two parties are equal when both name and key are equal."""

    name: str
    owning_key: bytes

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Party({self.name!r}, key={self.owning_key[:4].hex()}…)"

    def public_key(self) -> Ed25519PublicKey:
        """The owning key as a ``cryptography`` public key object, for verifying signatures."""
        return Ed25519PublicKey.from_public_bytes(self.owning_key)


class NodeIdentity:
    """A node's legal identity with its private key. Never serialised to the wire."""

    __slots__ = ("party", "private_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey | None = None) -> None:
        self.private_key = private_key or Ed25519PrivateKey.generate()
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.party = Party(name, raw)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of ``data`` by this identity's key."""
        return self.private_key.sign(data)

    def __repr__(self) -> str:
        return f"NodeIdentity({self.party.name!r})"
