"""Finance: amounts, cash and commercial paper on the ledger (DESIGN.md section 8).

:class:`Amount` counts whole minor units of one token and refuses to mix tokens. :class:`Cash`
is currency owed by an :class:`Issued` token's issuer, conserved per issuer, reference and
currency; :class:`CommercialPaper` is an issuer's promise to pay a face value at maturity,
redeemed against cash. The cash flows and the two-party trade build on these and on the coin
selection in :func:`gather_cash` / :func:`generate_cash_spend`.
"""

from finance._amount import Amount, dollars, euros, pounds, sum_of
from finance._cash import Cash
from finance._cash_flows import (
    CashExitFlow,
    CashIssueFlow,
    CashPaymentFlow,
    CashPaymentReceiverFlow,
)
from finance._commercial_paper import CommercialPaper
from finance._cp_flows import CommercialPaperIssueFlow
from finance._errors import InsufficientBalanceException, TokenMismatchError
from finance._selection import (
    gather_cash,
    generate_cash_exit,
    generate_cash_issue,
    generate_cash_spend,
)
from finance._tokens import CURRENCY_DECIMALS, Issued, PartyAndReference, currency_decimals
from finance._trade import (
    AssetMismatchException,
    SellerStarter,
    SellerTradeInfo,
    TwoPartyTradeFlow,
    UnacceptableIssuerException,
    UnacceptablePriceException,
)

__all__ = [
    "CURRENCY_DECIMALS",
    "Amount",
    "AssetMismatchException",
    "Cash",
    "CashExitFlow",
    "CashIssueFlow",
    "CashPaymentFlow",
    "CashPaymentReceiverFlow",
    "CommercialPaper",
    "CommercialPaperIssueFlow",
    "InsufficientBalanceException",
    "Issued",
    "PartyAndReference",
    "SellerStarter",
    "SellerTradeInfo",
    "TokenMismatchError",
    "TwoPartyTradeFlow",
    "UnacceptableIssuerException",
    "UnacceptablePriceException",
    "currency_decimals",
    "dollars",
    "euros",
    "gather_cash",
    "generate_cash_exit",
    "generate_cash_issue",
    "generate_cash_spend",
    "pounds",
    "sum_of",
]
