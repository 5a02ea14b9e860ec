"""Coin selection and the cash parts of transactions, as pure functions over a builder.

The cash flows (issue, pay, exit) and the buyer's side of a trade put their cash into a
:class:`~ledger.TransactionBuilder` with these; which states are spendable (unconsumed, owned by
this node, not soft-locked by another flow) is the caller's business.

Selection is deterministic, **largest first**: the eligible states are taken in order of
decreasing quantity (ties by state reference) until they cover the amount. That spends the
fewest states, which keeps transactions small and fast to verify, at the price of leaving
small states ("dust") for later payments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from fibers import Party
from finance._amount import Amount
from finance._cash import Cash
from finance._errors import InsufficientBalanceException
from finance._tokens import Issued
from ledger import StateAndRef, TransactionBuilder

__all__ = ["gather_cash", "generate_cash_exit", "generate_cash_issue", "generate_cash_spend"]

_Tok = TypeVar("_Tok", str, Issued)
CashRef = StateAndRef[Cash.State]


def gather_cash(
    states: Sequence[CashRef], amount: Amount[_Tok]
) -> tuple[list[CashRef], Amount[_Tok]]:
    """The states to spend to pay ``amount``, largest first, and the change they leave.

    ``amount`` in a currency code (``"USD"``) may be paid with that currency from any issuer;
    ``amount`` in an ``Issued`` token only with exactly that token. The change is in
    ``amount``'s token. Raises ``ValueError`` for a zero amount and
    ``InsufficientBalanceException`` naming the amount needed and the total of the eligible
    states when they do not cover it.
    """
    if not isinstance(amount.token, str | Issued):
        raise TypeError(f"cannot pay in {amount.token!r}: pay a currency code or Issued token")
    if amount.quantity == 0:
        raise ValueError(f"cannot pay {amount}: a payment must be positive")
    eligible = sorted((sar for sar in states if _pays(sar.state.data, amount.token)),
                      key=lambda sar: (-sar.state.data.amount.quantity, sar.ref))
    chosen: list[CashRef] = []
    gathered = 0
    for sar in eligible:
        if gathered >= amount.quantity:
            break
        chosen.append(sar)
        gathered += sar.state.data.amount.quantity
    if gathered < amount.quantity:
        raise InsufficientBalanceException(amount, Amount(gathered, amount.token))
    return chosen, Amount(gathered - amount.quantity, amount.token)


def _pays(state: Cash.State, token: str | Issued) -> bool:
    held = state.amount.token
    return held == token if isinstance(token, Issued) else held.product == token


def generate_cash_spend(
    builder: TransactionBuilder, states: Sequence[CashRef], amount: Amount[_Tok],
    to: Party, change_owner: Party,
) -> list[bytes]:
    """Add to ``builder`` a payment of ``amount`` to ``to`` out of ``states``; return the keys
    that must sign it (the owners of the inputs, sorted).

    Adds the states :func:`gather_cash` chooses as inputs (only those of the builder's notary
    when it has one, and none it already spends), then per issued token one output to ``to``
    and one of change to ``change_owner`` where there is any, and a ``Cash.Move`` signed by the
    input owners. Raises as :func:`gather_cash` does, and ``ValueError`` if the chosen states
    are notarised by different notaries (give the builder a notary to choose one).
    """
    chosen = _gather_for(builder, states, amount)
    remaining = amount.quantity
    for token, total in _totals(chosen).items():
        paid = min(total, remaining)
        remaining -= paid
        if paid:
            builder.add_output_state(Cash.State(Amount(paid, token), to), Cash)
        if total > paid:
            builder.add_output_state(Cash.State(Amount(total - paid, token), change_owner), Cash)
    owners = _owner_keys(chosen)
    builder.add_command(Cash.Move(), *owners)
    return owners


def generate_cash_issue(
    builder: TransactionBuilder, amount: Amount[Issued], owner: Party
) -> list[bytes]:
    """Add to ``builder`` an issue of ``amount`` owned by ``owner``; return the key that must
    sign it (the issuer's). The builder needs a notary. Raises ``ValueError`` for a zero
    amount."""
    if amount.quantity == 0:
        raise ValueError(f"cannot issue {amount}: an issue must be positive")
    builder.add_output_state(Cash.State(amount, owner), Cash)
    issuer = amount.token.issuer.owning_key
    builder.add_command(Cash.Issue(), issuer)
    return [issuer]


def generate_cash_exit(
    builder: TransactionBuilder, states: Sequence[CashRef], amount: Amount[Issued],
    change_owner: Party,
) -> list[bytes]:
    """Add to ``builder`` the exit of ``amount`` (cash of exactly its token) out of ``states``,
    with any change to ``change_owner``; return the keys that must sign it (the issuer and the
    input owners, sorted). Raises as :func:`generate_cash_spend` does."""
    chosen = _gather_for(builder, states, amount)
    change = _totals(chosen)[amount.token] - amount.quantity
    if change:
        builder.add_output_state(Cash.State(Amount(change, amount.token), change_owner), Cash)
    signers = sorted({amount.token.issuer.owning_key, *_owner_keys(chosen)})
    builder.add_command(Cash.Exit(amount), *signers)
    return signers


def _gather_for(
    builder: TransactionBuilder, states: Sequence[CashRef], amount: Amount[_Tok]
) -> list[CashRef]:
    spent = {sar.ref for sar in builder.inputs}
    candidates = [sar for sar in states if sar.ref not in spent
                  and (builder.notary is None or sar.state.notary == builder.notary)]
    chosen, _ = gather_cash(candidates, amount)
    notaries = {sar.state.notary for sar in chosen}
    if len(notaries) > 1:
        names = " and ".join(sorted(notary.name for notary in notaries))
        raise ValueError(f"the cash chosen to pay {amount} is notarised by {names}: a "
                         "transaction spends one notary's states, so give the "
                         "TransactionBuilder a notary")
    for sar in chosen:
        builder.add_input_state(sar)
    return chosen


def _totals(chosen: Sequence[CashRef]) -> dict[Issued, int]:
    """Units of each token in ``chosen``, in order of first appearance."""
    totals: dict[Issued, int] = {}
    for sar in chosen:
        token = sar.state.data.amount.token
        totals[token] = totals.get(token, 0) + sar.state.data.amount.quantity
    return totals


def _owner_keys(chosen: Sequence[CashRef]) -> list[bytes]:
    return sorted({sar.state.data.owner.owning_key for sar in chosen})
