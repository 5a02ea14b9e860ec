"""Soft locks keep two flows of a node off the same states; coin selection picks and locks."""

from __future__ import annotations

import uuid

import pytest

from fibers import (
    FlowLogic,
    HospitalizeFlowException,
    Party,
    StateMachineRunId,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._node import Node
from ledger import (
    InsufficientStatesException,
    StateAndRef,
    StateRef,
    StatesNotAvailableException,
    VaultService,
)
from ledger.testing import DummyState, MockNetwork, issue_for_test, spend_for_test


def vault_of(node: Node) -> VaultService:
    vault = node.services.vault
    assert isinstance(vault, VaultService)
    return vault


def new_lock() -> StateMachineRunId:
    return StateMachineRunId(uuid.uuid4())


def issue(node: Node, *amounts: int) -> list[StateAndRef[DummyState]]:
    """Issue one DummyState per amount to ``node``; its states in output order."""
    stx = issue_for_test(node, [DummyState(node.party, amount) for amount in amounts])
    vault = vault_of(node)
    found = [vault.state_and_ref(StateRef(stx.id, i)) for i in range(len(amounts))]
    return [s for s in found if s is not None]


def magic(state: DummyState) -> int:
    return state.magic


@initiating_flow
class LockThenWait(FlowLogic[set[StateRef]]):
    """Locks states (given, or selected worth ``target``), then waits for a word from ``other``."""

    def __init__(self, other: Party, refs: tuple[StateRef, ...] = (), target: int = 0) -> None:
        self.other, self.refs, self.target = other, refs, target

    @suspendable
    def call(self) -> set[StateRef]:
        vault = self.service_hub.vault
        if self.refs:
            vault.soft_lock(self.run_id, self.refs)
        else:
            vault.select_states(DummyState, magic, self.target, self.run_id)
        self.receive(self.other, str)
        return set(vault.soft_locked(self.run_id))


@initiated_by(LockThenWait)
class Release(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "done")


class LockAndReturn(FlowLogic[None]):
    def __init__(self, refs: tuple[StateRef, ...]) -> None:
        self.refs = refs

    @suspendable
    def call(self) -> None:
        self.service_hub.vault.soft_lock(self.run_id, self.refs)


def test_a_second_lock_id_cannot_take_locked_states(network: MockNetwork) -> None:
    states = issue(network.node("Alice"), 1, 2, 3)
    vault = vault_of(network.node("Alice"))
    first, second = new_lock(), new_lock()
    vault.soft_lock(first, [states[0].ref, states[1].ref])
    vault.soft_lock(first, [states[0].ref])  # the holder may lock its own states again
    with pytest.raises(StatesNotAvailableException) as caught:
        vault.soft_lock(second, [states[1].ref, states[2].ref])
    assert caught.value.refs == (states[1].ref,)
    assert str(caught.value) == (
        f"state {states[1].ref} is not available: soft-locked by flow {first}")
    assert vault.soft_locked(second) == set()  # all or nothing: the free state stays free
    assert vault.soft_locked(first) == {states[0].ref, states[1].ref}


def test_consumed_and_unknown_states_cannot_be_locked(network: MockNetwork) -> None:
    alice, bob, notary = network.node("Alice"), network.node("Bob"), network.node("Notary")
    spent, kept = issue(alice, 1, 2)
    moved = spend_for_test(alice, [spent], [DummyState(bob.party, 1)], signers=[notary])
    unknown = StateRef(moved.id, 7)
    with pytest.raises(StatesNotAvailableException) as caught:
        vault_of(alice).soft_lock(new_lock(), [spent.ref, kept.ref, unknown])
    assert caught.value.refs == (spent.ref, unknown)
    assert str(caught.value) == (
        f"states {spent.ref}, {unknown} are not available: {spent.ref} is consumed by "
        f"transaction {moved.id}; {unknown} is not an unconsumed state in this node's vault")


def test_spending_a_locked_state_releases_its_lock(network: MockNetwork) -> None:
    alice, bob, notary = network.node("Alice"), network.node("Bob"), network.node("Notary")
    (state,) = issue(alice, 1)
    lock = new_lock()
    vault_of(alice).soft_lock(lock, [state.ref])
    spend_for_test(alice, [state], [DummyState(bob.party, 1)], signers=[notary])
    assert vault_of(alice).soft_locked(lock) == set()


def test_release_frees_all_or_some_states(network: MockNetwork) -> None:
    states = issue(network.node("Alice"), 1, 2, 3)
    vault = vault_of(network.node("Alice"))
    lock = new_lock()
    vault.soft_lock(lock, [s.ref for s in states])
    vault.release_soft_locks(lock, [states[0].ref])
    assert vault.soft_locked(lock) == {states[1].ref, states[2].ref}
    assert vault.query(DummyState, include_soft_locked=False) == [states[0]]
    vault.release_soft_locks(lock)
    assert vault.soft_locked(lock) == set()
    vault.soft_lock(new_lock(), [s.ref for s in states])


class LockAndFail(FlowLogic[None]):
    def __init__(self, refs: tuple[StateRef, ...]) -> None:
        self.refs = refs

    @suspendable
    def call(self) -> None:
        self.service_hub.vault.soft_lock(self.run_id, self.refs)
        raise ValueError("changed my mind")


def test_locks_are_released_when_the_flow_fails(network: MockNetwork) -> None:
    alice = network.node("Alice")
    states = issue(alice, 1, 2)
    handle = alice.start_flow(LockAndFail(tuple(s.ref for s in states)))
    with pytest.raises(ValueError, match="changed my mind"):
        handle.result.result(timeout=0)
    assert vault_of(alice).soft_locked(handle.id) == set()
    vault_of(alice).soft_lock(new_lock(), [s.ref for s in states])


def test_locks_are_released_when_the_flow_ends(network: MockNetwork) -> None:
    alice = network.node("Alice")
    states = issue(alice, 1, 2)
    handle = alice.start_flow(LockAndReturn(tuple(s.ref for s in states)))
    handle.result.result(timeout=0)
    assert vault_of(alice).soft_locked(handle.id) == set()
    vault_of(alice).soft_lock(new_lock(), [s.ref for s in states])


def test_locks_are_released_when_the_flow_is_killed(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    states = issue(alice, 1, 2)
    handle = alice.start_flow(LockThenWait(bob.party, tuple(s.ref for s in states)))
    assert vault_of(alice).soft_locked(handle.id) == {s.ref for s in states}
    with pytest.raises(StatesNotAvailableException):
        vault_of(alice).soft_lock(new_lock(), [states[0].ref])
    assert alice.kill_flow(handle.id)
    assert vault_of(alice).soft_locked(handle.id) == set()
    vault_of(alice).soft_lock(new_lock(), [s.ref for s in states])


@initiating_flow
class LockThenPark(FlowLogic[None]):
    """Locks states, hears from ``other``, then asks for the hospital."""

    def __init__(self, other: Party, refs: tuple[StateRef, ...]) -> None:
        self.other, self.refs = other, refs

    @suspendable
    def call(self) -> None:
        self.service_hub.vault.soft_lock(self.run_id, self.refs)
        self.receive(self.other, str)
        raise HospitalizeFlowException("an operator should look at this")


@initiated_by(LockThenPark)
class ReleaseParked(Release):
    pass


def test_locks_are_released_when_a_hospitalised_flow_is_killed(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    states = issue(alice, 1, 2)
    refs = {s.ref for s in states}
    handle = alice.start_flow(LockThenPark(bob.party, tuple(sorted(refs))))
    network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == handle.id and vault_of(alice).soft_locked(handle.id) == refs
    assert alice.kill_flow(handle.id)
    assert vault_of(alice).soft_locked(handle.id) == set()
    vault_of(alice).soft_lock(new_lock(), sorted(refs))


def test_a_restored_flow_takes_its_locks_again(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    states = issue(alice, 1, 2)
    refs = {s.ref for s in states}
    handle = alice.start_flow(LockThenWait(bob.party, tuple(sorted(refs))))
    alice = network.restart_node(alice)
    assert vault_of(alice).soft_locked(handle.id) == refs
    restored = alice.handle(handle.id)
    network.run_network()
    assert restored.result.result(timeout=0) == refs
    assert vault_of(alice).soft_locked(handle.id) == set()


def test_select_prefers_one_state_that_covers_the_target(network: MockNetwork) -> None:
    alice = network.node("Alice")
    issue(alice, 20, 50, 30, 70)
    lock = new_lock()
    exact = vault_of(alice).select_states(DummyState, magic, 50, lock)
    assert [s.state.data.magic for s in exact] == [50]  # no change needed
    assert vault_of(alice).soft_locked(lock) == {exact[0].ref}
    over = vault_of(alice).select_states(DummyState, magic, 55, new_lock())
    assert [s.state.data.magic for s in over] == [70]  # the smallest that covers 55


def test_select_takes_the_largest_states_first_when_none_covers_alone(
    network: MockNetwork,
) -> None:
    alice = network.node("Alice")
    issue(alice, 20, 50, 30)
    exact = vault_of(alice).select_states(DummyState, magic, 80, new_lock())
    assert [s.state.data.magic for s in exact] == [50, 30]
    over = vault_of(alice).select_states(DummyState, magic, 15, new_lock())
    assert [s.state.data.magic for s in over] == [20]


def test_select_skips_states_locked_by_others_and_honours_criteria(
    network: MockNetwork,
) -> None:
    alice = network.node("Alice")
    states = issue(alice, 10, 40, 25)
    other = new_lock()
    vault_of(alice).soft_lock(other, [states[1].ref])
    chosen = vault_of(alice).select_states(
        DummyState, magic, 30, new_lock(), criteria=lambda s: s.state.data.magic != 5)
    assert [s.state.data.magic for s in chosen] == [25, 10]
    with pytest.raises(InsufficientStatesException):
        vault_of(alice).select_states(DummyState, magic, 30, new_lock(),
                                      criteria=lambda s: s.state.data.magic > 10)


def test_select_reports_what_it_needed_and_what_was_available(network: MockNetwork) -> None:
    alice = network.node("Alice")
    states = issue(alice, 10, 20, 40)
    vault_of(alice).soft_lock(new_lock(), [states[2].ref])
    lock = new_lock()
    with pytest.raises(InsufficientStatesException) as caught:
        vault_of(alice).select_states(DummyState, magic, 45, lock)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.needed, caught.value.available) == (45, 30)
    assert "needed 45" in str(caught.value) and "add up to 30" in str(caught.value)
    assert vault_of(alice).soft_locked(lock) == set()


def test_a_restored_flow_gets_the_same_selection_and_its_locks(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(alice, 5, 8, 13)
    handle = alice.start_flow(LockThenWait(bob.party, target=20))
    selected = vault_of(alice).soft_locked(handle.id)
    assert {vault_of(alice).state_and_ref(r).state.data.magic  # type: ignore[union-attr]
            for r in selected} == {13, 8}
    alice = network.restart_node(alice)
    assert vault_of(alice).soft_locked(handle.id) == selected
    restored = alice.handle(handle.id)
    network.run_network()
    assert restored.result.result(timeout=0) == selected
