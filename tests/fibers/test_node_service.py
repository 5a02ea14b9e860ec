"""``fibers.services.NodeService``: a service's writes commit with the step of the flow that
made them, or at once outside flows; an after-commit action runs only once its write landed."""

from __future__ import annotations

from fibers import FlowLogic, Node, suspendable
from fibers.services import NodeService, journaled
from fibers.storage import Txn
from fibers.testing import MockNetwork

DB = "counter"


class Counter(NodeService):
    def __init__(self, node: Node) -> None:
        super().__init__(node)
        if self._storage is not None:
            self._storage.db(DB)
        self.count = 0
        self.landed: list[int] = []

    def stored(self) -> bytes | None:
        assert self._storage is not None
        with self._storage.read() as txn:
            return self._storage.get(txn, DB, b"n")

    @journaled
    def bump(self) -> int:
        self.count += 1
        value = str(self.count).encode()
        storage = self._storage
        assert storage is not None

        def write(txn: Txn) -> None:
            storage.put(txn, DB, b"n", value)

        self._write(write)
        self._after_commit(lambda txn: storage.get(txn, DB, b"n") == value,
                           lambda: self.landed.append(self.count))
        self._flush()
        return self.count


class Bump(FlowLogic[int]):
    @suspendable
    def call(self) -> int:
        counter = self.service_hub.get(Counter)
        assert isinstance(counter, Counter)
        return counter.bump()


def test_writes_commit_with_the_flow_step_and_outside_flows_at_once(
    mock_network: MockNetwork,
) -> None:
    node = mock_network.create_node("Alice")
    counter = Counter(node)
    node.services.install("counter", counter)
    handle = node.start_flow(Bump())
    assert handle.result.result(timeout=0) == 1
    assert counter.stored() == b"1" and counter.landed == [1]
    assert counter.bump() == 2  # outside flows: committed before it returns
    assert counter.stored() == b"2" and counter.landed == [1, 2]


def test_an_action_whose_write_did_not_land_does_not_run(mock_network: MockNetwork) -> None:
    node = mock_network.create_node("Alice")
    counter = Counter(node)
    node.services.install("counter", counter)
    storage = counter._storage
    assert storage is not None
    node.step_write(lambda txn: storage.put(txn, DB, b"n", b"other"))
    counter._after_commit(lambda txn: storage.get(txn, DB, b"n") == b"mine",
                          lambda: counter.landed.append(-1))
    node.flush_writes()
    assert counter.stored() == b"other" and counter.landed == []
