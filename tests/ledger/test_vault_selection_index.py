"""Coin selection through the vault's index chooses exactly what sorting every state chose."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import StateMachineRunId
from ledger import InsufficientStatesException, StateAndRef, StateRef, VaultService
from ledger.testing import DummyState, MockNetwork, issue_for_test, spend_for_test
from tests.ledger._helpers import ledger_network

Criteria = Callable[[StateAndRef[DummyState]], bool]


def magic(state: DummyState) -> int:
    return state.magic


def magic_mod_3(state: DummyState) -> int:
    return state.magic % 3


def new_lock() -> StateMachineRunId:
    return StateMachineRunId(uuid.uuid4())


def vault_of(network: MockNetwork, name: str = "Alice") -> VaultService:
    vault = network.node(name).services.vault
    assert isinstance(vault, VaultService)
    return vault


def issue(network: MockNetwork, amounts: list[int]) -> list[StateAndRef[DummyState]]:
    alice = network.node("Alice")
    stx = issue_for_test(alice, [DummyState(alice.party, amount) for amount in amounts])
    found = [vault_of(network).state_and_ref(StateRef(stx.id, i)) for i in range(len(amounts))]
    return [s for s in found if s is not None]  # type: ignore[misc]


def sorting_selection(
    vault: VaultService, target: int, lock_id: StateMachineRunId, criteria: Criteria
) -> tuple[list[StateRef] | None, int]:
    """The selection as the vault made it before it had an index: filter, then sort it all."""
    candidates = [(sar.state.data.magic, sar) for sar in vault.query(DummyState, criteria=criteria)
                  if vault._locks.get(sar.ref, lock_id) == lock_id and sar.state.data.magic > 0]
    available = sum(amount for amount, _ in candidates)
    if available < target:
        return None, available
    covering = [c for c in candidates if c[0] >= target]
    if covering:
        return ([min(covering, key=lambda c: (c[0], c[1].ref))[1].ref] if target else []), 0
    chosen, total = [], 0
    for amount, sar in sorted(candidates, key=lambda c: (-c[0], c[1].ref)):
        if total >= target:
            break
        chosen.append(sar.ref)
        total += amount
    return chosen, 0


def indexed_selection(
    vault: VaultService, target: int, lock_id: StateMachineRunId, criteria: Criteria,
    groups: frozenset[int] | None = None,
) -> tuple[list[StateRef] | None, int]:
    extra = {} if groups is None else {"group_of": magic_mod_3, "in_group": groups.__contains__}
    try:
        chosen = vault.select_states(DummyState, magic, target, lock_id, criteria=criteria,
                                     **extra)  # type: ignore[arg-type]
    except InsufficientStatesException as exc:
        return None, exc.available
    assert vault.soft_locked(lock_id) >= {sar.ref for sar in chosen}
    return [sar.ref for sar in chosen], 0


@pytest.fixture(scope="module")
def shared_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockNetwork]:
    """One network for every Hypothesis example (each example selects among its own states):
    starting nodes per example would make the property test slow."""
    network = ledger_network(tmp_path_factory.mktemp("vault-index"), "Alice", "Bob")
    try:
        yield network
    finally:
        network.stop_nodes()


def release(vault: VaultService, lock_id: StateMachineRunId) -> None:
    vault.release_soft_locks(lock_id)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_selection_from_many_states_matches_sorting_them_all(
    network: MockNetwork, seed: int
) -> None:
    rng = random.Random(seed)
    vault = vault_of(network)
    states = issue(network, [rng.choice([0, 1, 5, 5, 10, 50, rng.randrange(1000)])
                             for _ in range(1500)])
    other = new_lock()
    vault.soft_lock(other, [s.ref for s in rng.sample(states, 300)])
    spend_for_test(network.node("Alice"), rng.sample([s for s in states
                                                      if s.ref not in vault._locks], 200),
                   [DummyState(network.node("Bob").party, 1)])
    for reload in (False, True):
        if reload:
            vault.reload_from_storage()
        for target in [0, 1, 5, 6, 49, 50, 51, 999, 1000, 5000, 10**5, 10**6,
                       *(rng.randrange(200_000) for _ in range(30))]:
            excluded = rng.randrange(1, 1000)
            criteria: Criteria = lambda s, x=excluded: s.state.data.magic != x  # noqa: E731
            lock = new_lock()
            expected = sorting_selection(vault, target, lock, criteria)
            assert indexed_selection(vault, target, lock, criteria) == expected
            release(vault, lock)
    assert vault.soft_locked(other) == {s.ref for s in states if vault._locks.get(s.ref) == other}


@pytest.mark.parametrize("seed", [7, 8])
def test_selection_by_group_matches_sorting_with_the_group_as_criteria(
    network: MockNetwork, seed: int
) -> None:
    rng = random.Random(seed)
    vault = vault_of(network)
    issue(network, [rng.randrange(100) for _ in range(600)])
    for _ in range(40):
        groups = frozenset(rng.sample([0, 1, 2], rng.randint(1, 2)))
        target = rng.randrange(3000)
        lock = new_lock()
        expected = sorting_selection(
            vault, target, lock, lambda s, g=groups: magic_mod_3(s.state.data) in g)
        assert indexed_selection(vault, target, lock, lambda s: True, groups) == expected
        release(vault, lock)


def test_the_index_follows_states_recorded_and_consumed_after_it_was_built(
    network: MockNetwork,
) -> None:
    vault = vault_of(network)
    first = issue(network, [30, 20])
    assert indexed_selection(vault, 25, new_lock(), lambda s: True)[0] == [first[0].ref]
    vault.release_soft_locks(next(iter(vault._locked_by)))
    spend_for_test(network.node("Alice"), [first[0]], [DummyState(network.node("Bob").party, 30)])
    later = issue(network, [26])
    assert indexed_selection(vault, 25, new_lock(), lambda s: True)[0] == [later[0].ref]
    with pytest.raises(InsufficientStatesException) as caught:
        vault.select_states(DummyState, magic, 25, new_lock())
    assert caught.value.available == 20  # the 26 is locked by the selection before, 30 spent


def test_a_selection_among_equal_states_stops_at_the_first_one_free(
    network: MockNetwork,
) -> None:
    """Concurrent flows lock the first states of a run of equal amounts: a selection looks at
    those and the first free one, not at the whole run."""
    vault = vault_of(network)
    states = sorted(issue(network, [1000] * 120), key=lambda s: s.ref)
    busy = new_lock()
    vault.soft_lock(busy, [s.ref for s in states[:30]])
    looked: list[StateRef] = []

    def criteria(sar: StateAndRef[DummyState]) -> bool:
        looked.append(sar.ref)
        return True

    chosen = vault.select_states(DummyState, magic, 900, new_lock(), criteria=criteria)
    assert [s.ref for s in chosen] == [states[30].ref]  # the smallest free ref, as before
    assert looked == [states[30].ref]  # the locked 30 were skipped on their locks alone


def thousand(state: DummyState) -> int:
    return 1000


def test_a_selection_across_many_groups_stops_at_the_first_one_free(
    network: MockNetwork,
) -> None:
    """Cash of many issuers is many groups (one per issued token): a selection tries them in
    the order of what each can offer and stops once no other can beat what it found."""
    vault = vault_of(network)
    states = sorted(issue(network, list(range(60))), key=lambda s: s.ref)
    busy = new_lock()
    vault.soft_lock(busy, [s.ref for s in states[:20]])
    looked: list[StateRef] = []

    def criteria(sar: StateAndRef[DummyState]) -> bool:
        looked.append(sar.ref)
        return True

    chosen = vault.select_states(DummyState, thousand, 900, new_lock(), criteria=criteria,
                                 group_of=magic, in_group=lambda group: True)
    assert [s.ref for s in chosen] == [states[20].ref]
    assert looked == [states[20].ref]


@settings(max_examples=40, deadline=None)
@given(
    amounts=st.lists(st.integers(0, 60), min_size=1, max_size=40),
    locked=st.lists(st.integers(0, 39), max_size=10),
    spent=st.lists(st.integers(0, 39), max_size=5),
    excluded=st.integers(0, 60),
    target=st.integers(0, 800),
    groups=st.none() | st.frozensets(st.integers(0, 2), min_size=1),
)
def test_indexed_selection_is_the_sorting_selection(
    shared_network: MockNetwork, *, amounts: list[int], locked: list[int], spent: list[int],
    excluded: int, target: int, groups: frozenset[int] | None,
) -> None:
    network = shared_network
    vault = vault_of(network)
    batch = issue(network, amounts)
    mine = {s.ref for s in batch}
    other = new_lock()
    vault.soft_lock(other, {batch[i].ref for i in locked if i < len(batch)})
    to_spend = [batch[i] for i in set(spent) if i < len(batch) and batch[i].ref not in vault._locks]
    if to_spend:
        spend_for_test(network.node("Alice"), to_spend, [DummyState(network.node("Bob").party, 1)])

    def criteria(sar: StateAndRef[DummyState]) -> bool:
        return sar.ref in mine and sar.state.data.magic != excluded

    def with_group(sar: StateAndRef[DummyState]) -> bool:
        return criteria(sar) and (groups is None or magic_mod_3(sar.state.data) in groups)

    lock = new_lock()
    expected = sorting_selection(vault, target, lock, with_group)
    assert indexed_selection(vault, target, lock, criteria, groups) == expected
    release(vault, lock)
    release(vault, other)
