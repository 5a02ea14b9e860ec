"""Shared material for ledger tests: fixed keys and parties, a dummy state and its contract,
and a tiny in-memory ledger to resolve inputs against."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fibers import Party, serializable
from fibers._node import Node
from ledger import (
    CommandData,
    Contract,
    ContractState,
    LedgerTransaction,
    OwnableState,
    SignedTransaction,
    StateAndRef,
    StateRef,
    TransactionBuilder,
    TransactionState,
    contract,
    public_key_bytes,
    require,
)
from ledger.testing import MockNetwork


def key_from_seed(seed: int) -> Ed25519PrivateKey:
    """A deterministic private key: 32 copies of the byte ``seed``."""
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


ALICE_KEY, BOB_KEY, NOTARY_KEY, OTHER_NOTARY_KEY = (key_from_seed(s) for s in (1, 2, 3, 4))
ALICE = Party("Alice", public_key_bytes(ALICE_KEY))
BOB = Party("Bob", public_key_bytes(BOB_KEY))
NOTARY = Party("Notary", public_key_bytes(NOTARY_KEY))
OTHER_NOTARY = Party("Other Notary", public_key_bytes(OTHER_NOTARY_KEY))
SALT = bytes(range(1, 33))
NOON = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


@serializable
@dataclass(frozen=True)
class DummyState(OwnableState):
    """An ownable state carrying an integer 'magic' value."""

    owner: Party
    magic: int

    @property
    def participants(self) -> list[Party]:
        return [self.owner]

    def with_new_owner(self, new_owner: Party) -> tuple[CommandData, OwnableState]:
        return DummyContract.Move(), dataclasses.replace(self, owner=new_owner)


@contract
class DummyContract(Contract):
    """Issue creates magic from nothing; Move must conserve it and be signed by input owners."""

    @serializable
    @dataclass(frozen=True)
    class Issue(CommandData):
        pass

    @serializable
    @dataclass(frozen=True)
    class Move(CommandData):
        pass

    def verify(self, ltx: LedgerTransaction) -> None:
        outputs = ltx.outputs_of_type(DummyState)
        inputs = ltx.inputs_of_type(DummyState)
        require(all(s.magic >= 0 for s in outputs), "every output's magic is non-negative")
        issues = ltx.commands_of_type(DummyContract.Issue)
        moves = ltx.commands_of_type(DummyContract.Move)
        require(len(issues) + len(moves) == 1, "exactly one DummyContract command")
        if issues:
            require(not inputs, "an Issue consumes no DummyState")
        else:
            require(sum(s.magic for s in inputs) == sum(s.magic for s in outputs),
                    "a Move conserves magic")
            signers = set(moves[0].signers)
            require(all(s.owner.owning_key in signers for s in inputs),
                    "the owner of every input signs the Move")


DUMMY = "tests.ledger._helpers:DummyContract"


class Ledger:
    """Recorded transactions by id: resolves StateRefs like a node's transaction storage."""

    def __init__(self) -> None:
        self.transactions: dict[str, SignedTransaction] = {}

    def record(self, stx: SignedTransaction) -> SignedTransaction:
        self.transactions[str(stx.id)] = stx
        return stx

    def resolve(self, ref: StateRef) -> TransactionState[ContractState] | None:
        stx = self.transactions.get(str(ref.txhash))
        return None if stx is None else stx.tx.outputs[ref.index]


def issue(owner: Party, *magics: int, notary: Party = NOTARY,
          salt: bytes | None = None) -> SignedTransaction:
    """A signed issuance of one DummyState per magic value to ``owner``."""
    builder = TransactionBuilder(notary, privacy_salt=salt)
    for magic in magics:
        builder.add_output_state(DummyState(owner, magic), DummyContract)
    builder.add_command(DummyContract.Issue(), owner.owning_key)
    return builder.sign_with(key_of(owner))


def move(inputs: list[StateAndRef[ContractState]], new_owner: Party,
         salt: bytes | None = None) -> TransactionBuilder:
    """A builder moving ``inputs`` to ``new_owner`` as one output holding their total magic."""
    builder = TransactionBuilder(privacy_salt=salt)
    states = [sar.state.data for sar in inputs]
    assert all(isinstance(state, DummyState) for state in states)
    dummies = cast(list[DummyState], states)
    for sar in inputs:
        builder.add_input_state(sar)
    builder.add_output_state(DummyState(new_owner, sum(s.magic for s in dummies)), DummyContract)
    owners = {state.owner.owning_key for state in dummies}
    builder.add_command(DummyContract.Move(), *owners)
    return builder


def key_of(party: Party) -> Ed25519PrivateKey:
    """The private key of one of the fixed test parties."""
    keys = {ALICE: ALICE_KEY, BOB: BOB_KEY, NOTARY: NOTARY_KEY, OTHER_NOTARY: OTHER_NOTARY_KEY}
    return keys[party]


def ledger_network(tmp_path: Path, *names: str, validating: bool = True) -> MockNetwork:
    """A network with a notary ("Notary") and a node for each of ``names``."""
    network = MockNetwork(tmp_path / "network")
    network.create_notary_node("Notary", validating=validating)
    for name in names:
        network.create_node(name)
    return network


def read_record(node: Node, db_name: str, key: bytes) -> bytes:
    """The value at ``key`` in ``node``'s database ``db_name``, which must be there."""
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        value = storage.get(txn, db_name, key)
    assert value is not None
    return value
