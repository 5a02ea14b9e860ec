"""The trade performs exactly the Ed25519 operations its floor counts, and walks each
transaction object once (counts, never timings)."""

from __future__ import annotations

from benchmarks.trade import NEEDED
from benchmarks.trade_profile import counts, profile


def test_a_trade_verifies_each_signature_once_per_node_and_hashes_each_copy_once() -> None:
    found = dict(counts(profile(trades=2, concurrency=2), trades=2))
    assert (found["Ed25519 signs"], found["Ed25519 verifies"]) == NEEDED
    # The paper's issue (buyer, notary), the cash issue (seller, notary), the proposal (built
    # by the buyer, received by the seller) and the final transaction (notary, buyer): one id
    # per transaction object, each from the one walk that also serves its sending and storing.
    assert found["transaction ids computed"] == 8
    assert found["wire decodes"] == found["messages sent"] == 15
