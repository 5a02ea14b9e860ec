"""Coin selection and the cash parts of transactions: largest states first, change back to the
spender, and InsufficientBalanceException naming what was needed and what there was."""

from __future__ import annotations

import pytest

from finance import (
    Amount,
    Cash,
    InsufficientBalanceException,
    dollars,
    euros,
    gather_cash,
    generate_cash_exit,
    generate_cash_issue,
    generate_cash_spend,
)
from ledger import TransactionBuilder
from tests.finance._helpers import BANK, OTHER_BANK, CashRef, issue_cash, signed, usd, verified
from tests.ledger._helpers import ALICE, BOB, NOTARY, OTHER_NOTARY, Ledger


def _wallet(ledger: Ledger, *values: int) -> list[CashRef]:
    return issue_cash(ledger, ALICE, *(usd(v) for v in values))


def _amounts(chosen: list[CashRef]) -> list[Amount[object]]:
    return [sar.state.data.amount for sar in chosen]  # type: ignore[misc]


def test_gathering_takes_the_largest_states_first_and_returns_the_change() -> None:
    wallet = _wallet(Ledger(), 1, 7, 3, 5)
    chosen, change = gather_cash(wallet, dollars(10))
    assert _amounts(chosen) == [usd(7), usd(5)]
    assert change == dollars(2)


def test_gathering_is_deterministic_whatever_the_order_given() -> None:
    wallet = _wallet(Ledger(), 5, 5, 5)
    first, _ = gather_cash(wallet, dollars(6))
    again, _ = gather_cash(list(reversed(wallet)), dollars(6))
    assert [sar.ref for sar in first] == [sar.ref for sar in again] == sorted(
        sar.ref for sar in wallet)[:2]


def test_an_issued_amount_is_paid_only_with_its_own_token() -> None:
    ledger = Ledger()
    wallet = issue_cash(ledger, ALICE, usd(8, issuer=OTHER_BANK), usd(4))
    chosen, change = gather_cash(wallet, usd(3))
    assert _amounts(chosen) == [usd(4)]
    assert change == usd(1)
    any_issuer, change_in_dollars = gather_cash(wallet, dollars(10))
    assert _amounts(any_issuer) == [usd(8, issuer=OTHER_BANK), usd(4)]
    assert change_in_dollars == dollars(2)


def test_paying_more_than_is_held_names_needed_and_available() -> None:
    ledger = Ledger()
    wallet = issue_cash(ledger, ALICE, usd(3), usd(4), usd(100, issuer=OTHER_BANK))
    with pytest.raises(InsufficientBalanceException) as info:
        gather_cash(wallet, usd(8))
    assert (info.value.needed, info.value.available) == (usd(8), usd(7))
    assert str(info.value) == (
        "insufficient balance: 8.00 USD issued by Bank A (ref 01) needed but only 7.00 USD "
        "issued by Bank A (ref 01) available to spend; issue or receive more cash, or pay less")
    with pytest.raises(InsufficientBalanceException, match=r"1\.00 EUR needed but only 0\.00 EUR"):
        gather_cash(wallet, euros(1))


def test_paying_zero_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot pay 0\.00 USD: a payment must be positive"):
        gather_cash(_wallet(Ledger(), 1), Amount.zero("USD"))


def test_a_spend_pays_each_issuer_and_returns_change_to_the_spender() -> None:
    ledger = Ledger()
    wallet = issue_cash(ledger, ALICE, usd(6, issuer=OTHER_BANK), usd(5))
    builder = TransactionBuilder(NOTARY)
    keys = generate_cash_spend(builder, wallet, dollars(8), BOB, ALICE)
    assert keys == [ALICE.owning_key]
    ltx = verified(builder, ledger)
    assert ltx.outputs_of_type(Cash.State) == [
        Cash.State(usd(6, issuer=OTHER_BANK), BOB), Cash.State(usd(2), BOB),
        Cash.State(usd(3), ALICE)]


def test_a_spend_signed_only_by_the_returned_keys_verifies() -> None:
    ledger = Ledger()
    mine = issue_cash(ledger, ALICE, usd(5))
    theirs = issue_cash(ledger, BOB, usd(5))
    builder = TransactionBuilder(NOTARY)
    keys = generate_cash_spend(builder, mine + theirs, dollars(10), BANK, ALICE)
    assert keys == sorted([ALICE.owning_key, BOB.owning_key])
    stx = signed(builder, without=[BANK])
    stx.verify(ledger.resolve)
    assert stx.tx.outputs[0].data == Cash.State(usd(10), BANK)
    assert len(stx.tx.outputs) == 1


def test_a_spend_uses_only_the_builders_notary_and_unspent_inputs() -> None:
    ledger = Ledger()
    elsewhere = issue_cash(ledger, ALICE, usd(50), notary=OTHER_NOTARY)
    here = issue_cash(ledger, ALICE, usd(2), usd(3))
    builder = TransactionBuilder(NOTARY).add_input_state(here[1])
    with pytest.raises(InsufficientBalanceException) as info:
        generate_cash_spend(builder, elsewhere + here, dollars(3), BOB, ALICE)
    assert info.value.available == dollars(2)
    assert len(builder.inputs) == 1


def test_a_spend_across_notaries_asks_for_a_notary() -> None:
    ledger = Ledger()
    wallet = issue_cash(ledger, ALICE, usd(5), notary=OTHER_NOTARY) + _wallet(ledger, 4)
    with pytest.raises(ValueError, match="notarised by Notary and Other Notary: a transaction "
                                         "spends one notary's states"):
        generate_cash_spend(TransactionBuilder(), wallet, dollars(9), BOB, ALICE)


def test_generated_issue_and_exit_verify() -> None:
    ledger = Ledger()
    builder = TransactionBuilder(NOTARY)
    assert generate_cash_issue(builder, usd(10), ALICE) == [BANK.owning_key]
    issued = ledger.record(signed(builder))
    issued.verify(ledger.resolve)
    wallet: list[CashRef] = [issued.tx.out_ref(0)]  # type: ignore[list-item]
    builder = TransactionBuilder(NOTARY)
    keys = generate_cash_exit(builder, wallet, usd(4), ALICE)
    assert keys == sorted([BANK.owning_key, ALICE.owning_key])
    ltx = verified(builder, ledger)
    assert ltx.outputs_of_type(Cash.State) == [Cash.State(usd(6), ALICE)]
    with pytest.raises(ValueError, match="an issue must be positive"):
        generate_cash_issue(TransactionBuilder(NOTARY), usd(0), ALICE)
