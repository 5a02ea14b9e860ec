"""Node identities: a legal name bound to an Ed25519 public key, and where a node keeps its own.

A node's identity lives in its storage (``stored_identity``), so that a node started again on
the same directory, in this process or another, is the same party. The private key is stored
encrypted with AES-GCM under a key derived (HKDF-SHA256) from the node-local secret
(``Storage.secret``), with the name and public key as associated data, in a record sealed
under that secret: the database alone, copied elsewhere, does not give the key away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fibers import _wire
from fibers._storage import CorruptRecordError
from fibers._storage_api import Storage
from fibers._wire import serializable

_DB: Final = "meta"
_KEY: Final = b"node-identity"
_HKDF_INFO: Final = b"fibers/node identity/v1: the legal identity key at rest"
_NONCE_LEN: Final = 12


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


def stored_identity(storage: Storage, name: str) -> NodeIdentity:
    """The identity kept in ``storage``, created (a new key) and stored on first use.

    Raises ``ValueError`` when the storage belongs to a node with another name, and
    ``CorruptRecordError`` when the stored identity fails its check or does not decrypt under
    this storage's secret (tampered, or ``node.secret`` replaced): restore both from backup.
    """
    with storage.read() as txn:
        blob = storage.get_sealed(txn, _DB, _KEY)
    if blob is not None:
        identity = _decode_identity(storage, blob)
        if identity.party.name != name:
            raise ValueError(
                f"the storage at {storage.base_dir} holds the identity of "
                f"{identity.party.name!r}, not {name!r}: start each node on its own directory"
            )
        return identity
    identity = NodeIdentity(name)
    raw = identity.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    nonce = os.urandom(_NONCE_LEN)
    party = identity.party
    sealed = _cipher(storage).encrypt(nonce, raw, _aad(party))
    record = _wire.encode((party.name, party.owning_key, nonce, sealed))
    with storage.group() as group:
        error = group.step(lambda txn: storage.put_sealed(txn, _DB, _KEY, record))
    if error is not None:
        raise error
    return identity


def _decode_identity(storage: Storage, blob: bytes) -> NodeIdentity:
    values = _wire.decode(blob)
    if not (isinstance(values, tuple) and len(values) == 4
            and all(isinstance(v, t) for v, t in zip(values, (str, bytes, bytes, bytes),
                                                     strict=True))):
        raise CorruptRecordError(_DB, _KEY, "not a stored node identity")
    name, public, nonce, sealed = values
    try:
        raw = _cipher(storage).decrypt(nonce, sealed, _aad(Party(name, public)))
    except InvalidTag:
        raise CorruptRecordError(
            _DB, _KEY, "the identity key does not decrypt (tampered, or stored under another "
            "node secret)") from None
    identity = NodeIdentity(name, Ed25519PrivateKey.from_private_bytes(raw))
    if identity.party.owning_key != public:
        raise CorruptRecordError(_DB, _KEY, "the identity key does not match its public key")
    return identity


def _cipher(storage: Storage) -> AESGCM:
    kdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return AESGCM(kdf.derive(storage.secret))


def _aad(party: Party) -> bytes:
    return party.name.encode() + b"\0" + party.owning_key
