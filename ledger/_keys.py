"""``KeyManagementService``: the node's signing keys (``service_hub.key_management``).

Follows the storage model of ``ledger._services``. The legal identity key is the node's own
(``node.identity``) and always available; keys made by ``fresh_key`` are stored in database
``keys``: raw public key -> 12-byte nonce + AES-256-GCM ciphertext of the raw private key, with
the public key as associated data (so a ciphertext moved to another key does not decrypt).
The AES key is the storage's encryption key for purpose ``ledger/key-management`` (derived by
HKDF-SHA256 from the node secret, distinct from the key that seals records), so the database
alone reveals no private key. Private keys appear in no repr, log or exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fibers._storage import CorruptRecordError
from fibers.services import journaled
from ledger._crypto import DigitalSignature, describe_key, public_key_bytes, sign
from ledger._services import LedgerService
from ledger._transactions import SignedTransaction

if TYPE_CHECKING:
    from fibers._node import Node

__all__ = ["KeyManagementService"]

_DB: Final = "keys"
_KEY_PURPOSE: Final = "ledger/key-management/v1: private keys at rest"
_AAD: Final = b"fibers/ledger/key/v1:"
_NONCE_SIZE: Final = 12


class KeyManagementService(LedgerService):
    """Signs with the node's keys: its legal identity key and fresh keys it generated."""

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB])
        self._identity_key = node.identity.private_key
        self._identity = public_key_bytes(self._identity_key)
        self._cipher: AESGCM | None = None
        if self._storage is not None:
            self._cipher = AESGCM(self._storage.encryption_key(_KEY_PURPOSE))
        self._keys: dict[bytes, Ed25519PrivateKey] = {}
        self.reload_from_storage()

    @journaled
    def fresh_key(self) -> bytes:
        """Generate and store a new key pair; return its raw 32-byte public key. Journaled:
        a flow replayed after a restart gets the same key back."""
        private = Ed25519PrivateKey.generate()
        public = public_key_bytes(private)
        self._keys[public] = private
        storage, cipher = self._storage, self._cipher
        if storage is not None and cipher is not None:
            nonce = os.urandom(_NONCE_SIZE)
            blob = nonce + cipher.encrypt(nonce, _raw(private), _AAD + public)
            self._write(lambda txn: storage.put(txn, _DB, public, blob))
        self._flush()
        return public

    def keys(self) -> set[bytes]:
        """Every public key this node can sign with, the legal identity key included."""
        return {self._identity, *self._keys}

    def our_keys_in(self, keys: Iterable[bytes]) -> set[bytes]:
        """Those of ``keys`` this node can sign with."""
        ours = self.keys()
        return {key for key in keys if key in ours}

    def sign(self, data: bytes, public_key: bytes) -> DigitalSignature:
        """Sign ``data`` with the private key of ``public_key``. Raises ``KeyError`` naming the
        key if this node does not hold it."""
        if public_key == self._identity:
            return sign(self._identity_key, data)
        private = self._keys.get(public_key)
        if private is None:
            self._not_ours(public_key)
        return sign(private, data)

    def sign_transaction(
        self, stx: SignedTransaction, public_key: bytes | None = None
    ) -> SignedTransaction:
        """``stx`` with this node's signature over its id added, by ``public_key`` (default:
        the legal identity key). Raises ``KeyError`` if this node does not hold the key."""
        key = self._identity if public_key is None else public_key
        return stx.with_additional_signature(self.sign(stx.id.bytes, key))

    def _not_ours(self, public_key: bytes) -> NoReturn:
        shown = describe_key(public_key) if isinstance(public_key, bytes) else repr(public_key)
        raise KeyError(f"{self._node.party} holds no private key for {shown}; sign with one "
                       "of its own keys (key_management.keys())")

    def reload_from_storage(self) -> None:
        """Decrypt the stored keys (at start, and after steps failed to commit). Raises
        ``CorruptRecordError`` for a record that does not decrypt under this node's secret."""
        storage, cipher = self._storage, self._cipher
        if storage is None or cipher is None:
            return
        keys: dict[bytes, Ed25519PrivateKey] = {}
        with storage.read() as txn:
            for public, blob in storage.prefix_items(txn, _DB, b""):
                nonce, ciphertext = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:]
                try:
                    raw = cipher.decrypt(nonce, ciphertext, _AAD + public)
                except InvalidTag:
                    raise CorruptRecordError(
                        _DB, public, "the key does not decrypt (tampered, or stored under "
                        "another node secret)") from None
                private = Ed25519PrivateKey.from_private_bytes(raw)
                if public_key_bytes(private) != public:
                    raise CorruptRecordError(_DB, public, "the private key stored there "
                                                          "belongs to another public key")
                keys[public] = private
        self._keys = keys

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyManagementService holds private keys; it is never pickled (flows "
                        "hold it as a service token)")

    def __repr__(self) -> str:
        return f"<KeyManagementService of {self._node.party}: {len(self._keys) + 1} keys>"


def _raw(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
