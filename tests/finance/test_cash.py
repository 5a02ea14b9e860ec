"""The Cash contract: issue, move and exit, conserved per token, with refusals that name the
broken rule and the group."""

from __future__ import annotations

import pytest

from finance import Amount, Cash, Issued
from ledger import TransactionBuilder
from tests.finance._helpers import (
    BANK,
    OTHER_BANK,
    REF,
    CashRef,
    issue_cash,
    rejection,
    signed,
    usd,
    verified,
)
from tests.ledger._helpers import (
    ALICE,
    BOB,
    DUMMY,
    NOTARY,
    DummyContract,
    DummyState,
    Ledger,
    issue,
)

USD_A = "USD issued by Bank A (ref 01)"


def _move(inputs: list[CashRef], *outputs: Cash.State, signers: tuple[bytes, ...] | None = None,
          ) -> TransactionBuilder:
    builder = TransactionBuilder(NOTARY)
    for sar in inputs:
        builder.add_input_state(sar)
    for state in outputs:
        builder.add_output_state(state, Cash)
    owners = {sar.state.data.owner.owning_key for sar in inputs}
    builder.add_command(Cash.Move(), *(owners if signers is None else signers))
    return builder


def _issue(*outputs: Cash.State, signer: bytes = BANK.owning_key) -> TransactionBuilder:
    builder = TransactionBuilder(NOTARY)
    for state in outputs:
        builder.add_output_state(state, Cash)
    return builder.add_command(Cash.Issue(), signer)


def _exit(inputs: list[CashRef], amount: Amount[Issued], *outputs: Cash.State,
          signers: tuple[bytes, ...] = (BANK.owning_key, ALICE.owning_key)) -> TransactionBuilder:
    builder = TransactionBuilder(NOTARY)
    for sar in inputs:
        builder.add_input_state(sar)
    for state in outputs:
        builder.add_output_state(state, Cash)
    return builder.add_command(Cash.Exit(amount), *signers)


def test_a_cash_state_is_owned_by_its_owner_alone() -> None:
    state = Cash.State(usd(10), ALICE)
    assert state.participants == [ALICE]
    assert state.with_new_owner(BOB) == (Cash.Move(), Cash.State(usd(10), BOB))
    assert str(state) == f"10.00 {USD_A} owned by Alice"
    with pytest.raises(ValueError, match="expected an Issued token"):
        Cash.State(Amount(1, "USD"), ALICE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a Party"):
        Cash.State(usd(1), "Alice")  # type: ignore[arg-type]


def test_the_issuer_issues_cash_to_an_owner() -> None:
    ledger = Ledger()
    ltx = verified(_issue(Cash.State(usd(10), ALICE), Cash.State(usd(5), BOB)), ledger)
    assert [s.amount for s in ltx.outputs_of_type(Cash.State)] == [usd(10), usd(5)]


def test_an_issue_must_be_signed_by_the_issuer() -> None:
    reason = rejection(_issue(Cash.State(usd(10), ALICE), signer=ALICE.owning_key), Ledger())
    assert reason == (f"Failed requirement: for {USD_A}, the issue of 10.00 USD must be signed "
                      "by the issuer Bank A")


def test_an_issue_must_create_cash() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _move([cash], Cash.State(usd(10), BOB))
    builder.add_command(Cash.Issue(), BANK.owning_key)
    assert rejection(builder, ledger) == ("Failed requirement: a Cash.Issue must create cash: no "
                                          "token's outputs exceed its inputs")


def test_a_move_pays_and_returns_the_change() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    ltx = verified(_move([cash], Cash.State(usd(6), BOB), Cash.State(usd(4), ALICE)), ledger)
    assert [(s.owner, s.amount) for s in ltx.outputs_of_type(Cash.State)] == [
        (BOB, usd(6)), (ALICE, usd(4))]


def test_a_move_that_loses_value_names_the_group_and_both_totals() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    reason = rejection(_move([cash], Cash.State(usd(9), BOB)), ledger)
    assert reason == (f"Failed requirement: for {USD_A}, inputs (10.00 USD) must equal outputs "
                      "(9.00 USD) in a move")


def test_a_move_that_creates_value_says_only_an_issue_may() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    reason = rejection(_move([cash], Cash.State(usd(11), BOB)), ledger)
    assert reason.endswith("inputs (10.00 USD) must equal outputs (11.00 USD) in a move; only a "
                           "Cash.Issue signed by the issuer creates cash")


def test_each_issuer_is_conserved_on_its_own() -> None:
    ledger = Ledger()
    a, b = issue_cash(ledger, ALICE, usd(10), usd(10, issuer=OTHER_BANK))
    # 20 in and 20 out overall, but Bank B's dollars became Bank A's.
    builder = _move([a, b], Cash.State(usd(15), BOB), Cash.State(usd(5, issuer=OTHER_BANK), BOB))
    assert rejection(builder, ledger) == (
        f"Failed requirement: for {USD_A}, inputs (10.00 USD) must equal outputs (15.00 USD) in "
        "a move; only a Cash.Issue signed by the issuer creates cash")
    fair = _move([a, b], Cash.State(usd(10), BOB), Cash.State(usd(10, issuer=OTHER_BANK), BOB))
    assert len(verified(fair, ledger).outputs) == 2


def test_a_reference_is_part_of_the_token() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    reason = rejection(_move([cash], Cash.State(usd(10, ref=b"\x02"), BOB)), ledger)
    assert reason.startswith(f"Failed requirement: for {USD_A}, inputs (10.00 USD) must equal "
                             "outputs (0.00 USD)")


def test_a_move_must_be_signed_by_every_input_owner() -> None:
    ledger = Ledger()
    [mine] = issue_cash(ledger, ALICE, usd(10))
    [theirs] = issue_cash(ledger, BOB, usd(5))
    builder = _move([mine, theirs], Cash.State(usd(15), BOB), signers=(BOB.owning_key,))
    assert rejection(builder, ledger) == (
        f"Failed requirement: for {USD_A}, the Cash.Move must be signed by every input owner, "
        "but not by Alice")


def test_moving_cash_needs_a_move_command() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = TransactionBuilder(NOTARY).add_input_state(cash)
    builder.add_output_state(Cash.State(usd(10), BOB), Cash)
    builder.add_command(DummyContract.Move(), ALICE.owning_key)
    assert rejection(builder, ledger).endswith("the Cash.Move must be signed by every input "
                                               "owner, but not by Alice")


def test_a_zero_value_output_is_refused() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _move([cash], Cash.State(usd(10), BOB), Cash.State(usd(0), ALICE))
    assert rejection(builder, ledger) == (
        f"Failed requirement: output 1 holds no {USD_A}: cash outputs must hold a positive "
        "amount")


def test_an_exit_signed_by_issuer_and_owner_takes_cash_off_the_ledger() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    ltx = verified(_exit([cash], usd(7), Cash.State(usd(3), ALICE)), ledger)
    assert ltx.outputs_of_type(Cash.State) == [Cash.State(usd(3), ALICE)]
    ledger2 = Ledger()
    [cash2] = issue_cash(ledger2, ALICE, usd(10))
    assert not verified(_exit([cash2], usd(10)), ledger2).outputs


@pytest.mark.parametrize(("signers", "missing"), [
    ((ALICE.owning_key,), "the exit must be signed by the issuer Bank A"),
    ((BANK.owning_key,), "the Cash.Exit must be signed by every input owner, but not by Alice"),
])
def test_an_exit_needs_the_issuer_and_the_owners(signers: tuple[bytes, ...], missing: str,
                                                 ) -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    reason = rejection(_exit([cash], usd(10), signers=signers), ledger)
    assert reason == f"Failed requirement: for {USD_A}, {missing}"


def test_an_exit_must_match_what_leaves() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    reason = rejection(_exit([cash], usd(5), Cash.State(usd(4), ALICE)), ledger)
    assert reason == (f"Failed requirement: for {USD_A}, inputs (10.00 USD) minus outputs "
                      "(4.00 USD) must equal the exit (5.00 USD)")


def test_an_exit_of_a_token_not_spent_is_refused() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _move([cash], Cash.State(usd(10), BOB))
    builder.add_command(Cash.Exit(usd(1, issuer=OTHER_BANK)), OTHER_BANK.owning_key)
    assert rejection(builder, ledger) == (
        "Failed requirement: the exit of 1.00 USD issued by Bank B (ref 01) consumes no cash of "
        "that token: exit only cash the transaction spends")


def test_two_exits_of_one_token_are_refused() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _exit([cash], usd(4), Cash.State(usd(2), ALICE))
    builder.add_command(Cash.Exit(usd(4)), BANK.owning_key, ALICE.owning_key)
    assert rejection(builder, ledger).endswith(f"one Cash.Exit per token, but {USD_A} has two")


def test_cash_states_must_be_governed_by_the_cash_contract() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _move([cash], Cash.State(usd(5), BOB))
    builder.add_output_state(Cash.State(usd(5), BOB), DUMMY)
    # The ledger refuses it before any contract runs: Cash.State belongs to Cash.
    assert rejection(builder, ledger) == (
        "Cash.State belongs to contract finance._cash:Cash and cannot be governed by "
        "tests.ledger._helpers:DummyContract")


def _forged_state(quantity: object) -> Cash.State:
    """A state as the wire decoder would build it from a peer's bytes: no constructor runs."""
    amount = object.__new__(Amount)
    for name, value in (("quantity", quantity), ("token", Issued(BANK, REF, "USD"))):
        object.__setattr__(amount, name, value)
    state = object.__new__(Cash.State)
    object.__setattr__(state, "amount", amount)
    object.__setattr__(state, "owner", BOB)
    return state


@pytest.mark.parametrize(("quantity", "problem"), [
    (-5, "cannot be negative, got -5"), (2.5, "must be an int"), (True, "must be an int"),
])
def test_a_forged_amount_cannot_create_value(quantity: object, problem: str) -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    # 10 in; 15 + (-5) out would conserve the total if negative amounts were accepted.
    builder = _move([cash], Cash.State(usd(15), BOB), _forged_state(quantity))
    reason = rejection(builder, ledger)
    assert reason.startswith("Failed requirement: output 1 is a malformed Cash.State: ")
    assert problem in reason


def test_verification_runs_on_a_transaction_received_from_a_peer() -> None:
    from fibers._wire import decode, encode

    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    stx = signed(_move([cash], Cash.State(usd(10), BOB)))
    received = decode(encode(stx))
    assert received == stx
    received.verify(ledger.resolve)


def test_cash_moves_beside_other_contracts_states() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    dummy = ledger.record(issue(BOB, 7))
    builder = _move([cash], Cash.State(usd(10), BOB))
    builder.add_input_state(dummy.tx.out_ref(0))
    builder.add_output_state(DummyState(ALICE, 7), DUMMY)
    builder.add_command(DummyContract.Move(), BOB.owning_key)
    assert len(verified(builder, ledger).inputs) == 2


def test_an_issue_may_top_up_cash_its_owner_moves_in_the_same_transaction() -> None:
    ledger = Ledger()
    [cash] = issue_cash(ledger, ALICE, usd(10))
    builder = _move([cash], Cash.State(usd(15), BOB))
    builder.add_command(Cash.Issue(), BANK.owning_key)
    assert verified(builder, ledger).outputs_of_type(Cash.State) == [Cash.State(usd(15), BOB)]
    unsigned = _move([cash], Cash.State(usd(15), BOB), signers=(BOB.owning_key,))
    unsigned.add_command(Cash.Issue(), BANK.owning_key)
    assert rejection(unsigned, ledger) == (
        f"Failed requirement: for {USD_A}, the Cash.Issue or Cash.Move must be signed by every "
        "input owner, but not by Alice")


def test_cash_states_cannot_be_minted_under_another_contract() -> None:
    """A Cash.State belongs to Cash: a permissive contract cannot create one."""
    from ledger import Contract, ContractRejection, LedgerTransaction, TransactionBuilder, contract

    @contract
    class AnythingGoes(Contract):
        def verify(self, ltx: LedgerTransaction) -> None:
            return None

    from finance import Amount, Cash
    from tests.ledger._helpers import ALICE, NOTARY, key_of

    forged = Cash.State(Amount(1_000, "USD").issued_by(ALICE, b"\x01"), ALICE)
    builder = TransactionBuilder(NOTARY).add_output_state(forged, AnythingGoes)
    builder.add_command(Cash.Issue(), ALICE.owning_key)
    stx = builder.sign_with(key_of(ALICE))
    ltx = stx.to_ledger_transaction(lambda ref: None)
    with pytest.raises(ContractRejection, match=r"belongs to contract .*Cash"):
        ltx.verify()
