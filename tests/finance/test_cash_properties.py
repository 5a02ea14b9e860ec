"""Property: random sequences of cash issues, moves and exits never create or destroy value per
token (issuer, reference, currency), and any transaction that does not conserve is rejected."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import cast

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fibers import Party
from finance import Amount, Cash, Issued
from ledger import ContractRejection, TransactionBuilder
from tests.finance._helpers import BANK, OTHER_BANK, CashRef, signed
from tests.ledger._helpers import ALICE, BOB, NOTARY, Ledger

tokens = st.builds(Issued, st.sampled_from([BANK, OTHER_BANK]),
                   st.sampled_from([b"\x01", b"\x02"]), st.sampled_from(["USD", "EUR"]))
owners = st.sampled_from([ALICE, BOB])


def _parts(data: st.DataObject, total: int) -> list[int]:
    """``total`` split into 1-3 positive parts."""
    cuts = data.draw(st.lists(st.integers(1, total - 1), max_size=2, unique=True)) if total > 1 \
        else []
    bounds = [0, *sorted(cuts), total]
    return [b - a for a, b in itertools.pairwise(bounds)]


@dataclass
class _Output:
    token: Issued
    quantity: int
    owner: Party


class CashLedger(RuleBasedStateMachine):
    """A ledger of cash transactions, and the value each token should hold on it."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.unspent: list[CashRef] = []
        # Invariant: per token, value issued minus value exited by accepted transactions.
        self.expected: Counter[Issued] = Counter()

    def _commit(self, builder: TransactionBuilder, spent: list[CashRef]) -> None:
        stx = self.ledger.record(signed(builder))
        stx.verify(self.ledger.resolve)
        refs = {sar.ref for sar in spent}
        self.unspent = [sar for sar in self.unspent if sar.ref not in refs]
        self.unspent += [cast(CashRef, stx.tx.out_ref(i)) for i in range(len(stx.tx.outputs))]

    def _rejected(self, builder: TransactionBuilder, rule_text: str) -> None:
        with pytest.raises(ContractRejection, match=rule_text):
            signed(builder).verify(self.ledger.resolve)

    @initialize(token=tokens, owner=owners, quantities=st.lists(st.integers(1, 10**9),
                                                                min_size=1, max_size=3))
    def first_issue(self, token: Issued, owner: Party, quantities: list[int]) -> None:
        self.issue(token, owner, quantities)

    @rule(token=tokens, owner=owners, quantities=st.lists(st.integers(1, 10**9), min_size=1,
                                                          max_size=3))
    def issue(self, token: Issued, owner: Party, quantities: list[int]) -> None:
        builder = TransactionBuilder(NOTARY)
        for quantity in quantities:
            builder.add_output_state(Cash.State(Amount(quantity, token), owner), Cash)
        builder.add_command(Cash.Issue(), token.issuer.owning_key)
        self._commit(builder, [])
        self.expected[token] += sum(quantities)

    @precondition(lambda self: self.unspent)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        spent = data.draw(st.lists(st.sampled_from(self.unspent), min_size=1, max_size=4,
                                   unique_by=lambda sar: sar.ref))
        totals: Counter[Issued] = Counter()
        for sar in spent:
            totals[sar.state.data.amount.token] += sar.state.data.amount.quantity
        outputs = [_Output(token, part, data.draw(owners))
                   for token, total in totals.items() for part in _parts(data, total)]
        tamper = data.draw(st.sampled_from(["none", "value", "between tokens"]))
        first = outputs[0]
        if tamper == "value":
            delta = data.draw(st.integers(1, 5))
            up = data.draw(st.booleans()) or first.quantity <= delta
            first.quantity += delta if up else -delta
        elif tamper == "between tokens" and len(totals) > 1:
            # The grand total is unchanged; only the split between tokens is wrong.
            last = next(o for o in reversed(outputs) if o.token != first.token)
            first.quantity += last.quantity
            outputs.remove(last)
        else:
            tamper = "none"
        builder = TransactionBuilder(NOTARY)
        for sar in spent:
            builder.add_input_state(sar)
        for out in outputs:
            builder.add_output_state(Cash.State(Amount(out.quantity, out.token), out.owner), Cash)
        builder.add_command(Cash.Move(), *{sar.state.data.owner.owning_key for sar in spent})
        event(f"move of {len(totals)} token(s), tampered: {tamper}")
        if tamper == "none":
            self._commit(builder, spent)
        else:
            self._rejected(builder, r"inputs \(.*\) must equal outputs \(.*\) in a move")

    @precondition(lambda self: self.unspent)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from([sar.state.data.amount.token for sar in self.unspent]))
        mine = [sar for sar in self.unspent if sar.state.data.amount.token == token]
        spent = data.draw(st.lists(st.sampled_from(mine), min_size=1, unique_by=lambda s: s.ref))
        total = sum(sar.state.data.amount.quantity for sar in spent)
        exited = data.draw(st.integers(1, total))
        claimed = exited + data.draw(st.sampled_from([0, 0, 1, -1, 7]))
        builder = TransactionBuilder(NOTARY)
        for sar in spent:
            builder.add_input_state(sar)
        if total > exited:
            builder.add_output_state(Cash.State(Amount(total - exited, token), data.draw(owners)),
                                     Cash)
        owner_keys = {sar.state.data.owner.owning_key for sar in spent}
        builder.add_command(Cash.Exit(Amount(max(claimed, 1), token)), token.issuer.owning_key,
                            *owner_keys)
        event(f"exit, tampered: {max(claimed, 1) != exited}")
        if max(claimed, 1) == exited:
            self._commit(builder, spent)
            self.expected[token] -= exited
        else:
            self._rejected(builder, r"minus outputs \(.*\) must equal the exit")

    @invariant()
    def value_is_conserved_per_token(self) -> None:
        held: Counter[Issued] = Counter()
        for sar in self.unspent:
            held[sar.state.data.amount.token] += sar.state.data.amount.quantity
        assert +held == +self.expected


TestCashLedger = CashLedger.TestCase
TestCashLedger.settings = settings(derandomize=True, database=None, deadline=None,
                                   max_examples=80, stateful_step_count=12)
