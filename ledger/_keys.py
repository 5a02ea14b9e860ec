"""``KeyManagementService``: the node's signing keys (``service_hub.key_management``).

Follows the storage model of ``ledger._services``. The legal identity key is the node's own
(``node.identity``) and always available; keys made by ``fresh_key`` are stored in database
``keys``: raw public key -> 12-byte nonce + AES-256-GCM ciphertext of the raw private key, with
the public key as associated data (so a ciphertext moved to another key does not decrypt).
The AES key is the storage's encryption key for purpose ``ledger/key-management`` (derived by
HKDF-SHA256 from the node secret, distinct from the key that seals records), so the database
alone reveals no private key. Private keys appear in no repr, log or exception.

It also remembers, per node and across restarts, the signatures this node made itself over
transactions (database ``own_signatures``: tx id -> sealed ``(sequence number, signatures)``),
so that a flow receiving such a transaction back need not verify them again
(``ledger._tx_flows``). At most ``OWN_SIGNATURES_KEPT`` transactions are remembered, the oldest
forgotten first; a forgotten signature is simply verified like any other. The records are
sealed, so nobody without the node secret can plant a "signature of ours" that would skip a
verification.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fibers import wire
from fibers.services import journaled
from fibers.storage import CorruptRecordError
from ledger._crypto import DigitalSignature, SecureHash, describe_key, public_key_bytes, sign
from ledger._services import LedgerService
from ledger._transactions import SignedTransaction

if TYPE_CHECKING:
    from fibers import Node
    from fibers.storage import Txn

__all__ = ["KeyManagementService"]

_DB: Final = "keys"
_SIGS_DB: Final = "own_signatures"
OWN_SIGNATURES_KEPT: Final = 4096
"""Most transactions whose own signatures a node remembers (oldest forgotten first)."""
_KEY_PURPOSE: Final = "ledger/key-management/v1: private keys at rest"
_AAD: Final = b"fibers/ledger/key/v1:"
_NONCE_SIZE: Final = 12


class KeyManagementService(LedgerService):
    """Signs with the node's keys: its legal identity key and fresh keys it generated."""

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB, _SIGS_DB])
        self._identity_key = node.identity.private_key
        self._identity = public_key_bytes(self._identity_key)
        self._cipher: AESGCM | None = None
        if self._storage is not None:
            self._cipher = AESGCM(self._storage.encryption_key(_KEY_PURPOSE))
        self._keys: dict[bytes, Ed25519PrivateKey] = {}
        # Invariant: in the order of their sequence numbers, oldest first; _next_sequence is
        # above every sequence number stored.
        self._own_sigs: OrderedDict[SecureHash, tuple[int, frozenset[DigitalSignature]]] = (
            OrderedDict())
        self._next_sequence = 0
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

    # -- signatures this node made ---------------------------------------------------------------

    def remember_signatures(self, tx_id: SecureHash, sigs: Iterable[DigitalSignature]) -> None:
        """Note that this node made ``sigs`` over ``tx_id``: those by one of its own keys are
        remembered (stored with the current flow step), the others ignored. Call it only with
        signatures this node produced, never with received ones."""
        ours = self.keys()
        made = frozenset(sig for sig in sigs
                         if isinstance(sig, DigitalSignature) and sig.by in ours)
        if not made:
            return
        previous = self._own_sigs.pop(tx_id, None)
        merged = made | (previous[1] if previous else frozenset())
        sequence = self._next_sequence
        self._next_sequence += 1
        self._own_sigs[tx_id] = (sequence, merged)
        evicted = []
        while len(self._own_sigs) > OWN_SIGNATURES_KEPT:
            evicted.append(self._own_sigs.popitem(last=False)[0])
        storage = self._storage
        if storage is not None:
            value = wire.encode((sequence, tuple(sorted(merged, key=wire.encode))))

            def write(txn: Txn) -> None:
                storage.put_sealed(txn, _SIGS_DB, tx_id.bytes, value)
                for old in evicted:
                    storage.delete(txn, _SIGS_DB, old.bytes)

            self._write(write)
        self._flush()

    def own_signatures_over(self, tx_id: SecureHash, *, forget: bool = False
                            ) -> frozenset[DigitalSignature]:
        """The signatures this node remembers making over ``tx_id`` (see
        ``remember_signatures``); with ``forget``, they are forgotten too (stored with the
        current flow step)."""
        entry = self._own_sigs.get(tx_id)
        if entry is None:
            return frozenset()
        if forget:
            del self._own_sigs[tx_id]
            storage = self._storage
            if storage is not None:
                self._write(lambda txn: storage.delete(txn, _SIGS_DB, tx_id.bytes))
            self._flush()
        return entry[1]

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
        self._reload_own_signatures()

    def _reload_own_signatures(self) -> None:
        storage = self._storage
        assert storage is not None
        ours = self.keys()
        entries: list[tuple[int, SecureHash, frozenset[DigitalSignature]]] = []
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _SIGS_DB, b""):
                match wire.decode(storage.unseal(_SIGS_DB, key, blob)):
                    case (int() as sequence, tuple() as sigs) if all(
                            isinstance(sig, DigitalSignature) and sig.by in ours
                            for sig in sigs):
                        entries.append((sequence, SecureHash(key), frozenset(sigs)))
                    case _:
                        raise CorruptRecordError(_SIGS_DB, key, "not (sequence, signatures by "
                                                                "this node's keys)")
        entries.sort(key=lambda entry: entry[0])
        self._own_sigs = OrderedDict(
            (tx_id, (sequence, sigs)) for sequence, tx_id, sigs in entries)
        self._next_sequence = entries[-1][0] + 1 if entries else 0

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyManagementService holds private keys; it is never pickled (flows "
                        "hold it as a service token)")

    def __repr__(self) -> str:
        return f"<KeyManagementService of {self._node.party}: {len(self._keys) + 1} keys>"


def _raw(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
