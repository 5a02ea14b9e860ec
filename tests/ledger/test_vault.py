"""The vault: which states are ours, produced and consumed updates, queries and the feed."""

from __future__ import annotations

from dataclasses import dataclass

from fibers import Party, serializable
from fibers._node import Node
from ledger import (
    CommandData,
    ContractState,
    StateAndRef,
    StateRef,
    TransactionState,
    VaultService,
    VaultUpdate,
)
from ledger.testing import DummyState, MockNetwork, issue_for_test, spend_for_test


@serializable
@dataclass(frozen=True)
class Agreement(ContractState):
    """A state that is not ownable: relevant to each of its parties."""

    parties: tuple[Party, ...]

    @property
    def participants(self) -> list[Party]:
        return list(self.parties)


@serializable
@dataclass(frozen=True)
class _Sign(CommandData):
    """A command for states whose contract never runs: these tests record without verifying."""


UNVERIFIED = "tests.ledger.test_vault:Unverified"


def vault_of(node: Node) -> VaultService:
    vault = node.services.vault
    assert isinstance(vault, VaultService)
    return vault


def magics(states: list[StateAndRef[DummyState]]) -> list[int]:
    return [s.state.data.magic for s in states]


def test_an_issue_produces_our_states_and_a_move_consumes_them(network: MockNetwork) -> None:
    alice, bob, notary = network.node("Alice"), network.node("Bob"), network.node("Notary")
    updates: list[VaultUpdate] = []
    vault_of(alice).track().subscribe(updates.append)
    issued = issue_for_test(alice, [DummyState(alice.party, 2), DummyState(alice.party, 3)])
    mine = vault_of(alice).query(DummyState)
    assert [s.ref for s in mine] == [StateRef(issued.id, 0), StateRef(issued.id, 1)]
    moved = spend_for_test(alice, mine, [DummyState(bob.party, 5)], signers=[notary])
    assert vault_of(alice).query(DummyState) == []
    assert updates == [VaultUpdate((), tuple(mine)), VaultUpdate(tuple(mine), ())]
    assert vault_of(alice).consumed_by(mine[0].ref) == moved.id
    # Bob records the move too: its output is his.
    bob.services.validated_transactions.record(moved)
    assert magics(vault_of(bob).query(DummyState)) == [5]


def test_states_of_other_parties_are_not_in_the_vault(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    stx = issue_for_test(alice, [DummyState(bob.party, 1), DummyState(alice.party, 2)])
    assert magics(vault_of(alice).query(DummyState)) == [2]
    assert vault_of(alice).state_and_ref(StateRef(stx.id, 0)) is None


def test_a_state_is_ours_when_a_participant_is_us(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    notary = network.notary
    issue_for_test(alice, Agreement((bob.party, alice.party)), UNVERIFIED, notary,
                   command=_Sign())
    issue_for_test(alice, Agreement((bob.party,)), UNVERIFIED, notary, command=_Sign())
    found = vault_of(alice).query(Agreement)
    assert [s.state.data for s in found] == [Agreement((bob.party, alice.party))]


def test_a_state_owned_by_one_of_our_fresh_keys_is_ours(network: MockNetwork) -> None:
    alice = network.node("Alice")
    key = alice.services.key_management.fresh_key()
    anonymous = Party("anonymous", key)
    issue_for_test(alice, DummyState(anonymous, 7))
    assert magics(vault_of(alice).query(DummyState)) == [7]


def test_query_filters_by_type_and_criteria_and_orders_by_ref(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    for salt_byte, magic in ((9, 30), (1, 10), (5, 20)):
        issue_for_test(alice, DummyState(alice.party, magic), salt=bytes([salt_byte]) * 32)
    issue_for_test(alice, Agreement((alice.party, bob.party)), UNVERIFIED,
                   command=_Sign())
    everything = vault_of(alice).query(ContractState)
    assert [s.ref for s in everything] == sorted(s.ref for s in everything)
    assert len(everything) == 4
    big = vault_of(alice).query(DummyState, criteria=lambda s: s.state.data.magic >= 20)
    assert sorted(magics(big)) == [20, 30]
    assert [s.ref for s in big] == sorted(s.ref for s in big)


def test_track_with_a_type_publishes_only_updates_with_that_type(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    dummies: list[VaultUpdate] = []
    vault_of(alice).track(DummyState).subscribe(dummies.append)
    issue_for_test(alice, Agreement((alice.party, bob.party)), UNVERIFIED, command=_Sign())
    issue_for_test(alice, [DummyState(alice.party, 1), Agreement((alice.party,))],
                   "ledger.testing:DummyContract")
    assert len(dummies) == 1
    assert [s.state.data for s in dummies[0].produced] == [DummyState(alice.party, 1)]


def test_resolve_state_finds_consumed_and_foreign_outputs_of_recorded_transactions(
    network: MockNetwork,
) -> None:
    alice, bob, notary = network.node("Alice"), network.node("Bob"), network.node("Notary")
    issued = issue_for_test(alice, [DummyState(alice.party, 4), DummyState(bob.party, 1)])
    spend_for_test(alice, vault_of(alice).query(DummyState), [DummyState(bob.party, 4)],
                   signers=[notary])
    vault = vault_of(alice)
    assert vault.state_and_ref(StateRef(issued.id, 0)) is None  # consumed
    resolved = vault.resolve_state(StateRef(issued.id, 0))
    assert isinstance(resolved, TransactionState) and resolved.data == DummyState(alice.party, 4)
    foreign = vault.resolve_state(StateRef(issued.id, 1))
    assert foreign is not None and foreign.data == DummyState(bob.party, 1)
    assert vault.resolve_state(StateRef(issued.id, 2)) is None
    assert vault_of(bob).resolve_state(StateRef(issued.id, 0)) is None  # never recorded there


def test_the_vault_survives_a_restart(network: MockNetwork) -> None:
    alice, bob, notary = network.node("Alice"), network.node("Bob"), network.node("Notary")
    issue_for_test(alice, [DummyState(alice.party, 1), DummyState(alice.party, 2)])
    first = vault_of(alice).query(DummyState, criteria=lambda s: s.state.data.magic == 1)
    moved = spend_for_test(alice, first, [DummyState(bob.party, 1)], signers=[notary])
    before = vault_of(alice).query(DummyState)
    alice = network.restart_node(alice)
    assert vault_of(alice).query(DummyState) == before
    assert vault_of(alice).consumed_by(first[0].ref) == moved.id
    # A transaction recorded again changes nothing.
    assert alice.services.validated_transactions.record(moved) is False
    assert vault_of(alice).notify(moved).is_empty


def test_notify_twice_changes_nothing_the_second_time(network: MockNetwork) -> None:
    alice = network.node("Alice")
    stx = issue_for_test(alice, DummyState(alice.party, 1))
    assert vault_of(alice).notify(stx) == VaultUpdate((), ())
    assert magics(vault_of(alice).query(DummyState)) == [1]

