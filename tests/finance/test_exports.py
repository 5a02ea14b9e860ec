"""The public surface of `finance`'s data model (the flows add their names beside these)."""

import finance

DATA_MODEL_NAMES = [
    # amounts and tokens
    "Amount", "Issued", "PartyAndReference", "CURRENCY_DECIMALS", "currency_decimals",
    "sum_of", "dollars", "euros", "pounds",
    # contracts
    "Cash", "CommercialPaper",
    # cash transactions
    "gather_cash", "generate_cash_spend", "generate_cash_issue", "generate_cash_exit",
    # errors
    "TokenMismatchError", "InsufficientBalanceException",
]


def test_finance_exports_the_data_model_names() -> None:
    assert set(DATA_MODEL_NAMES) <= set(finance.__all__)
    assert len(set(finance.__all__)) == len(finance.__all__)
    for name in finance.__all__:
        assert getattr(finance, name) is not None


def test_the_exported_exception_hierarchy_matches_its_use() -> None:
    from fibers import FlowException

    assert issubclass(finance.TokenMismatchError, ValueError)
    assert issubclass(finance.InsufficientBalanceException, FlowException)
    assert issubclass(finance.InsufficientBalanceException, ValueError)
