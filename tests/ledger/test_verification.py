"""Resolution and contract verification: what contracts see and how refusals read."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import FlowException, Party
from ledger import (
    CommandData,
    Contract,
    ContractRejection,
    ContractState,
    InvalidNotary,
    LedgerTransaction,
    MalformedTransactionException,
    SecureHash,
    SignedTransaction,
    StateAndRef,
    StateRef,
    TransactionBuilder,
    TransactionResolutionException,
    TransactionState,
    TransactionVerificationException,
    UnknownContract,
    contract,
    contract_class,
    contract_name,
    sign,
)
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    DUMMY,
    NOTARY,
    NOTARY_KEY,
    OTHER_NOTARY,
    DummyContract,
    DummyState,
    Ledger,
    issue,
    move,
)

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=100)


def _notarised(builder: TransactionBuilder) -> SignedTransaction:
    stx = builder.sign_with(ALICE_KEY)
    return stx.with_additional_signature(sign(NOTARY_KEY, stx.id.bytes))


def test_an_issue_then_a_move_verify() -> None:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 3, 4))
    assert source.verify(ledger.resolve).outputs_of_type(DummyState)[1].magic == 4
    stx = _notarised(move([source.tx.out_ref(0), source.tx.out_ref(1)], BOB))
    ltx = stx.verify(ledger.resolve)
    assert ltx.inputs_of_type(DummyState) == [DummyState(ALICE, 3), DummyState(ALICE, 4)]
    assert ltx.outputs_of_type(DummyState) == [DummyState(BOB, 7)]
    assert [type(c.value) for c in ltx.commands_of_type(CommandData)] == [DummyContract.Move]
    assert ltx.out_ref(0) == StateAndRef(ltx.outputs[0], StateRef(stx.id, 0))
    assert ltx.inputs[0].ref == source.tx.out_ref(0).ref


def test_a_contract_rejection_names_the_contract_and_the_broken_rule() -> None:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 3))
    builder = move([source.tx.out_ref(0)], BOB)
    builder.add_output_state(DummyState(BOB, 1), DummyContract)  # one more magic than spent
    stx = _notarised(builder)
    with pytest.raises(ContractRejection) as caught:
        stx.verify(ledger.resolve)
    assert caught.value.contract == DUMMY
    assert caught.value.reason == "Failed requirement: a Move conserves magic"
    assert caught.value.tx_id == stx.id
    assert str(caught.value) == (f"contract {DUMMY} rejected transaction {stx.id}: "
                                 "Failed requirement: a Move conserves magic")


def test_a_rejection_crosses_to_counterparties_as_a_flow_exception() -> None:
    assert issubclass(TransactionVerificationException, FlowException)


def test_an_unexpected_error_in_verify_is_a_rejection_naming_its_type() -> None:
    @contract
    class Broken(Contract):
        def verify(self, ltx: LedgerTransaction) -> None:
            raise KeyError("oops")

    builder = TransactionBuilder(NOTARY).add_output_state(DummyState(ALICE, 1), Broken)
    ltx = builder.sign_with().to_ledger_transaction(Ledger().resolve)
    with pytest.raises(ContractRejection, match=r"Broken rejected .*: KeyError: 'oops'") as caught:
        ltx.verify()
    assert isinstance(caught.value.__cause__, KeyError)


def test_every_distinct_contract_runs_once() -> None:
    seen: list[str] = []

    @contract
    class Watching(Contract):
        def verify(self, ltx: LedgerTransaction) -> None:
            seen.append("watching")

    builder = TransactionBuilder(NOTARY).add_command(DummyContract.Issue(), ALICE.owning_key)
    for _ in range(2):
        builder.add_output_state(DummyState(ALICE, 1), Watching)
        builder.add_output_state(DummyState(ALICE, 1), DummyContract)
    builder.sign_with(ALICE_KEY).verify(Ledger().resolve)
    assert seen == ["watching"]


def test_an_unknown_contract_is_a_verification_error_with_the_fix() -> None:
    builder = TransactionBuilder(NOTARY)
    builder.add_output_state(DummyState(ALICE, 1), "nowhere:Nothing")
    with pytest.raises(UnknownContract, match=r"'nowhere:Nothing'.*decorate the class with @"):
        builder.sign_with().to_ledger_transaction(Ledger().resolve).verify()


def test_contracts_register_by_module_and_qualname() -> None:
    assert contract_name(DummyContract) == DUMMY
    assert contract_class(DUMMY) is DummyContract
    assert contract_class("tests.ledger._helpers:Missing") is None
    with pytest.raises(TypeError, match=r"subclasses of ledger.Contract"):
        contract(DummyState)  # type: ignore[type-var]


def test_a_missing_input_is_a_resolution_error_naming_it() -> None:
    source = issue(ALICE, 3)  # never recorded
    stx = _notarised(move([source.tx.out_ref(0)], BOB))
    with pytest.raises(TransactionResolutionException) as caught:
        stx.to_ledger_transaction(Ledger().resolve)
    assert caught.value.missing == source.tx.out_ref(0).ref
    assert f"spends {source.id}(0)" in str(caught.value)
    assert "ResolveTransactionsFlow" in str(caught.value)


def test_a_resolver_may_raise_lookup_error_for_a_missing_input() -> None:
    def resolve(ref: StateRef) -> TransactionState[ContractState]:
        raise KeyError(ref)

    stx = _notarised(move([issue(ALICE, 3).tx.out_ref(0)], BOB))
    with pytest.raises(TransactionResolutionException):
        stx.to_ledger_transaction(resolve)


def test_an_output_with_another_notary_is_an_invalid_notary() -> None:
    builder = TransactionBuilder(NOTARY).add_command(DummyContract.Issue(), ALICE.owning_key)
    builder.add_output_state(DummyState(ALICE, 1), DummyContract, notary=OTHER_NOTARY)
    with pytest.raises(InvalidNotary, match=r"output 0 \(DummyState\) names notary Other Notary"
                                            r" .* the transaction's notary is Notary"):
        builder.sign_with(ALICE_KEY).verify(Ledger().resolve)


def test_an_input_with_another_notary_is_an_invalid_notary() -> None:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 3, notary=OTHER_NOTARY))
    stx = _notarised(move([source.tx.out_ref(0)], BOB))
    tx = dataclasses.replace(stx.tx, notary=NOTARY)  # a peer could send this
    ltx = tx.to_ledger_transaction(ledger.resolve)
    with pytest.raises(InvalidNotary, match=f"input {source.id}"):
        ltx.verify()


def _decoded_ref(index: int) -> StateRef:
    ref = object.__new__(StateRef)
    object.__setattr__(ref, "txhash", SecureHash.sha256(b"x"))
    object.__setattr__(ref, "index", index)
    return ref


def _as_received(stx: SignedTransaction, **fields: object) -> SignedTransaction:
    """``stx`` with ``fields`` changed the way the wire decoder builds it: no constructor, and
    none of what the original keeps (its id, checks and encoding)."""
    hostile = object.__new__(type(stx.tx))
    own = {field.name: getattr(stx.tx, field.name) for field in dataclasses.fields(stx.tx)}
    for name, value in {**own, **fields}.items():
        object.__setattr__(hostile, name, value)
    return SignedTransaction(hostile, stx.sigs)


@pytest.mark.parametrize(("fields", "message"), [
    ({"notary": None}, "needs a notary"),
    ({"inputs": [StateRef(SecureHash.sha256(b"x"), 0)]}, "inputs must be a tuple"),
    ({"inputs": (_decoded_ref(-1),)}, "is not a valid StateRef"),
])
def test_a_malformed_transaction_from_a_peer_is_a_verification_error(
    fields: dict[str, object], message: str
) -> None:
    stx = issue(ALICE, 1)
    fields.setdefault("inputs", (StateRef(SecureHash.sha256(b"x"), 0),))
    received = _as_received(stx, **fields)
    with pytest.raises(MalformedTransactionException, match=message):
        received.verify_signatures()
    with pytest.raises(MalformedTransactionException, match=message):
        received.to_ledger_transaction(Ledger().resolve)


_ANY_PARTY = st.sampled_from([ALICE, BOB])


@FAST
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=4),
       st.lists(st.integers(-5, 1000), min_size=1, max_size=4), _ANY_PARTY)
def test_a_move_verifies_exactly_when_it_conserves_non_negative_magic(
    spent: list[int], created: list[int], owner: Party
) -> None:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, *spent))
    builder = TransactionBuilder()
    for i in range(len(spent)):
        builder.add_input_state(source.tx.out_ref(i))
    for magic in created:
        builder.add_output_state(DummyState(owner, magic), DummyContract)
    builder.add_command(DummyContract.Move(), ALICE.owning_key)
    stx = _notarised(builder)
    if sum(spent) == sum(created) and min(created) >= 0:
        stx.verify(ledger.resolve)
    else:
        with pytest.raises(ContractRejection, match=r"conserves magic|non-negative"):
            stx.verify(ledger.resolve)
