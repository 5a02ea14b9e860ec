"""Key management: fresh keys encrypted at rest, surviving restarts, signing for the node."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable
from fibers._node import Node
from fibers._storage import CorruptRecordError, Txn
from ledger import KeyManagementService, SignaturesMissingException, public_key_bytes, verify
from ledger.testing import DummyState, MockNetwork, issue_for_test
from tests.ledger._helpers import read_record


def keys_of(node: Node) -> KeyManagementService:
    keys = node.services.key_management
    assert isinstance(keys, KeyManagementService)
    return keys


def private_bytes(keys: KeyManagementService, public: bytes) -> bytes:
    private = keys._keys[public]
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def rewrite(node: Node, db: str, key: bytes, value: bytes) -> None:
    storage = node.storage
    assert storage is not None
    with storage.group() as group:
        assert group.step(lambda txn: storage.put(txn, db, key, value)) is None


@initiating_flow
class FreshKeyThenWait(FlowLogic[tuple[bytes, bytes]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[bytes, bytes]:
        key = self.service_hub.key_management.fresh_key()
        self.receive(self.other, str)
        return key, self.service_hub.key_management.sign(b"after", key).by


@initiated_by(FreshKeyThenWait)
class Go(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "go")


def test_the_legal_identity_key_is_always_available(network: MockNetwork) -> None:
    alice = network.node("Alice")
    keys = keys_of(alice)
    assert keys.keys() == {alice.party.owning_key}
    signature = keys.sign(b"data", alice.party.owning_key)
    assert signature.by == alice.party.owning_key
    assert verify(alice.party.owning_key, signature.bytes, b"data")


def test_fresh_keys_sign_and_are_listed(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    keys = keys_of(alice)
    fresh = keys.fresh_key()
    assert len(fresh) == 32 and fresh != alice.party.owning_key
    assert keys.keys() == {alice.party.owning_key, fresh}
    assert keys.our_keys_in([fresh, bob.party.owning_key]) == {fresh}
    assert keys.sign(b"data", fresh).is_valid(b"data")


def test_signing_with_a_key_we_do_not_hold_names_the_key(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    prefix = bob.party.owning_key[:4].hex()
    with pytest.raises(KeyError, match=f"Alice holds no private key for key {prefix}"):
        keys_of(alice).sign(b"data", bob.party.owning_key)


def test_sign_transaction_adds_a_valid_signature(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    stx = issue_for_test(alice, DummyState(bob.party, 1))
    unsigned = type(stx)(stx.tx, ())
    with pytest.raises(SignaturesMissingException):
        unsigned.verify_signatures()
    signed = keys_of(alice).sign_transaction(unsigned)
    signed.verify_signatures()
    fresh = keys_of(alice).fresh_key()
    twice = keys_of(alice).sign_transaction(signed, fresh)
    assert [sig.by for sig in twice.sigs] == [alice.party.owning_key, fresh]
    assert all(sig.is_valid(stx.id.bytes) for sig in twice.sigs)


def test_private_keys_are_encrypted_at_rest(network: MockNetwork) -> None:
    alice = network.node("Alice")
    keys = keys_of(alice)
    fresh = [keys.fresh_key() for _ in range(3)]
    secrets = [private_bytes(keys, public) for public in fresh]
    assert alice.storage is not None
    database_file = alice.storage.base_dir / "node.lmdb" / "data.mdb"
    raw = database_file.read_bytes()
    for public, secret in zip(fresh, secrets, strict=True):
        assert public in raw  # the records are there ...
        assert secret not in raw  # ... but not the private keys
        assert secret not in read_record(alice, "keys", public)


def test_fresh_keys_survive_a_restart(network: MockNetwork) -> None:
    alice = network.node("Alice")
    fresh = keys_of(alice).fresh_key()
    alice = network.restart_node(alice)
    assert keys_of(alice).keys() == {alice.party.owning_key, fresh}
    assert keys_of(alice).sign(b"data", fresh).is_valid(b"data")


def test_a_flow_restored_after_fresh_key_gets_the_same_key(network: MockNetwork) -> None:
    alice = network.node("Alice")
    handle = alice.start_flow(FreshKeyThenWait(network.party("Bob")))
    (fresh,) = keys_of(alice).keys() - {alice.party.owning_key}
    alice = network.restart_node(alice)
    restored = alice.handle(handle.id)
    network.run_network()
    assert restored.result.result(timeout=0) == (fresh, fresh)
    assert keys_of(alice).keys() == {alice.party.owning_key, fresh}


def test_a_key_whose_ciphertext_was_changed_is_refused(network: MockNetwork) -> None:
    alice = network.node("Alice")
    fresh = keys_of(alice).fresh_key()
    blob = read_record(alice, "keys", fresh)
    rewrite(alice, "keys", fresh, blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CorruptRecordError, match="does not decrypt"):
        keys_of(alice).reload_from_storage()


def test_a_ciphertext_moved_to_another_key_does_not_decrypt(network: MockNetwork) -> None:
    alice = network.node("Alice")
    first, second = keys_of(alice).fresh_key(), keys_of(alice).fresh_key()
    rewrite(alice, "keys", second, read_record(alice, "keys", first))
    with pytest.raises(CorruptRecordError, match="does not decrypt"):
        keys_of(alice).reload_from_storage()


def test_a_failed_commit_forgets_the_fresh_key(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = network.node("Alice")
    original = alice.step_write

    def failing(write: object) -> None:
        def boom(txn: Txn) -> None:
            raise OSError("simulated: the disk is full")

        original(boom)

    monkeypatch.setattr(alice, "step_write", failing)
    alice.start_flow(FreshKeyThenWait(network.party("Bob")))
    assert keys_of(alice).keys() == {alice.party.owning_key}


def test_private_keys_are_in_no_repr(network: MockNetwork) -> None:
    alice = network.node("Alice")
    keys = keys_of(alice)
    fresh = keys.fresh_key()
    secret = private_bytes(keys, fresh)
    identity = alice.identity.private_key.private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    text = repr(keys) + str(keys) + repr(alice.services)
    for value in (secret, identity):
        assert value.hex() not in text and repr(value) not in text
    assert repr(keys) == "<KeyManagementService of Alice: 2 keys>"
    assert public_key_bytes(alice.identity.private_key) == alice.party.owning_key
