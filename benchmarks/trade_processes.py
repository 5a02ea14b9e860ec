"""Two-party trades per second on three node processes (``fibers node run``: a validating
notary, a seller and a buyer, mutual TLS between them, LMDB with fsync on), driven over RPC.

A wave of ``concurrency`` ``SellerStarter`` flows is started over the seller's RPC (each start
returns once it is durable), then the seller's and the buyer's RPC are polled (``node_info``)
until neither has a flow left; waves follow each other until ``trades`` trades are done. The
issuance (one cash state and one paper per trade) is done beforehand, outside the timing, as
are the nodes' start and one warm-up trade. The result is trades per second of wall time.

Run: ``python -m benchmarks.trade_processes [--trades N] [--concurrency C]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cli._process_network import ProcessNetwork

NOTARY, SELLER, BUYER = "Notary", "Seller", "Buyer"
DEADLINE = 600.0
"""Seconds one stage (issuance, a wave) may take before the run gives up."""


@dataclass(frozen=True)
class ProcessFigure:
    """``trades`` trades in ``seconds`` of wall time, ``concurrency`` at a time."""

    trades: int
    concurrency: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.trades / self.seconds


def _wait_idle(net: ProcessNetwork, *names: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while any(net.client(n).node_info()["flows"] for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the flows of {', '.join(names)} did not end in {DEADLINE} s")
        time.sleep(0.01)


def _issue(net: ProcessNetwork, count: int) -> list[str]:
    buyer, seller = net.client(BUYER), net.client(SELLER)
    for i in range(count):
        buyer.start_flow("CashIssueFlow", amount="1000.00 USD", issuer_ref=f"{i:08x}",
                         notary=NOTARY)
        seller.start_flow("CommercialPaperIssueFlow", face_value="1000.00 USD",
                          maturity="now+30d", notary=NOTARY)
    _wait_idle(net, BUYER, SELLER)
    papers = [row["ref"] for row in seller.vault_query("CommercialPaper.State")]
    if len(papers) != count:
        raise RuntimeError(f"issued {len(papers)} papers of {count}: see the seller's hospital")
    return papers


def _trade(net: ProcessNetwork, papers: list[str], concurrency: int) -> None:
    seller = net.client(SELLER)
    for first in range(0, len(papers), concurrency):
        for paper in papers[first:first + concurrency]:
            seller.start_flow("SellerStarter", other_party=BUYER, asset_to_sell=paper,
                              price="900.00 USD", acceptable_issuers=BUYER)
        _wait_idle(net, SELLER, BUYER)


def measure_processes(base: Path, trades: int, concurrency: int) -> ProcessFigure:
    """Bootstrap three node processes under ``base``, issue, warm up with one trade, then time
    ``trades`` trades ``concurrency`` at a time. Every child is stopped before it returns."""
    with ProcessNetwork(base, NOTARY, (SELLER, BUYER)) as net:
        net.start_all()
        papers = _issue(net, trades + 1)
        _trade(net, papers[:1], 1)
        start = time.perf_counter()
        _trade(net, papers[1:], concurrency)
        seconds = time.perf_counter() - start
        bought = len(net.client(BUYER).vault_query("CommercialPaper.State"))
        if bought != trades + 1:
            raise RuntimeError(f"the buyer holds {bought} papers after {trades + 1} trades")
    return ProcessFigure(trades, concurrency, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fibers-bench-processes-") as base:
        figure = measure_processes(Path(base), args.trades, args.concurrency)
    print(f"{figure.trades} trades, {figure.concurrency} at a time, on 3 node processes: "
          f"{figure.seconds:.2f} s, {figure.per_second:.1f} trades/s")


if __name__ == "__main__":
    main()
