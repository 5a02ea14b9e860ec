"""``CommercialPaperIssueFlow``: a node issues itself commercial paper it promises to pay."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from fibers import Party, startable_by_rpc
from finance._amount import Amount
from finance._cash_flows import _FinalisingFlow, checked_reference, new_builder, positive_amount
from finance._commercial_paper import CommercialPaper
from finance._tokens import Issued, PartyAndReference
from ledger import TimeWindow, TransactionBuilder

__all__ = ["CommercialPaperIssueFlow"]

ISSUE_WINDOW: Final = timedelta(minutes=5)
"""How long the notary has to sign an issue (never past the paper's maturity)."""


@startable_by_rpc
class CommercialPaperIssueFlow(_FinalisingFlow):
    """Issue commercial paper owned by this node, paying ``face_value`` at ``maturity``
    (timezone-aware), under ``notary``; return the finalised (notarised) transaction.

    A currency ``face_value`` (``Amount.parse("1000.00 USD")``) is payable in this node's own
    cash under ``issuer_ref``; an ``Issued`` one names the cash it is payable in. The paper's
    issuance is this node and ``issuer_ref``. The contract needs the issue to happen before
    maturity, so the transaction carries a time window ending at the earlier of maturity and
    ``now() + ISSUE_WINDOW``. The constructor raises ``ValueError``/``TypeError`` for a zero or
    malformed face value, a naive maturity or a malformed reference; ``call`` raises
    ``ValueError`` if the paper has already matured.
    """

    def __init__(
        self, face_value: Amount[Any], maturity: datetime, notary: Party, *,
        issuer_ref: bytes = b"\x01",
    ) -> None:
        super().__init__()
        self.face_value = positive_amount(face_value, "issue commercial paper of")
        if not isinstance(maturity, datetime) or maturity.utcoffset() is None:
            raise ValueError(f"maturity must be a timezone-aware datetime, got {maturity!r:.60}:"
                             " use e.g. datetime(2030, 1, 1, tzinfo=datetime.UTC)")
        self.maturity = maturity
        self.notary = notary
        self.issuer_ref = checked_reference(issuer_ref)

    def _generate(self) -> TransactionBuilder:
        me = self.our_identity
        now = self.now()
        if self.maturity <= now:
            raise ValueError(f"cannot issue commercial paper maturing at "
                             f"{self.maturity.isoformat()}: it is {now.isoformat()} already")
        face = self.face_value
        if not isinstance(face.token, Issued):
            face = face.issued_by(me, self.issuer_ref)
        paper = CommercialPaper.State(PartyAndReference(me, self.issuer_ref), me, face,
                                      self.maturity)
        builder = new_builder(self, self.notary)
        builder.add_output_state(paper, CommercialPaper)
        builder.add_command(CommercialPaper.Issue(), me.owning_key)
        builder.set_time_window(TimeWindow.until_only(min(self.maturity, now + ISSUE_WINDOW)))
        return builder
