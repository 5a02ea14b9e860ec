"""States, references, commands and time windows: validation and canonical forms."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import Party
from fibers._wire import encode
from ledger import (
    Command,
    ContractState,
    SecureHash,
    StateRef,
    TimeWindow,
    TransactionState,
    UniqueIdentifier,
)
from tests.ledger._helpers import ALICE, BOB, DUMMY, NOON, NOTARY, DummyContract, DummyState

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=100)
HOUR = timedelta(hours=1)


def test_time_window_bounds_are_inclusive_then_exclusive() -> None:
    window = TimeWindow.between(NOON, NOON + HOUR)
    assert window.contains(NOON)
    assert window.contains(NOON + HOUR - timedelta(microseconds=1))
    assert not window.contains(NOON + HOUR)
    assert not window.contains(NOON - timedelta(microseconds=1))


def test_open_ended_time_windows() -> None:
    assert TimeWindow.from_only(NOON).contains(NOON + 1000 * HOUR)
    assert not TimeWindow.from_only(NOON).contains(NOON - HOUR)
    assert TimeWindow.until_only(NOON).contains(NOON - 1000 * HOUR)
    assert not TimeWindow.until_only(NOON).contains(NOON)


def test_time_window_refuses_naive_datetimes_with_the_fix() -> None:
    naive = datetime(2024, 1, 2, 12, 0)
    with pytest.raises(ValueError, match=r"from_time 2024-01-02T12:00:00 is naive.*UTC"):
        TimeWindow.from_only(naive)
    with pytest.raises(ValueError, match=r"instant .* is naive"):
        TimeWindow.from_only(NOON).contains(naive)


def test_time_window_needs_a_bound_and_a_positive_length() -> None:
    with pytest.raises(ValueError, match="at least one bound"):
        TimeWindow(None, None)
    with pytest.raises(ValueError, match="must end after it starts"):
        TimeWindow.between(NOON, NOON)


@FAST
@given(st.integers(-12 * 60, 12 * 60))
def test_time_windows_store_utc_so_equal_instants_have_equal_bytes(offset_minutes: int) -> None:
    local = NOON.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert TimeWindow.from_only(local) == TimeWindow.from_only(NOON)
    assert encode(TimeWindow.from_only(local)) == encode(TimeWindow.from_only(NOON))
    assert TimeWindow.from_only(local).from_time.tzinfo is UTC  # type: ignore[union-attr]


def test_a_zoneinfo_time_becomes_utc_and_can_cross_the_wire() -> None:
    paris = NOON.astimezone(ZoneInfo("Europe/Paris"))
    assert encode(TimeWindow.until_only(paris)) == encode(TimeWindow.until_only(NOON))


def test_command_signers_are_sorted_and_deduplicated() -> None:
    keys = [BOB.owning_key, ALICE.owning_key, BOB.owning_key]
    command = Command(DummyContract.Move(), tuple(keys))
    assert command.signers == tuple(sorted({ALICE.owning_key, BOB.owning_key}))
    assert command == Command(DummyContract.Move(), (ALICE.owning_key, BOB.owning_key))


def test_command_refuses_bad_signers_and_values() -> None:
    with pytest.raises(ValueError, match="at least one signer"):
        Command(DummyContract.Move(), ())
    with pytest.raises(ValueError, match="32-byte raw public key"):
        Command(DummyContract.Move(), (b"short",))
    with pytest.raises(TypeError, match="not bytes"):
        Command(DummyContract.Move(), ALICE.owning_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a CommandData"):
        Command("Move", (ALICE.owning_key,))  # type: ignore[arg-type]


def test_state_ref_validates_and_prints_hash_and_index() -> None:
    txhash = SecureHash.sha256(b"tx")
    assert str(StateRef(txhash, 3)) == f"{txhash}(3)"
    with pytest.raises(ValueError, match=r"index is an int in 0\.\.4294967295, got -1"):
        StateRef(txhash, -1)
    with pytest.raises(TypeError, match="must be a SecureHash"):
        StateRef(str(txhash), 0)  # type: ignore[arg-type]


def test_transaction_state_validates_its_parts() -> None:
    state = DummyState(ALICE, 1)
    assert TransactionState(state, DUMMY, NOTARY).data is state
    with pytest.raises(TypeError, match="must be a ContractState"):
        TransactionState("state", DUMMY, NOTARY)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="'module:qualname' of a @contract class"):
        TransactionState(state, "DummyContract", NOTARY)
    with pytest.raises(TypeError, match="notary must be a Party"):
        TransactionState(state, DUMMY, "Notary")  # type: ignore[arg-type]


def test_contract_state_is_abstract_until_participants_is_given() -> None:
    with pytest.raises(TypeError, match="participants"):
        ContractState()  # type: ignore[abstract]


def test_ownable_state_moves_to_a_new_owner() -> None:
    command, moved = DummyState(ALICE, 4).with_new_owner(BOB)
    assert isinstance(command, DummyContract.Move)
    assert moved == DummyState(BOB, 4)
    assert moved.participants == [BOB]


def test_unique_identifier_prints_external_id_and_uuid() -> None:
    fixed = uuid.UUID(int=7)
    assert str(UniqueIdentifier("deal-1", fixed)) == f"deal-1_{fixed}"
    assert str(UniqueIdentifier(id=fixed)) == str(fixed)
    assert UniqueIdentifier().id != UniqueIdentifier().id


def test_party_in_state_is_the_engine_party() -> None:
    assert isinstance(DummyState(ALICE, 1).owner, Party)
