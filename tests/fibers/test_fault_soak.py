"""Storage failures at every write of a step and at the group commit, across many concurrent
payments between three nodes (with restarts in between): every payment ends exactly once.

Each payment is a flow pair: the payer records its debit through a journaled service call,
sends the payment, the payee records its credit and answers, and both exchange a receipt.
The service's writes commit with the step that made them (``Node.step_write``), counting how
often each payment was applied on each node, so a double application or a lost one shows in
storage, whatever the engine's memory says.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from fibers import (
    FlowHandle,
    FlowLogic,
    Party,
    SerializeAsToken,
    StateMachineRunId,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._identity import NodeIdentity
from fibers._node import Node
from fibers._services import journaled
from fibers._storage import Txn
from fibers._storage_faults import FaultPlan
from fibers.testing import MockNetwork

NAMES = ("A", "B", "C")
BALANCE = b"~balance"


class Tally(SerializeAsToken):
    """Counts, in the node's storage, how often each payment was applied here."""

    def __init__(self) -> None:
        self.node: Node | None = None

    def bind(self, node: Node) -> None:
        assert node.storage is not None
        node.storage.db("tally")
        self.node = node

    @journaled
    def apply(self, payment: str, amount: int) -> None:
        node = self.node
        assert node is not None and node.storage is not None
        storage, key = node.storage, payment.encode()

        def write(txn: Txn) -> None:
            count = int(storage.get(txn, "tally", key) or b"0")
            storage.put(txn, "tally", key, b"%d" % (count + 1))
            balance = int(storage.get(txn, "tally", BALANCE) or b"0")
            storage.put(txn, "tally", BALANCE, b"%d" % (balance + amount))

        node.step_write(write)

    def stored(self) -> dict[bytes, int]:
        node = self.node
        assert node is not None and node.storage is not None
        storage = node.storage
        with storage.read() as txn:
            return {k: int(v) for k, v in storage.prefix_items(txn, "tally", b"")}


@initiating_flow
class Pay(FlowLogic[str]):
    def __init__(self, payee: Party, payment: str, amount: int) -> None:
        self.payee, self.payment, self.amount = payee, payment, amount

    @suspendable
    def call(self) -> str:
        self.service_hub.get(Tally).apply(self.payment, -self.amount)
        paid = self.send_and_receive(self.payee, f"{self.payment}:{self.amount}", str)
        assert paid.unwrap(str) == f"paid {self.payment}"
        return self.send_and_receive(self.payee, "receipt?", str).unwrap(str)


@initiated_by(Pay)
class GetPaid(FlowLogic[None]):
    def __init__(self, payer: Party) -> None:
        self.payer = payer

    @suspendable
    def call(self) -> None:
        payment, amount = self.receive(self.payer, str).unwrap(str).split(":")
        self.service_hub.get(Tally).apply(payment, int(amount))
        self.send(self.payer, f"paid {payment}")
        self.receive(self.payer, str)
        self.send(self.payer, f"receipt {payment}")


class TallyNetwork(MockNetwork):
    def _node_setup(self, identity: NodeIdentity) -> Callable[[Node], object]:
        def setup(node: Node) -> None:
            tally = node.services.installed.get("tally")
            if not isinstance(tally, Tally):
                tally = Tally()
                node.services.install("tally", tally)
            tally.bind(node)

        return setup


@dataclass
class Payment:
    payer: str
    payee: str
    amount: int
    run_id: StateMachineRunId | None = None
    handle: FlowHandle[str] | None = None
    starts: list[StateMachineRunId] = field(default_factory=list)


class Run:
    """One run of ``count`` payments, with faults armed by ``arm`` on every node's storage."""

    def __init__(self, count: int, arm: Callable[[str, FaultPlan], object]) -> None:
        self.network = TallyNetwork(record_transcript=False)
        self.plans: dict[str, FaultPlan] = {}
        self.arm = arm
        for name in NAMES:
            self.network.create_node(name)
            self._install_plan(name)
        self.payments = {
            f"p{i}": Payment(NAMES[i % 3], NAMES[(i + 1) % 3], 10 + i) for i in range(count)
        }

    def _install_plan(self, name: str) -> None:
        storage = self.network.node(name).storage
        assert storage is not None
        plan = self.plans.get(name) or FaultPlan()
        storage.inject_faults(plan)
        if name not in self.plans:
            self.plans[name] = plan
            self.arm(name, plan)

    def start(self, payments: list[str]) -> None:
        for payer in NAMES:
            mine = [p for p in payments if self.payments[p].payer == payer]
            if not mine:
                continue
            node = self.network.node(payer)
            flows = [Pay(self.network.party(self.payments[p].payee), p,
                         self.payments[p].amount) for p in mine]
            for payment, handle in zip(mine, node.start_flows(flows), strict=True):
                self.payments[payment].handle = handle
                self.payments[payment].run_id = handle.id
                self.payments[payment].starts.append(handle.id)

    def restart(self, name: str) -> None:
        node = self.network.restart_node(self.network.node(name))
        self._install_plan(name)
        applied = self._tally(name)
        lost = []
        for payment, p in self.payments.items():
            if p.payer != name or (p.handle is not None and p.handle.result.done()):
                continue
            assert p.run_id is not None
            if any(f.run_id == p.run_id for f in node.flows()):
                p.handle = node.handle(p.run_id)
            elif any(e.run_id == p.run_id for e in node.hospital()):
                p.handle = None  # picked up when the operator retries it
            elif applied.get(payment.encode(), 0) == 0:
                lost.append(payment)  # its first step never committed: it never started
            else:
                p.handle = None  # it finished while the node restored it
        self.start(lost)

    def _tally(self, name: str) -> dict[bytes, int]:
        tally = self.network.node(name).services.installed["tally"]
        assert isinstance(tally, Tally)
        return tally.stored()

    def treat_hospital(self) -> None:
        """What an operator does: retry every parked flow (faults do not last forever)."""
        for name in NAMES:
            node = self.network.node(name)
            for entry in node.hospital():
                assert "InjectedStorageFault" in entry.diagnosis, entry.diagnosis
                node.retry_flow(entry.run_id)
                for p in self.payments.values():
                    if p.run_id == entry.run_id and p.payer == name and (
                        p.handle is None or not p.handle.result.done()
                    ):
                        flows = {f.run_id for f in node.flows()}
                        p.handle = node.handle(p.run_id) if p.run_id in flows else None

    def settled(self) -> bool:
        if any(n.hospital() or n.flows() or n.next_deadline() or n.redelivery_due
               for n in self.network.nodes):
            return False  # a flow runs, is parked or waits for its retry, or a message waits
        return all(self._tally(p.payer).get(k.encode()) == 1
                   for k, p in self.payments.items())

    def drive(self, restarts: random.Random | None = None) -> None:
        for round_ in range(400):
            if restarts is None or round_ >= 40:  # restarts in the first 40 rounds only
                self.network.run_network()
            else:
                self.network.run_network(max_messages=restarts.randint(1, 25))
                if restarts.random() < 0.3:
                    self.restart(restarts.choice(NAMES))
            self.treat_hospital()
            if not self.network.pending_messages() and self.settled():
                return
            self.network.advance_time(1)
        raise AssertionError("the payments did not settle")

    def check(self) -> None:
        """Every payment applied exactly once on each side, every result right, nothing left."""
        tallies = {name: self._tally(name) for name in NAMES}
        for payment, p in self.payments.items():
            key = payment.encode()
            assert tallies[p.payer].get(key) == 1, (payment, "payer", tallies[p.payer])
            assert tallies[p.payee].get(key) == 1, (payment, "payee", tallies[p.payee])
            if p.handle is not None:
                assert p.handle.result.result(timeout=0) == f"receipt {payment}"
        assert sum(t.get(BALANCE, 0) for t in tallies.values()) == 0
        for node in self.network.nodes:
            assert node.flows() == [] and node.hospital() == [], node
            storage = node.storage
            assert storage is not None
            with storage.read() as txn:
                for db in ("flows", "steps", "outbox", "inbox"):
                    assert list(storage.prefix_items(txn, db, b"")) == [], (node, db)

    def close(self) -> None:
        self.network.stop_nodes()


def _run(count: int, arm: Callable[[str, FaultPlan], object],
         restarts: random.Random | None = None) -> Run:
    run = Run(count, arm)
    try:
        run.start(list(run.payments))
        run.drive(restarts)
        run.check()
    finally:
        run.close()
    return run


def _no_faults(name: str, plan: FaultPlan) -> None:
    pass


def test_payments_without_faults_end_once() -> None:
    run = _run(20, _no_faults)
    assert all(plan.injected == 0 for plan in run.plans.values())


def _failing(
    victim: str, *, writes: Iterable[int] = (), commits: Iterable[int] = ()
) -> Callable[[str, FaultPlan], object]:
    """Arms the victim's plan to fail these writes and commits."""

    def arm(name: str, plan: FaultPlan) -> None:
        if name == victim:
            plan.fail_writes(*writes).fail_commits(*commits)

    return arm


def _counts(count: int) -> dict[str, tuple[int, int]]:
    run = _run(count, _no_faults)
    return {name: (plan.writes, plan.commits) for name, plan in run.plans.items()}


def test_a_failure_at_every_write_and_every_commit_loses_nothing() -> None:
    """Each write point and each group commit of node A fails in turn, once per run. With
    three payments A pays B, B pays C and C pays A: every node is once payer and once payee,
    so A's writes are every kind of write any node does."""
    writes, commits = _counts(3)["A"]
    assert writes > 30 and commits > 8
    for number in range(writes):
        run = _run(3, _failing("A", writes=[number]))
        assert run.plans["A"].injected == 1, f"write {number}"
    for number in range(commits):
        run = _run(3, _failing("A", commits=[number]))
        assert run.plans["A"].injected == 1, f"commit {number}"


@pytest.mark.parametrize("seed", range(12))
def test_random_failures_on_every_node_lose_nothing(seed: int) -> None:
    run = _run(20, lambda name, plan: plan.fail_at_random(0.03, seed=seed * 10 + len(name)))
    assert sum(plan.injected for plan in run.plans.values()) > 0


@pytest.mark.parametrize("seed", range(12))
def test_random_failures_and_restarts_lose_nothing(seed: int) -> None:
    run = _run(
        20,
        lambda name, plan: plan.fail_at_random(0.03, seed=seed * 10 + NAMES.index(name)),
        restarts=random.Random(seed),
    )
    assert sum(plan.injected for plan in run.plans.values()) > 0


def test_a_failure_at_every_commit_of_ten_concurrent_payments_loses_nothing() -> None:
    """The group commits of many flows at once: each of B's commits fails in turn."""
    commits = _counts(10)["B"][1]
    for number in range(commits):
        run = _run(10, _failing("B", commits=[number]))
        assert run.plans["B"].injected == 1, f"commit {number}"


@pytest.mark.parametrize("offset", range(3))
def test_a_failure_at_every_third_write_of_twenty_concurrent_payments_loses_nothing(
    offset: int,
) -> None:
    """B's writes, in three interleaved slices (each write point is covered by one slice):
    every third write fails, so many flows of one round fail while others commit."""
    writes = _counts(20)["B"][0]
    numbers = range(offset, writes * 2, 3)  # retries make more writes than the clean run
    run = _run(20, _failing("B", writes=numbers))
    assert run.plans["B"].injected > writes // 4
