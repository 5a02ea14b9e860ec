"""Identities live in the node's storage: a fresh MockNetwork on the same directory re-creates
each node as the same party, and a restored node re-sends to peers that are created after it."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import pytest

from fibers._identity import stored_identity
from fibers._storage import CorruptRecordError, NodeStorage, TamperedDatabaseError
from fibers.testing import MockNetwork
from tests.fibers.test_durability import Collect


def test_a_fresh_network_on_the_same_directory_recreates_the_same_parties(
    tmp_path: Path,
) -> None:
    first = MockNetwork(tmp_path)
    alice, bob = first.create_node("Alice"), first.create_node("Bob")
    parties = (alice.party, bob.party)
    handle = alice.start_flow(Collect(bob.party))
    first.run_network(max_messages=2)  # Bob took "first?": the flow is half way
    first.stop_nodes()
    assert tmp_path.exists()  # a network given its directory leaves it in place

    second = MockNetwork(tmp_path)
    alice, bob = second.create_node("Alice"), second.create_node("Bob")
    assert (alice.party, bob.party) == parties
    restored = alice.handle(handle.id)
    second.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    second.stop_nodes()


def test_a_restored_node_re_sends_to_a_peer_created_after_it(tmp_path: Path) -> None:
    first = MockNetwork(tmp_path)
    alice, bob = first.create_node("Alice"), first.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))  # the init never left: crash now
    first.stop_nodes()

    second = MockNetwork(tmp_path)
    alice = second.create_node("Alice")  # restores and wants to re-send to Bob, not known yet
    restored = alice.handle(handle.id)
    assert second.pending_messages() == []
    second.create_node("Bob")  # known now: the init goes out
    assert [m.recipient.name for m in second.pending_messages()] == ["Bob"]
    second.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    second.stop_nodes()


def test_the_identity_key_is_encrypted_at_rest(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    with NodeStorage.open(tmp_path) as storage:
        identity = stored_identity(storage, "Alice")
    raw = identity.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "node.lmdb").iterdir())
    assert identity.party.owning_key in on_disk and raw not in on_disk
    with NodeStorage.open(tmp_path) as storage:
        assert stored_identity(storage, "Alice").party == identity.party


def test_a_stored_identity_under_another_secret_does_not_load(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        stored_identity(storage, "Alice")
    secret = tmp_path / "node.secret"
    secret.unlink()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    # Storage now refuses the directory as it opens (its guard record does not unseal under
    # the new secret); the identity record itself fails its seal too.
    with pytest.raises(TamperedDatabaseError, match="node secret is not the one"):
        NodeStorage.open(tmp_path)
    # Past that check (storage built directly on the environment), the identity does not load.
    unchecked = NodeStorage(lmdb.open(str(tmp_path / "node.lmdb"), max_dbs=32), tmp_path,
                            secret.read_bytes())
    with unchecked, pytest.raises(CorruptRecordError, match="meta"):
        unchecked.db("meta")
        stored_identity(unchecked, "Alice")


def test_a_node_cannot_start_on_another_nodes_directory(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        stored_identity(storage, "Alice")
        with pytest.raises(ValueError, match="holds the identity of 'Alice', not 'Bob'"):
            stored_identity(storage, "Bob")
