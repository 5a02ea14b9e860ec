"""Shared material for finance tests: issuing banks, issued dollars, and builders that sign
with every key the fixed test parties hold."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import cast

import pytest

from fibers import Party
from finance import Amount, Cash, CommercialPaper, Issued, PartyAndReference, dollars
from ledger import (
    ContractRejection,
    LedgerTransaction,
    SignedTransaction,
    StateAndRef,
    TransactionBuilder,
    public_key_bytes,
    sign,
)
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    BOB_KEY,
    NOON,
    NOTARY,
    NOTARY_KEY,
    OTHER_NOTARY,
    OTHER_NOTARY_KEY,
    Ledger,
    key_from_seed,
)

BANK_KEY, OTHER_BANK_KEY = key_from_seed(5), key_from_seed(6)
BANK = Party("Bank A", public_key_bytes(BANK_KEY))
OTHER_BANK = Party("Bank B", public_key_bytes(OTHER_BANK_KEY))
REF = b"\x01"
MATURITY = NOON + timedelta(days=30)

_KEYS = {party.owning_key: key for party, key in [
    (ALICE, ALICE_KEY), (BOB, BOB_KEY), (NOTARY, NOTARY_KEY), (OTHER_NOTARY, OTHER_NOTARY_KEY),
    (BANK, BANK_KEY), (OTHER_BANK, OTHER_BANK_KEY),
]}

CashRef = StateAndRef[Cash.State]


def usd(value: str | int, issuer: Party = BANK, ref: bytes = REF) -> Amount[Issued]:
    """``value`` dollars issued by ``issuer`` under ``ref``."""
    return dollars(value).issued_by(issuer, ref)


def signed(builder: TransactionBuilder, *, without: Iterable[Party] = ()) -> SignedTransaction:
    """The builder's transaction signed by every required key but those of ``without``."""
    wtx = builder.to_wire_transaction()
    skip = {party.owning_key for party in without}
    sigs = tuple(sign(_KEYS[key], wtx.id.bytes) for key in sorted(wtx.required_signing_keys)
                 if key not in skip)
    return SignedTransaction(wtx, sigs)


def issue_cash(ledger: Ledger, owner: Party, *amounts: Amount[Issued],
               notary: Party = NOTARY) -> list[CashRef]:
    """Record and return one cash state per amount, issued to ``owner`` (one Issue command
    signed by all the issuers involved)."""
    builder = TransactionBuilder(notary)
    for amount in amounts:
        builder.add_output_state(Cash.State(amount, owner), Cash)
    builder.add_command(Cash.Issue(), *{a.token.issuer.owning_key for a in amounts})
    stx = ledger.record(signed(builder))
    stx.verify(ledger.resolve)
    return [cast(CashRef, stx.tx.out_ref(i)) for i in range(len(amounts))]


def paper(owner: Party = ALICE, face_value: Amount[Issued] | None = None,
          issuer: Party = OTHER_BANK) -> CommercialPaper.State:
    """A 1,000.00 USD paper issued by ``issuer``, maturing at ``MATURITY``."""
    face = usd(1000) if face_value is None else face_value
    return CommercialPaper.State(PartyAndReference(issuer, b"cp-1"), owner, face, MATURITY)


def verified(builder: TransactionBuilder, ledger: Ledger) -> LedgerTransaction:
    """The builder's transaction, fully signed, verified against ``ledger``."""
    return signed(builder).verify(ledger.resolve)


def rejection(builder: TransactionBuilder, ledger: Ledger,
              without: Iterable[Party] = ()) -> str:
    """The reason the contracts give for refusing the builder's transaction (signatures of
    ``without`` are excused, as their keys may be absent from the commands too)."""
    stx = signed(builder, without=without)
    excused = {party.owning_key for party in without}
    with pytest.raises(ContractRejection) as info:
        stx.verify(ledger.resolve, except_keys=excused)
    return info.value.reason
