"""``fibers demo --processes``: the demo's story (cli/_trade_demo.py) with each party in its
own ``fibers node run`` process, driven over the node RPC (docs/rpc.md).

The story: a network is bootstrapped in the run directory and the notary and both banks are
started as child processes; the buyer bank is issued cash and the seller bank commercial paper;
the seller sells each paper to the buyer (``SellerStarter``, started tracked, so its progress
is pushed). When a seller reaches its committing step, the demo shows where every flow is
parked, SIGKILLs the buyer's process, shows it down, starts it again from its directory, and
the trades complete. Vaults before and after and the notarised transaction ids end it.

Contract: ``run_process_demo`` returns 0 when every trade settled, 1 otherwise; every child
process is stopped when it returns or raises (Ctrl-C included).
"""

from __future__ import annotations

import queue
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from cli._process_network import NodeProcessError, ProcessNetwork
from cli._process_view import ProcessReporter
from cli._trade_demo import DemoOptions
from fibers.rpc import RpcError

__all__ = ["DemoFailed", "run_process_demo"]

NOTARY, SELLER, BUYER = "Notary", "SellerBank", "BuyerBank"
FACE_VALUE: Final = "1000.00 USD"
PRICE: Final = "900.00 USD"
FLOW_TIMEOUT: Final = 120.0
"""Seconds the demo waits for the flows of one stage before it gives up."""


class DemoFailed(RuntimeError):
    """A node process or its RPC failed the demo; every child was stopped."""


def run_process_demo(console: Console, options: DemoOptions) -> int:
    """Tell the story on ``console`` with node processes in ``options.base_dir`` (a fresh
    directory when None); returns the exit status. Raises ``DemoFailed`` naming what broke
    when a node did not start or its RPC failed."""
    base_dir = options.base_dir or Path(tempfile.mkdtemp(prefix="fibers-demo-"))
    console.print(
        f"[bold]Fibers demo[/], one process per party: {options.trades} delivery-versus-payment "
        f"trade{'s' if options.trades > 1 else ''} of commercial paper for cash over mutual "
        "TLS, driven over each node's RPC.")
    try:
        with ProcessNetwork(base_dir, NOTARY, (SELLER, BUYER)) as net:
            for name in net.names:
                net.start(name)
                console.print(f"Started {name}: pid {net.pid(name)}, {net.node_dir(name)}",
                              highlight=False, soft_wrap=True)
            return _story(console, options, net)
    except (NodeProcessError, RpcError, RuntimeError) as exc:
        raise DemoFailed(f"{exc} (the nodes' directories and storage are in {base_dir})"
                         ) from exc
    finally:
        console.print(f"Run directory (each node's directory and storage): [bold]{base_dir}[/]",
                      soft_wrap=True)


def _story(console: Console, options: DemoOptions, net: ProcessNetwork) -> int:
    papers = _prepare(net, options.trades)
    console.print(vault_table("Before", net))
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    reporter = ProcessReporter(console, live=options.live)
    run_ids = []
    with reporter:
        for paper in papers:
            started, _feed = net.client(SELLER).start_tracked_flow(
                "SellerStarter", events.put, other_party=BUYER, asset_to_sell=paper,
                price=PRICE, acceptable_issuers=BUYER)
            run_ids.append(started["run_id"])
            for snapshot in started["progress"]:
                events.put(snapshot)
        crashed = _follow(net, options, reporter, events, run_ids)
    outcomes = [_outcome(net, r) for r in run_ids]
    console.print(vault_table("After", net))
    for run_id, outcome in zip(run_ids, outcomes, strict=True):
        if outcome is not None and outcome["status"] == "COMPLETED":
            tx = str(outcome["result"]).removeprefix("SignedTransaction ")
            console.print(f"Notarised transaction [bold]{tx}[/]", highlight=False,
                          soft_wrap=True)
        else:
            why = outcome["error"] if outcome else "it did not end in time"
            console.print(f"[red]Trade {run_id[:8]} failed:[/] {why}", highlight=False)
    if options.crash and not crashed:
        console.print("[yellow]The trades finished before the crash point was reached.[/]")
    settled = all(o is not None and o["status"] == "COMPLETED" for o in outcomes)
    return 0 if settled else 1


def _follow(net: ProcessNetwork, options: DemoOptions, reporter: ProcessReporter,
            events: queue.Queue[dict[str, Any]], run_ids: list[str]) -> bool:
    """Show the trades' progress until every seller flow ended, crashing the buyer at the
    first committing step; returns whether it crashed."""
    ended: set[str] = set()
    crashed = False
    deadline = time.monotonic() + FLOW_TIMEOUT
    while len(ended) < len(run_ids) and time.monotonic() < deadline:
        try:
            snapshot = events.get(timeout=0.5)
        except queue.Empty:
            ended |= {r for r in run_ids if _outcome(net, r) is not None}  # feed lost: ask
            continue
        reporter.progress(SELLER, snapshot)
        if snapshot.get("outcome") is not None:
            ended.add(snapshot["run_id"])
        if options.crash and not crashed and _committing(snapshot):
            crashed = True
            _crash_and_restart(net, reporter, options)
    return crashed


def _crash_and_restart(net: ProcessNetwork, reporter: ProcessReporter,
                       options: DemoOptions) -> None:
    rows = [(name, m["flow_class"].split(":")[-1], m["run_id"][:8],
             (m.get("progress_step") or "?")
             + (f", waiting for {m['waiting_for']}" if m.get("waiting_for") else ""))
            for name in (SELLER, BUYER) for m in net.client(name).state_machines()]
    reporter.parked(rows, down=BUYER)
    pid = net.pid(BUYER)
    net.kill(BUYER)
    reporter.event(f"{BUYER} killed (SIGKILL to pid {pid}): its node is down, its flows are "
                   "parked in its storage", down=BUYER)
    reporter.hold(2.5 if options.live else 0.0)
    reporter.event(f"Restarting {BUYER} from {net.node_dir(BUYER)}")
    net.start(BUYER)
    restored = len(net.client(BUYER).state_machines())
    reporter.event(f"{BUYER} (pid {net.pid(BUYER)}) runs again from its storage: its flows "
                   f"resumed from their checkpoints ({restored} still running)", up=BUYER)


def _committing(snapshot: dict[str, Any]) -> bool:
    """The crash point: the seller signed and is committing, the buyer is parked waiting."""
    steps, index = snapshot.get("steps") or [], int(snapshot.get("index", -1))
    return any(str(label).lower().startswith("commit") for _, label in steps[: index + 1])


def _outcome(net: ProcessNetwork, run_id: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = net.client(SELLER).call("outcome", run_id=run_id)
    return result


def _prepare(net: ProcessNetwork, trades: int) -> list[str]:
    """Cash for the buyer (one state per trade) and one paper per trade for the seller;
    returns the papers' vault references."""
    buyer, seller = net.client(BUYER), net.client(SELLER)
    started = []
    for i in range(trades):
        started.append((buyer, buyer.start_flow(
            "CashIssueFlow", amount=FACE_VALUE, issuer_ref=f"{1 + i % 200:02x}",
            notary=NOTARY)["run_id"]))
        started.append((seller, seller.start_flow(
            "CommercialPaperIssueFlow", face_value=FACE_VALUE, maturity="now+30d",
            notary=NOTARY)["run_id"]))
    deadline = time.monotonic() + FLOW_TIMEOUT
    for client, run_id in started:
        while (outcome := client.call("outcome", run_id=run_id)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"issuing on {client.url} did not finish in "
                                   f"{FLOW_TIMEOUT:.0f} s")
            time.sleep(0.05)
        if outcome["status"] != "COMPLETED":
            raise RuntimeError(f"{outcome['flow_class']} failed: {outcome['error']}")
    return [row["ref"] for row in seller.vault_query("CommercialPaper.State")][:trades]


def cash_total(rows: list[dict[str, Any]]) -> int:
    """The cash in vault rows (``Cash.State``), in cents."""
    total = 0
    for row in rows:
        amount = dict(row["fields"])["amount"].split()[0]
        whole, _, cents = amount.replace(",", "").partition(".")
        total += int(whole) * 100 + int((cents + "00")[:2])
    return total


def vault_table(title: str, net: ProcessNetwork) -> Table:
    """Cash and commercial paper held by each bank, read over RPC."""
    table = Table(title=f"{title}: vaults")
    for column in ("bank", "cash", "commercial paper"):
        table.add_column(column, justify="right" if column != "bank" else "left")
    for name in (SELLER, BUYER):
        client = net.client(name)
        cents = cash_total(client.vault_query("Cash.State"))
        papers = len(client.vault_query("CommercialPaper.State"))
        table.add_row(name, f"{cents // 100:,}.{cents % 100:02d} USD", str(papers))
    return table
