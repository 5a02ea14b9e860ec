"""``MockNetwork``: nodes on an in-memory network, pumped by hand for deterministic tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self

from fibers._clock import TestClock
from fibers._errors import SerializationError
from fibers._identity import NodeIdentity, Party, stored_identity
from fibers._locals import DEFAULT_SNAPSHOT_LOCALS, SnapshotLocals, check_snapshot_locals
from fibers._messages import decode_message
from fibers._node import NetworkMap, Node
from fibers._service_hub import HubT, ServiceHub
from fibers._storage import NodeStorage
from fibers._storage_api import Storage
from fibers.runtime import ManualDriver, NodeRuntime
from fibers.transport import InFlightMessage, InMemoryNetwork, Transport


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One delivered message: who sent it to whom, and the decoded session message."""

    sender: str
    recipient: str
    message: object


class MockNetwork(Generic[HubT]):
    """Engine-level nodes talking over an in-memory network.

    Each node runs in a ``NodeRuntime`` in manual mode on the test's thread, with an endpoint
    of ``network`` (an ``InMemoryNetwork``) as its transport. Nothing moves until the test
    pumps: ``run_network()`` delivers queued messages one at a time, oldest first, until none
    is left; ``run_network(max_messages=1)`` or ``deliver_next()`` delivers exactly one, for
    tests that need precise interleavings. Time is a ``TestClock`` moved by ``advance_time``.
    Every message ``deliver_next`` delivers is appended to ``transcript``.

    A durable network keeps each node's storage and identity under ``base_dir/<name>``: a new
    ``MockNetwork`` on the same ``base_dir`` (in this process or another) re-creates each node
    with ``create_node`` as the same party, restoring its flows. A node re-sends what it had
    not delivered to peers that are created after it, as soon as they are. ``wrap_storage``
    replaces each node's ``NodeStorage`` by what it returns for it (any
    ``fibers.storage.Storage``, e.g. a wrapper that records writes). ``hub`` is the service
    hub class nodes are built with (``Node(hub=...)``), ``snapshot_locals`` their snapshot
    policy (``Node(snapshot_locals=...)``), ``hibernate_after`` and ``max_live_parked`` their
    hibernation settings (durable networks only).
    """

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        strict_suspendable: bool = True,
        record_transcript: bool = True,
        durable: bool = True,
        sync: bool = False,
        wrap_storage: Callable[[Storage], Storage] | None = None,
        # HubT defaults to ServiceHub, which mypy does not yet apply to a parameter's default.
        hub: type[HubT] = ServiceHub,  # type: ignore[assignment]
        snapshot_locals: SnapshotLocals = DEFAULT_SNAPSHOT_LOCALS,
        hibernate_after: float | None = None,
        max_live_parked: int | None = None,
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="fibers-mock-"))
        self.clock = TestClock()
        self.network = InMemoryNetwork()
        self.driver = ManualDriver(
            self.network, observe=self._record_delivery if record_transcript else None)
        self.network_map = NetworkMap()
        self.nodes: list[Node[HubT]] = []
        self.transcript: list[TranscriptEntry] = []
        # Run on every node this network builds (created or restarted), after the network's
        # own setup and before the node restores its flows: e.g. to register responders that
        # a restarted node needs too. The explorer installs its crash hook here.
        self.node_hooks: list[Callable[[Node], object]] = []
        self._strict = strict_suspendable
        self._record = record_transcript
        self._durable = durable
        self._sync = sync
        self._wrap_storage = wrap_storage
        self._hub = hub
        self._snapshot_locals = check_snapshot_locals(snapshot_locals)
        self._hibernate_after = hibernate_after
        self._max_live_parked = max_live_parked

    def create_node(self, name: str) -> Node[HubT]:
        """A new node called ``name`` on this network."""
        if any(node.party.name == name for node in self.nodes):
            raise ValueError(f"a node called {name!r} already exists on this network")
        node = self._build_node(name)
        self.nodes.append(node)
        return node

    def _build_node(
        self,
        name: str,
        services: dict[str, Any] | None = None,
        identity: NodeIdentity | None = None,
    ) -> Node[HubT]:
        """A node called ``name``; durable nodes take their identity from their storage, others
        ``identity`` (a restart) or a new one."""
        storage: Storage | None = None
        if self._durable:
            # sync=False: commits stay atomic (a process crash loses nothing committed) but are
            # not fsynced, which keeps tests fast; benchmarks measure the synced path.
            storage = NodeStorage.open(self.base_dir / name, sync=self._sync)
            try:
                if self._wrap_storage is not None:
                    storage = self._wrap_storage(storage)
                identity = stored_identity(storage, name)
            except BaseException:
                storage.close()
                raise
        elif identity is None:
            identity = NodeIdentity(name)
        self.network_map.add(identity.party)

        def build(transport: Transport) -> Node[HubT]:
            return Node(
                identity,
                transport,
                clock=self.clock,
                network_map=self.network_map,
                strict_suspendable=self._strict,
                storage=storage,
                services=services,
                setup=self._setup_with_hooks(self._node_setup(identity)),
                hub=self._hub,
                snapshot_locals=self._snapshot_locals,
                hibernate_after=self._hibernate_after,
                max_live_parked=self._max_live_parked,
            )

        runtime = NodeRuntime(self.network.endpoint(identity.party), build)
        self.driver.add(runtime)
        return runtime.start(threaded=False)

    def _node_setup(self, identity: NodeIdentity) -> Callable[[Node[HubT]], object] | None:
        """What to run on each node this network builds, before it restores its flows
        (subclasses install their services here)."""
        return None

    def _setup_with_hooks(
        self, setup: Callable[[Node[HubT]], object] | None
    ) -> Callable[[Node[HubT]], object] | None:
        if not self.node_hooks:
            return setup
        hooks = list(self.node_hooks)

        def run(node: Node[HubT]) -> None:
            if setup is not None:
                setup(node)
            for hook in hooks:
                hook(node)

        return run

    def stop_node(self, node: Node[HubT]) -> None:
        """Stop ``node`` as a crash would; messages for it wait in the network until a node
        with its identity is started again (``restart_node``)."""
        runtime = self.driver.runtime(node.party)
        if runtime.is_running and runtime.node is node:
            runtime.stop()
        else:
            node.stop()

    def restart_node(self, node: Node[HubT]) -> Node[HubT]:
        """Stop ``node`` as a crash would and start a new node on the same identity and storage;
        the new node restores every unfinished flow from its checkpoints. Services installed
        on the old node (``services.install``) are installed on the new one before it
        restores, as a real node would set its services up before resuming flows."""
        index = self.nodes.index(node)
        self.stop_node(node)
        restarted = self._build_node(node.party.name, dict(node.services.installed),
                                     node.identity)
        self.nodes[index] = restarted
        return restarted

    def node(self, name: str) -> Node[HubT]:
        """The node called ``name``."""
        for node in self.nodes:
            if node.party.name == name:
                return node
        raise KeyError(f"no node called {name!r}")

    # ----- pumping --------------------------------------------------------------------------------

    def run_network(self, max_messages: int | None = None) -> int:
        """Deliver queued messages, oldest first, until none is left or ``max_messages`` were
        delivered; every node's due timers fire before the first and whenever none is left
        (time does not move meanwhile). Returns how many were delivered."""
        return self.driver.run(max_messages)

    def deliver_next(self) -> InFlightMessage | None:
        """Deliver exactly one message (the oldest deliverable); None when nothing is queued."""
        return self.driver.deliver_next()

    def deliver_all(self) -> int:
        """Deliver every queued message at once, each node's as one batch (one scheduler round
        and one group commit per node). Returns how many were delivered."""
        return self.driver.deliver_all()

    def step(self) -> bool:
        """Deliver one message, or fire the timers that are due, or, when only timers are left,
        move the clock to the earliest deadline and fire it. False when nothing can move."""
        return self.driver.step(self.clock.now, self.clock.advance)

    def _record_delivery(self, message: InFlightMessage) -> None:
        if self._record:
            try:
                decoded: object = decode_message(message.frame)
            except SerializationError as exc:  # a test that sends garbage on purpose
                decoded = exc
            self.transcript.append(
                TranscriptEntry(message.sender.name, message.recipient.name, decoded)
            )

    def pending_messages(self) -> list[InFlightMessage]:
        """Messages waiting to be delivered, in delivery order."""
        return self.network.pending()

    def advance_time(self, seconds: float) -> None:
        """Move the shared clock forward and wake the flows whose sleep ended."""
        self.clock.advance(seconds)
        self.driver.fire_timers()

    def party(self, name: str) -> Party:
        """The party of the node called ``name``."""
        return self.node(name).party

    # ----- lifecycle ------------------------------------------------------------------------------

    def stop_nodes(self) -> None:
        """Stop every node and remove the storage this network created."""
        for node in self.nodes:
            self.stop_node(node)
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_nodes()
