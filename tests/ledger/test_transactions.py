"""Transaction ids (Merkle scheme, golden bytes), filtered views and the builder."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers._wire import encode
from ledger import (
    Command,
    FilteredGroup,
    SecureHash,
    StateRef,
    TimeWindow,
    TransactionBuilder,
    TransactionState,
    WireTransaction,
)
from ledger._merkle import GROUPS, merkle_root
from tests.ledger._helpers import (
    ALICE,
    BOB,
    DUMMY,
    NOON,
    NOTARY,
    OTHER_NOTARY,
    SALT,
    DummyContract,
    DummyState,
    issue,
)

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=100)
GENESIS = StateRef(SecureHash.sha256(b"genesis"), 0)
WINDOW = TimeWindow.between(NOON, NOON + timedelta(hours=1))


def fixed_transaction(**changes: object) -> WireTransaction:
    """A transaction with every part fixed: keys from fixed seeds, fixed salt and times."""
    parts: dict[str, object] = dict(
        inputs=(GENESIS,), outputs=(TransactionState(DummyState(BOB, 12), DUMMY, NOTARY),),
        commands=(Command(DummyContract.Move(), (ALICE.owning_key,)),), notary=NOTARY,
        time_window=WINDOW, privacy_salt=SALT)
    parts.update(changes)
    return WireTransaction(**parts)  # type: ignore[arg-type]


# Golden values: a change here means every transaction id on every ledger changes. They hash
# class names too, so moving DummyState/DummyContract out of tests/ledger/_helpers.py changes them.
GOLDEN_ID = "2d4ca5feba2b088f59da328f5b3c346865ec66d39052de28380d03a86ea637e6"
GOLDEN_TIME_WINDOW = (
    "96c70005b96c65646765722e5f7374617465733a54696d6557696e646f77a966726f6d5f74696d65c7141107"
    "e801020c000000000000020000000000000000aa756e74696c5f74696d65c7141107e801020d000000000000"
    "020000000000000000")


def test_golden_transaction_id_and_component_bytes() -> None:
    wtx = fixed_transaction()
    assert encode(wtx.time_window).hex() == GOLDEN_TIME_WINDOW
    assert str(wtx.id) == GOLDEN_ID


def _reference_root(hashes: list[bytes]) -> bytes:
    if not hashes:
        return bytes(32)
    while len(hashes) > 1:
        pairs = [hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                 for i in range(0, len(hashes) - 1, 2)]
        hashes = pairs + hashes[len(pairs) * 2:]
    return hashes[0]


def test_id_follows_the_documented_scheme() -> None:
    wtx = fixed_transaction()
    groups = [wtx.inputs, wtx.outputs, wtx.commands, (wtx.notary,), (wtx.time_window,)]
    group_hashes = []
    for g, components in enumerate(groups):
        leaves = [hashlib.sha256(b"\x00" + hashlib.sha256(SALT + struct.pack(">II", g, i))
                                 .digest() + encode(c)).digest()
                  for i, c in enumerate(components)]
        group_hashes.append(_reference_root(leaves))
    assert [h.bytes for h in wtx.group_hashes] == group_hashes
    assert wtx.id.bytes == _reference_root(group_hashes)


def test_empty_groups_hash_to_zero() -> None:
    wtx = fixed_transaction(inputs=(), time_window=None, notary=None)
    assert [str(h) == "00" * 32 for h in wtx.group_hashes] == [True, False, False, True, True]


@FAST
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=9))
def test_merkle_root_pairs_levels_and_promotes_an_odd_last_hash(raw: list[bytes]) -> None:
    assert merkle_root([SecureHash(r) for r in raw]).bytes == _reference_root(list(raw))


def test_id_is_computed_once() -> None:
    wtx = fixed_transaction()
    assert wtx.id is wtx.id


@pytest.mark.parametrize("change", [
    {"inputs": (StateRef(GENESIS.txhash, 1),)},
    {"outputs": (TransactionState(DummyState(BOB, 13), DUMMY, NOTARY),)},
    {"commands": (Command(DummyContract.Issue(), (ALICE.owning_key,)),)},
    {"notary": OTHER_NOTARY},
    {"time_window": TimeWindow.from_only(NOON)},
    {"privacy_salt": bytes(31) + b"\x01"},
], ids=lambda c: next(iter(c)))
def test_any_change_changes_the_id(change: dict[str, object]) -> None:
    assert fixed_transaction(**change).id != fixed_transaction().id


def test_equal_content_gives_equal_ids_whatever_order_signers_were_given() -> None:
    both = (ALICE.owning_key, BOB.owning_key)
    one = fixed_transaction(commands=(Command(DummyContract.Move(), both),))
    other = fixed_transaction(commands=(Command(DummyContract.Move(), both[::-1]),))
    assert one == other
    assert one.id == other.id


def test_the_salt_makes_equal_content_differ() -> None:
    assert issue(ALICE, 1).id != issue(ALICE, 1).id
    assert issue(ALICE, 1, salt=SALT).id == issue(ALICE, 1, salt=SALT).id


def test_required_signers_are_command_signers_plus_the_notary_when_it_must_sign() -> None:
    assert fixed_transaction().required_signing_keys == {ALICE.owning_key, NOTARY.owning_key}
    issuance = fixed_transaction(inputs=(), time_window=None)
    assert issuance.required_signing_keys == {ALICE.owning_key}
    timed = fixed_transaction(inputs=())
    assert NOTARY.owning_key in timed.required_signing_keys


@pytest.mark.parametrize(("change", "message"), [
    ({"notary": None}, "needs a notary"),
    ({"inputs": (GENESIS, GENESIS)}, "spent twice"),
    ({"privacy_salt": b"salt"}, "32 random bytes"),
    ({"privacy_salt": bytes(32)}, "32 random bytes"),
    ({"outputs": (DummyState(BOB, 1),)}, "where a TransactionState belongs"),
    ({"notary": "Notary"}, "notary must be a Party"),
])
def test_structurally_invalid_transactions_are_refused(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fixed_transaction(**change)


# --------------------------------------------------------------------------- filtered views

NOTARY_VIEW = {"inputs", "notary", "time_window"}


def test_a_filtered_transaction_shows_what_the_notary_needs_and_verifies() -> None:
    wtx = fixed_transaction()
    view = wtx.filtered(NOTARY_VIEW)
    assert view.verify()
    assert view.id == wtx.id
    assert view.inputs == wtx.inputs
    assert view.notary == NOTARY
    assert view.time_window == WINDOW
    assert view.revealed_groups == NOTARY_VIEW
    with pytest.raises(LookupError, match="outputs group is not revealed"):
        _ = view.outputs


@pytest.mark.parametrize("include", [set(), set(GROUPS), {"commands"}, {"outputs"}])
def test_any_selection_of_groups_verifies(include: set[str]) -> None:
    view = fixed_transaction().filtered(include)
    assert view.verify()
    assert view.revealed_groups == include


def test_filtering_names_the_valid_groups() -> None:
    with pytest.raises(ValueError, match=r"unknown component group.*inputs, outputs"):
        fixed_transaction().filtered({"attachments"})


def _tamper_group(view_name: str, **changes: object) -> bool:
    view = fixed_transaction().filtered(NOTARY_VIEW)
    groups = tuple(dataclasses.replace(g, **changes) if g.name == view_name else g  # type: ignore[arg-type]
                   for g in view.revealed)
    return dataclasses.replace(view, revealed=groups).verify()


def test_a_tampered_filtered_transaction_does_not_verify() -> None:
    other_ref = StateRef(GENESIS.txhash, 5)
    assert not _tamper_group("inputs", components=(other_ref,))
    assert not _tamper_group("inputs", components=())
    assert not _tamper_group("inputs", nonces=(SecureHash.sha256(b"guess"),))
    assert not _tamper_group("notary", components=(OTHER_NOTARY,))
    assert not _tamper_group("time_window", components=(TimeWindow.from_only(NOON),))
    assert not _tamper_group("time_window", name="notary")


def test_a_filtered_transaction_with_forged_hashes_or_shape_does_not_verify() -> None:
    view = fixed_transaction().filtered(NOTARY_VIEW)
    hashes = list(view.group_hashes)
    hashes[1] = SecureHash.sha256(b"other outputs")
    assert not dataclasses.replace(view, group_hashes=tuple(hashes)).verify()
    assert not dataclasses.replace(view, group_hashes=view.group_hashes[:4]).verify()
    assert not dataclasses.replace(view, id=SecureHash.sha256(b"x")).verify()
    twice = view.revealed + view.revealed[:1]
    assert not dataclasses.replace(view, revealed=twice).verify()
    wrong_type = FilteredGroup("inputs", ("not a ref",), view.revealed[0].nonces)
    assert not dataclasses.replace(view, revealed=(wrong_type,)).verify()
    unencodable = FilteredGroup("inputs", (object(),), view.revealed[0].nonces)
    assert not dataclasses.replace(view, revealed=(unencodable,)).verify()


# --------------------------------------------------------------------------------- builder

def test_the_builder_takes_the_notary_of_its_first_input() -> None:
    source = issue(ALICE, 1)
    builder = TransactionBuilder().add_input_state(source.tx.out_ref(0))
    assert builder.notary == NOTARY
    other = issue(ALICE, 1, notary=OTHER_NOTARY)
    with pytest.raises(ValueError, match=r"notarised by .*Other Notary.* notary is .*Notary"):
        builder.add_input_state(other.tx.out_ref(0))
    with pytest.raises(ValueError, match="already an input"):
        builder.add_input_state(source.tx.out_ref(0))


def test_the_builder_refuses_outputs_it_cannot_notarise_or_hash() -> None:
    with pytest.raises(ValueError, match="an output needs a notary"):
        TransactionBuilder().add_output_state(DummyState(ALICE, 1), DummyContract)

    @dataclasses.dataclass(frozen=True)
    class Unmarked(DummyState):
        pass

    with pytest.raises(ValueError, match=r"Unmarked.* is not whitelisted"):
        TransactionBuilder(NOTARY).add_output_state(Unmarked(ALICE, 1), DummyContract)


def test_the_builder_names_contracts_by_class_or_registered_name() -> None:
    builder = TransactionBuilder(NOTARY)
    builder.add_output_state(DummyState(ALICE, 1), DummyContract)
    builder.add_output_state(DummyState(ALICE, 1), DUMMY)
    assert [s.contract for s in builder.outputs] == [DUMMY, DUMMY]

    class NotRegistered(DummyContract):
        pass

    with pytest.raises(TypeError, match=r"NotRegistered is not a registered contract.*@contract"):
        builder.add_output_state(DummyState(ALICE, 1), NotRegistered)


def test_the_builder_takes_commands_with_signers_or_whole() -> None:
    builder = TransactionBuilder(NOTARY)
    builder.add_command(DummyContract.Move(), BOB.owning_key, ALICE.owning_key)
    builder.add_command(Command(DummyContract.Issue(), (ALICE.owning_key,)))
    assert builder.commands[0].signers == tuple(sorted([ALICE.owning_key, BOB.owning_key]))
    with pytest.raises(TypeError, match="either a Command or"):
        builder.add_command(Command(DummyContract.Issue(), (ALICE.owning_key,)),
                            BOB.owning_key)  # type: ignore[call-overload]


def test_one_builder_always_makes_the_same_transaction() -> None:
    builder = TransactionBuilder(NOTARY).add_output_state(DummyState(ALICE, 1), DummyContract)
    builder.add_command(DummyContract.Issue(), ALICE.owning_key).set_time_window(WINDOW)
    assert builder.to_wire_transaction().id == builder.to_wire_transaction().id
    assert builder.to_wire_transaction().time_window == WINDOW


def test_a_time_window_without_a_notary_is_refused() -> None:
    builder = TransactionBuilder().set_time_window(WINDOW)
    with pytest.raises(ValueError, match="needs a notary"):
        builder.to_wire_transaction()
