"""The transport seam: a node sends as its endpoint's party only, frames to a stopped node wait,
and any implementation of ``fibers.transport.Transport`` carries a node's flows."""

from __future__ import annotations

import pytest

from fibers import (
    FlowLogic,
    NetworkMap,
    Node,
    NodeIdentity,
    NodeInfo,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers.runtime import NodeRuntime
from fibers.testing import MockNetwork
from fibers.transport import Deliver, InMemoryNetwork, Transport


@initiating_flow
class Ping(FlowLogic[int]):
    def __init__(self, other: Party, n: int) -> None:
        self.other, self.n = other, n

    @suspendable
    def call(self) -> int:
        return self.send_and_receive(self.other, self.n, int).unwrap(int)


@initiated_by(Ping)
class Pong(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        n = self.receive(self.other, int).unwrap(int)
        self.send(self.other, n + 1)


def test_every_frame_a_node_sends_carries_its_own_endpoints_party() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        alice.start_flow(Ping(bob.party, 1))
        assert [(m.sender, m.recipient) for m in network.pending_messages()] == [
            (alice.party, bob.party)]
        network.deliver_next()
        assert {(m.sender, m.recipient) for m in network.pending_messages()} == {
            (bob.party, alice.party)}


def test_a_node_refuses_the_endpoint_of_another_party() -> None:
    hub = InMemoryNetwork()
    alice, mallory = NodeIdentity("Alice"), NodeIdentity("Mallory")
    with pytest.raises(ValueError, match="transport speaks for Alice but the node is Mallory"):
        Node(mallory, hub.endpoint(alice.party))
    impostor = NodeIdentity("Alice")  # the same name with another key is another party
    with pytest.raises(ValueError, match="give the node its own party's endpoint"):
        Node(impostor, hub.endpoint(alice.party))


def test_a_frame_to_a_stopped_node_waits_in_the_network_until_it_starts_again() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        network.stop_node(bob)
        handle = alice.start_flow(Ping(bob.party, 41))
        assert network.run_network() == 0
        assert network.pending_messages() == []
        assert [m.recipient for m in network.network.queue] == [bob.party]
        network.restart_node(bob)
        network.run_network()
        assert handle.result.result(timeout=0) == 42


def test_an_immediate_network_hands_waiting_frames_over_in_order_when_the_endpoint_starts(
) -> None:
    hub = InMemoryNetwork(immediate=True)
    alice, bob = NodeIdentity("Alice").party, NodeIdentity("Bob").party
    got: list[tuple[str, list[bytes]]] = []
    hub.endpoint(alice).send(bob, b"1")
    hub.endpoint(alice).send(bob, b"2")
    hub.endpoint(bob).start(lambda sender, frames: got.append((sender.name, list(frames))))
    assert got == [("Alice", [b"1", b"2"])] and not hub.queue
    hub.endpoint(alice).send(bob, b"3")
    assert got[-1] == ("Alice", [b"3"])
    hub.endpoint(bob).stop()
    hub.endpoint(alice).send(bob, b"4")
    assert got[-1] == ("Alice", [b"3"]) and [m.frame for m in hub.queue] == [b"4"]


def test_deliver_all_hands_each_recipient_its_frames_in_order_grouped_by_sender_runs() -> None:
    hub = InMemoryNetwork()
    alice, bob, carol = (NodeIdentity(n).party for n in ("Alice", "Bob", "Carol"))
    got: list[tuple[str, list[bytes]]] = []
    hub.endpoint(carol).start(lambda sender, frames: got.append((sender.name, list(frames))))
    for sender, frame in [(alice, b"a1"), (alice, b"a2"), (bob, b"b1"), (alice, b"a3")]:
        hub.endpoint(sender).send(carol, frame)
    hub.endpoint(carol).send(alice, b"to a stopped Alice")
    assert hub.deliver_all() == 4
    assert got == [("Alice", [b"a1", b"a2"]), ("Bob", [b"b1"]), ("Alice", [b"a3"])]
    assert [m.frame for m in hub.queue] == [b"to a stopped Alice"]


def test_an_endpoint_cannot_be_started_twice() -> None:
    hub = InMemoryNetwork()
    endpoint = hub.endpoint(NodeIdentity("Alice").party)
    endpoint.start(lambda sender, frames: None)
    with pytest.raises(RuntimeError, match="already started"):
        endpoint.start(lambda sender, frames: None)


class DirectTransport:
    """A transport of its own: frames go straight into the recipient's runtime (as a TCP
    transport's reader thread would hand them over), each stamped with this endpoint's party."""

    def __init__(self, party: Party, directory: dict[str, Deliver]) -> None:
        self._party, self._directory = party, directory
        self.sent: list[Party] = []
        self.started = False

    @property
    def party(self) -> Party:
        return self._party

    def start(self, deliver: Deliver) -> None:
        self.started = True
        self._directory[self._party.name] = deliver

    def stop(self) -> None:
        self.started = False
        self._directory.pop(self._party.name, None)

    def send(self, recipient: Party, frame: bytes) -> None:
        self.sent.append(recipient)
        self._directory[recipient.name](self._party, [frame])


def test_a_custom_transport_plugged_into_nodes_carries_their_flows() -> None:
    directory: dict[str, Deliver] = {}
    network_map = NetworkMap()
    identities = [NodeIdentity("Alice"), NodeIdentity("Bob")]
    runtimes = []
    for identity in identities:
        network_map.add(identity.party)
        transport: Transport = DirectTransport(identity.party, directory)

        def build(t: Transport, identity: NodeIdentity = identity) -> Node:
            return Node(identity, t, network_map=network_map)

        runtimes.append(NodeRuntime(transport, build))
    alice_rt, bob_rt = runtimes
    bob = [rt.start() for rt in runtimes][1]
    try:
        handle = alice_rt.call(lambda node: node.start_flow(Ping(bob.party, 6))).result(10)
        assert handle.result.result(timeout=10) == 7
        assert isinstance(alice_rt.transport, DirectTransport)
        assert alice_rt.transport.sent and set(alice_rt.transport.sent) == {bob.party}
    finally:
        alice_rt.stop()
        bob_rt.stop()
    assert directory == {}  # stopping a runtime stops its transport


def test_the_network_map_carries_peer_addresses() -> None:
    network_map = NetworkMap()
    alice = NodeIdentity("Alice").party
    network_map.add(NodeInfo(alice, "127.0.0.1:10002"))
    assert network_map.address(alice) == "127.0.0.1:10002"
    assert network_map.node_info("Alice") == NodeInfo(alice, "127.0.0.1:10002")
    network_map.add(alice)  # learning the same party again keeps its address
    assert network_map.address(alice) == "127.0.0.1:10002"
    impostor = NodeIdentity("Alice").party
    assert network_map.address(impostor) is None  # the address is the known party's only
    network_map.add(impostor)  # a new key under the name: the old address is not its
    assert network_map.address(impostor) is None
    assert network_map.party("Alice") == impostor


def test_network_map_listeners_get_the_party_of_an_added_node_info_until_removed() -> None:
    network_map = NetworkMap()
    alice, bob = NodeIdentity("Alice").party, NodeIdentity("Bob").party
    heard: list[object] = []
    remove = network_map.on_add(heard.append)
    network_map.add(NodeInfo(alice, "127.0.0.1:10002"))
    network_map.add(alice)
    assert heard == [alice, alice]  # the party, whether added with an address or without
    remove()
    network_map.add(NodeInfo(bob, "127.0.0.1:10003"))
    assert heard == [alice, alice]
    assert network_map.address(bob) == "127.0.0.1:10003"
