"""Two-party trades per second end to end, beside the Ed25519 floor measured in the same run.

A trade is ``SellerStarter`` on the seller with ``TwoPartyTradeFlow.Buyer`` answering on the
buyer, notarised by a validating notary: offer, resolution of the paper's history, the buyer's
signed proposal, resolution of the buyer's cash history, the seller's checks and signature,
notarisation, recording and broadcast. Three durable nodes in one process
(``ledger.testing.MockNetwork`` with LMDB storage, fsync off and on), the in-memory transport
delivering each node's queued frames in one batch. Issuance (one cash state and one paper per
trade) is done beforehand, outside the timing.

The crypto floor: the Ed25519 signatures and verifications one trade performs, counted by
instrumenting ``ledger``'s sign and verify during a warm-up trade, times their cost measured
here with ``cryptography`` directly: what a trade would cost if nothing but its cryptography
took any time. Beside it, the floor of what a trade *needs* when each party checks each
signature it relies on once: 3 signatures (buyer, seller, notary) and 12 verifications (the
buyer: the paper's issue by its issuer and the notary, the final transaction's seller and
notary signatures; the seller: the buyer's proposal, the buyer's cash issue, the notary's
signature; the validating notary: buyer and seller, then the paper's issue (2) and the cash
issue (1) it resolves). The difference is verification the ledger flows repeat.

A row without storage (``durable=False``) shows what the engine and ledger cost before any
checkpointing; a row with the audit snapshot policy (``snapshot_locals="every_step"``: every
step record also holds the flows' locals) beside the default (``"on_demand"``) shows what
pickling locals at every step costs the trade flows, which keep their transactions in locals.

Run: ``python -m benchmarks.trade [--trades N] [--concurrency C ...]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

import ledger._crypto
import ledger._keys
from fibers import FlowLogic
from fibers._node import Node
from fibers.storage import SnapshotLocals
from finance import (
    Amount,
    CashIssueFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    SellerStarter,
    TwoPartyTradeFlow,
)
from ledger.testing import MockNetwork

FACE_VALUE = Amount.parse("1000.00 USD")
PRICE = Amount.parse("900.00 USD")
NEEDED = (3, 12)  # (signs, verifies) one trade needs: see the module docstring


@dataclass(frozen=True)
class Figure:
    name: str
    trades: int
    seconds: float
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads) over the same trades

    @property
    def per_second(self) -> float:
        return self.trades / self.seconds


@dataclass(frozen=True)
class CryptoCounts:
    signs: int
    verifies: int


class Market:
    """A notary, a seller with ``trades`` papers and a buyer with ``trades`` cash states."""

    def __init__(self, base: Path, trades: int, *, sync: bool, durable: bool = True,
                 snapshot_locals: SnapshotLocals = "on_demand") -> None:
        self.network = MockNetwork(base, record_transcript=False, strict_suspendable=False,
                                   sync=sync, durable=durable, snapshot_locals=snapshot_locals)
        self.network.create_notary_node("Notary")
        self.seller = self.network.create_node("Seller")
        self.buyer = self.network.create_node("Buyer")
        notary = self.network.notary
        maturity = self.network.clock.now() + timedelta(days=30)
        self._run_all(self.buyer, [CashIssueFlow(FACE_VALUE, i.to_bytes(4, "big"), notary)
                                   for i in range(trades)])
        self._run_all(self.seller, [CommercialPaperIssueFlow(FACE_VALUE, maturity, notary)
                                    for _ in range(trades)])
        self.buyer.register_initiated_flow(
            SellerStarter,
            lambda party: TwoPartyTradeFlow.Buyer(party, notary, PRICE, CommercialPaper.State))
        self.papers = self.seller.services.vault.query(CommercialPaper.State)

    def pump(self) -> None:
        while self.network.deliver_all():
            pass

    def _run_all(self, node: Node, flows: list[FlowLogic[Any]]) -> None:
        # One start_flow each, not Node.start_flows: the handles start_flows returns never
        # complete for flows that finish within it (it asks for their result futures after
        # running them, and a result future made after the flow settled stays pending).
        handles = [node.start_flow(flow) for flow in flows]
        self.pump()
        for handle in handles:
            handle.result.result(timeout=0)

    def trade(self, count: int, concurrency: int) -> tuple[float, float]:
        """Sell ``count`` papers, ``concurrency`` trades at a time; the seconds it took, and
        the CPU seconds this process spent meanwhile."""
        papers, self.papers = self.papers[:count], self.papers[count:]
        buyer = self.buyer.party
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(papers), concurrency):
            batch = papers[first:first + concurrency]
            self._run_all(self.seller, [SellerStarter(buyer, p, PRICE) for p in batch])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert self.buyer.flows() == [] and self.seller.flows() == []
        return elapsed, cpu

    def close(self) -> None:
        self.network.stop_nodes()


@contextmanager
def counting_crypto() -> Iterator[list[int]]:
    """Count every Ed25519 sign (key management) and verify (``ledger._crypto.verify``) done
    while the block runs: yields ``[signs, verifies]``."""
    counts = [0, 0]
    # Any: the modules' own names are replaced for the duration, which their types forbid.
    keys_module: Any = ledger._keys
    crypto_module: Any = ledger._crypto
    real_sign, real_verify = keys_module.sign, crypto_module.verify

    def sign(*args: Any) -> Any:
        counts[0] += 1
        return real_sign(*args)

    def verify(*args: Any) -> Any:
        counts[1] += 1
        return real_verify(*args)

    keys_module.sign, crypto_module.verify = sign, verify
    try:
        yield counts
    finally:
        keys_module.sign, crypto_module.verify = real_sign, real_verify


def per_trade_crypto(base: Path) -> CryptoCounts:
    market = Market(base, 2, sync=False)
    try:
        market.trade(1, 1)  # warm-up: the notary learns the history both trades share
        with counting_crypto() as counts:
            market.trade(1, 1)
    finally:
        market.close()
    return CryptoCounts(*counts)


def crypto_cost(rounds: int = 5000) -> tuple[float, float]:
    """Seconds per Ed25519 sign and per verify of a 32-byte message (a transaction id)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    data = b"\x42" * 32
    signature = key.sign(data)

    def timed(operation: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            operation()
        return (time.perf_counter() - start) / rounds

    return timed(lambda: key.sign(data)), timed(lambda: public.verify(signature, data))


def measure(base: Path, trades: int, concurrency: int, sync: bool | None,
            snapshot_locals: SnapshotLocals = "on_demand") -> Figure:
    """``sync`` None: nodes without storage. ``snapshot_locals``: the nodes' snapshot policy."""
    market = Market(base, trades + 1, sync=bool(sync), durable=sync is not None,
                    snapshot_locals=snapshot_locals)
    try:
        market.trade(1, 1)  # warm-up outside the timing
        seconds, cpu = market.trade(trades, concurrency)
    finally:
        market.close()
    storage = "no storage" if sync is None else f"fsync {'on' if sync else 'off'}"
    policy = "" if snapshot_locals == "on_demand" else f", locals {snapshot_locals}"
    return Figure(f"{concurrency} at a time, {storage}{policy}", trades, seconds, cpu)


def floor_of(signs: int, verifies: int, sign_cost: float, verify_cost: float) -> float:
    """Trades per second if a trade cost only its ``signs`` and ``verifies``."""
    return 1 / (signs * sign_cost + verifies * verify_cost)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="two-party trades per second end to end")
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-trade-"))
    try:
        counts = per_trade_crypto(base / "count")
        sign_cost, verify_cost = crypto_cost()
        rows = [measure(base / f"run-{sync}-{c}", args.trades, c, sync)
                for sync in (False, True) for c in args.concurrency]
        rows.append(measure(base / "every-step", args.trades, max(args.concurrency), False,
                            "every_step"))
        rows.append(measure(base / "memory", args.trades, max(args.concurrency), None))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor = floor_of(counts.signs, counts.verifies, sign_cost, verify_cost)
    needed = floor_of(*NEEDED, sign_cost, verify_cost)
    console = Console()
    crypto = Table(title="Ed25519 per trade and its cost, measured in this run")
    for column in ("", "signs", "verifies", "µs per trade", "floor trades/s"):
        crypto.add_column(column, justify="right")
    crypto.add_row("µs each", f"{sign_cost * 1e6:.1f}", f"{verify_cost * 1e6:.1f}", "", "")
    for name, (signs, verifies), rate in (
            ("performed (counted)", (counts.signs, counts.verifies), floor),
            ("needed (derived)", NEEDED, needed)):
        crypto.add_row(name, str(signs), str(verifies), f"{1e6 / rate:,.0f}", f"{rate:,.0f}")
    console.print(crypto)
    table = Table(title=f"Two-party trades end to end ({args.trades} per row, 3 nodes); x floor: "
                        "times the performed floor, x needed: times the needed floor")
    for column in ("workload", "trades/s", "ms/trade", "CPU ms/trade", "x floor", "x needed",
                   "CPU x floor"):
        table.add_column(column, justify="right")
    for row in rows:
        cpu = row.cpu_seconds / row.trades
        table.add_row(row.name, f"{row.per_second:,.0f}", f"{1e3 / row.per_second:.2f}",
                      f"{cpu * 1e3:.2f}", f"{floor / row.per_second:.1f}",
                      f"{needed / row.per_second:.1f}", f"{cpu * floor:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
