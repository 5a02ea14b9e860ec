"""The notary's uniqueness provider checks every input before it changes anything, and its
memory follows what storage holds (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fibers import FlowLogic, suspendable
from fibers._node import Node
from fibers._storage import Txn
from ledger import NotaryError, NotaryException, SecureHash, StateRef
from ledger import UniquenessProvider as Uniqueness
from ledger.testing import MockNetwork
from tests.ledger._helpers import ledger_network

TX1, TX2 = SecureHash.sha256(b"tx1"), SecureHash.sha256(b"tx2")
A, B = (StateRef(SecureHash.sha256(b"issue"), i) for i in range(2))


@pytest.fixture(params=[True, False], ids=["validating", "non-validating"])
def network(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MockNetwork]:
    network = ledger_network(tmp_path, "Alice", validating=request.param)
    try:
        yield network
    finally:
        network.stop_nodes()


def unchecked_ref(txhash: object, index: object) -> StateRef:
    """A StateRef built without its constructor's checks, as a caller in-process can."""
    ref = object.__new__(StateRef)
    object.__setattr__(ref, "txhash", txhash)
    object.__setattr__(ref, "index", index)
    return ref


def uniqueness_of(node: Node) -> Uniqueness:
    uniqueness = node.services.uniqueness
    assert isinstance(uniqueness, Uniqueness)
    return uniqueness


def stored_commits(network: MockNetwork, node: Node) -> tuple[Node, dict[StateRef, Any]]:
    """What the notary's storage holds, read by a restarted notary."""
    restarted = network.restart_node(node)
    return restarted, uniqueness_of(restarted).committed()


BAD_REFS = {
    "index -1": unchecked_ref(SecureHash.sha256(b"issue"), -1),
    "index over 32 bits": unchecked_ref(SecureHash.sha256(b"issue"), 2**32),
    "index of 5000 digits": unchecked_ref(SecureHash.sha256(b"issue"), 10**5000),
    "index a str": unchecked_ref(SecureHash.sha256(b"issue"), "0"),
    "hash of 31 bytes": unchecked_ref(object.__new__(SecureHash), 0),
    "not a StateRef": ("a" * 32, 0),
}
object.__setattr__(BAD_REFS["hash of 31 bytes"].txhash, "bytes", b"\x00" * 31)


@pytest.mark.parametrize("case", sorted(BAD_REFS))
def test_a_malformed_input_changes_nothing_in_memory_or_on_disk(
    network: MockNetwork, case: str
) -> None:
    notary = network.node("Notary")
    with pytest.raises(NotaryException) as caught:
        uniqueness_of(notary).commit([A, BAD_REFS[case], B],  # type: ignore[list-item]
                                     TX1, network.party("Alice"))
    error = caught.value.error
    assert isinstance(error, NotaryError.TransactionInvalid)
    assert "input 1 is not a valid state reference" in str(caught.value)
    assert uniqueness_of(notary).consumed_by(A) is None
    assert uniqueness_of(notary).committed() == {}
    notary, on_disk = stored_commits(network, notary)
    assert on_disk == {}
    # A valid spend of the same states still goes through afterwards.
    uniqueness_of(notary).commit([A, B], TX2, network.party("Alice"))
    assert uniqueness_of(notary).committed() == stored_commits(network, notary)[1]


class Commit(FlowLogic[None]):
    def __init__(self, *commits: tuple[tuple[StateRef, ...], SecureHash]) -> None:
        self.commits = commits

    @suspendable
    def call(self) -> None:
        for inputs, tx_id in self.commits:
            self.service_hub.uniqueness.commit(inputs, tx_id, self.our_identity)


def test_a_failed_write_leaves_memory_unchanged(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    notary = network.node("Notary")
    storage = notary.storage
    assert storage is not None
    original = storage.put_sealed

    def failing(txn: Txn, db_name: str, key: bytes, payload: bytes) -> None:
        if db_name == "notary_commits":
            raise OSError("simulated: the disk is full")
        original(txn, db_name, key, payload)

    monkeypatch.setattr(storage, "put_sealed", failing)
    handle = notary.start_flow(Commit(((A, B), TX1)))
    assert not handle.result.done()
    uniqueness = uniqueness_of(notary)
    assert uniqueness.consumed_by(A) is None and uniqueness.consumed_by(B) is None
    assert uniqueness.committed() == {}
    monkeypatch.undo()
    network.advance_time(1)  # the retry commits, and only then memory holds the commit
    assert uniqueness.committed() == {A: (TX1, "Notary"), B: (TX1, "Notary")}
    assert stored_commits(network, notary)[1] == {A: (TX1, "Notary"), B: (TX1, "Notary")}


def test_a_commit_not_yet_stored_still_conflicts_within_one_step(network: MockNetwork) -> None:
    notary = network.node("Notary")
    handle = notary.start_flow(Commit(((A,), TX1), ((A, B), TX2)))
    with pytest.raises(NotaryException, match="double spend"):
        handle.result.result(timeout=0)
    assert uniqueness_of(notary).committed() == {A: (TX1, "Notary")}
    assert stored_commits(network, notary)[1] == {A: (TX1, "Notary")}
