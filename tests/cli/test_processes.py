"""Real node processes (``fibers node run``) started by the tests: a trade settled through the
RPC client; SIGKILL at seeded random moments of payments and of trades, every one settled
exactly once with cash conserved; ``fibers demo --processes --plain`` end to end.

Synchronisation is on each node's ``ready`` line and on RPC state polled with a deadline; the
only sleeps choose *when* to kill a process (the seeded random moment), never wait for it."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli._process_demo import cash_total
from cli._process_network import NodeProcessError, ProcessNetwork

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ProcessNetwork]:
    with ProcessNetwork(tmp_path, "Notary", ("BankA", "BankB")) as network:
        network.start_all()
        yield network


def _until(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def _cash(net: ProcessNetwork, name: str) -> int:
    return cash_total(net.client(name).vault_query("Cash.State"))


def _papers(net: ProcessNetwork, name: str) -> list[str]:
    return [dict(r["fields"])["issuance"] for r in
            net.client(name).vault_query("CommercialPaper.State")]


def _idle(net: ProcessNetwork, *names: str) -> bool:
    return all(not net.client(n).state_machines() and not net.client(n).hospital()
               for n in names)


def _issue(net: ProcessNetwork, cash: list[str], papers: int) -> None:
    """Cash states for BankB (one per amount) and ``papers`` papers for BankA."""
    for i, amount in enumerate(cash):
        net.client("BankB").start_flow("CashIssueFlow", amount=amount,
                                       issuer_ref=f"{i + 1:02x}", notary="Notary")
    for _ in range(papers):
        net.client("BankA").start_flow("CommercialPaperIssueFlow", face_value="1000.00 USD",
                                       maturity="now+30d", notary="Notary")
    _until("issued", lambda: len(net.client("BankB").vault_query("Cash.State")) == len(cash)
           and len(_papers(net, "BankA")) == papers and _idle(net, "BankA", "BankB"))


def test_three_node_processes_settle_a_trade_through_the_rpc_client(
        net: ProcessNetwork) -> None:
    _issue(net, ["1000.00 USD"], papers=1)
    paper = net.client("BankA").vault_query("CommercialPaper.State")[0]["ref"]
    started = net.client("BankA").start_flow("SellerStarter", other_party="BankB",
                                             asset_to_sell=paper, price="900.00 USD",
                                             acceptable_issuers="BankB")
    _until("the trade ended", lambda: net.client("BankA").call(
        "outcome", run_id=started["run_id"]) is not None)
    outcome = net.client("BankA").call("outcome", run_id=started["run_id"])
    assert outcome["status"] == "COMPLETED", outcome
    tx = outcome["result"].removeprefix("SignedTransaction ")
    _until("the buyer recorded it", lambda: len(_papers(net, "BankB")) == 1)
    assert net.client("BankB").vault_query("CommercialPaper.State")[0]["ref"].startswith(tx)
    assert (_cash(net, "BankA"), _cash(net, "BankB")) == (90000, 10000)
    assert _papers(net, "BankA") == []


def _crash_now_and_then(net: ProcessNetwork, rng: random.Random, starts: list[Callable[[], object]],
                        victims: list[str]) -> list[str]:
    """Run ``starts`` one after another; after some of them (and at least once), at a random
    moment, SIGKILL a random victim and start it again. Returns who was killed."""
    killed: list[str] = []
    for i, start in enumerate(starts):
        start()
        if rng.random() < 0.35 or (i == len(starts) - 1 and not killed):
            time.sleep(rng.uniform(0.0, 0.4))  # when to kill, not a wait for anything
            victim = rng.choice(victims)
            net.kill(victim)
            net.start(victim)
            killed.append(victim)
    return killed


@pytest.mark.parametrize("seed", [1, 2])
def test_payments_survive_sigkill_at_random_moments_exactly_once(
        net: ProcessNetwork, seed: int) -> None:
    rng = random.Random(seed)
    count = 6
    _issue(net, ["100.00 USD"] * count, papers=0)

    def pay() -> object:
        return net.client("BankB").start_flow("CashPaymentFlow", amount="100.00 USD",
                                              recipient="BankA")

    killed = _crash_now_and_then(net, rng, [pay] * count, ["BankA", "BankB", "Notary"])
    assert killed
    _until("every payment settled", lambda: _idle(net, "BankA", "BankB")
           and _cash(net, "BankA") == count * 10000)
    assert _cash(net, "BankB") == 0
    assert len(net.client("BankA").vault_query("Cash.State")) == count  # each paid once


@pytest.mark.parametrize("seed", [3, 4])
def test_trades_survive_sigkill_at_random_moments_exactly_once(
        net: ProcessNetwork, seed: int) -> None:
    rng = random.Random(seed)
    count = 4
    _issue(net, ["1000.00 USD"] * count, papers=count)
    refs = [r["ref"] for r in net.client("BankA").vault_query("CommercialPaper.State")]
    issuances = sorted(_papers(net, "BankA"))

    def sell(ref: str) -> Callable[[], object]:
        return lambda: net.client("BankA").start_flow(
            "SellerStarter", other_party="BankB", asset_to_sell=ref, price="900.00 USD",
            acceptable_issuers="BankB")

    killed = _crash_now_and_then(net, rng, [sell(ref) for ref in refs],
                                 ["BankA", "BankB", "Notary"])
    assert killed
    _until("every trade settled", lambda: _idle(net, "BankA", "BankB")
           and len(_papers(net, "BankB")) == count)
    assert sorted(_papers(net, "BankB")) == issuances  # each paper owned once, by the buyer
    assert _papers(net, "BankA") == []
    assert _cash(net, "BankA") == count * 90000
    assert _cash(net, "BankA") + _cash(net, "BankB") == count * 100000  # conserved


def test_fibers_demo_processes_plain_tells_the_story_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--processes", "--plain", "--trades", "2",
         "--dir", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in ("Started Notary: pid", "Started SellerBank: pid", "Started BuyerBank: pid",
                 "Where each flow is parked", "BuyerBank killed (SIGKILL to pid",
                 "Restarting BuyerBank from", "BuyerBank (pid", "runs again from its storage"):
        assert line in out, out
    assert out.count("Notarised transaction") == 2, out
    after = out[out.index("After: vaults"):]
    assert "1,800.00 USD" in after and "200.00 USD" in after, out
    assert (tmp_path / "run" / "network" / "BuyerBank" / "node.toml").exists()
    pids = [int(m) for m in re.findall(r"pid (\d+)", out)]
    assert len(pids) >= 4
    for pid in pids:  # every child was stopped (and reaped) by the demo
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_ctrl_c_during_demo_processes_stops_every_child(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--processes", "--plain", "--trades", "3",
         "--dir", str(tmp_path / "run")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("Started BuyerBank: pid"):
                break
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        rest = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(seen) + rest
    assert demo.returncode != 0, output
    assert "interrupted: every node process was stopped" in output, output
    assert "Traceback" not in output, output
    pids = {int(m) for m in re.findall(r"Started \w+: pid (\d+)", output)}
    assert len(pids) == 3, output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_node_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    with ProcessNetwork(tmp_path, "Notary", ("BankA",)) as network:
        (network.node_dir("BankA") / "node.toml").write_text("name = [broken\n")
        with pytest.raises(NodeProcessError, match="BankA did not get ready") as raised:
            network.start("BankA")
        assert "node.toml" in str(raised.value)
        assert not network.is_up("BankA")


def _gone(pid: int) -> bool:
    """The process ended (a zombie waiting for a reaper that is not us counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_the_nodes_stop_when_the_demo_is_killed_outright(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--processes", "--plain", "--trades", "3",
         "--dir", str(tmp_path / "run")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    pids = []
    try:
        for line in demo.stdout:
            found = re.match(r"Started \w+: pid (\d+)", line)
            if found:
                pids.append(int(found.group(1)))
            if line.startswith("Started BuyerBank: pid"):
                break
        demo.kill()  # no clean-up runs in the demo: the kernel tells the children
        demo.wait()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()
    assert len(pids) == 3
    _until("every node process ended", lambda: all(_gone(pid) for pid in pids), 30)
    for name in ("Notary", "SellerBank", "BuyerBank"):  # each stopped cleanly, lock released
        lock = tmp_path / "run" / "network" / name / "node.lock"
        with lock.open("ab") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
