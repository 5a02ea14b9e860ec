"""``ServiceHub``: services installed by name are found by type, never set as attributes; a
subclass declares a layer's services as typed attributes, and nodes are built with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import FlowLogic, SerializeAsToken, suspendable
from fibers.services import ServiceHub
from fibers.testing import MockNetwork


class Counter(SerializeAsToken):
    def __init__(self) -> None:
        self.value = 0


class Other(SerializeAsToken):
    def serialization_token(self) -> str:
        return f"other:{id(self)}"


class CountingHub(ServiceHub):
    counter: Counter


class Count(FlowLogic[int, CountingHub]):
    @suspendable
    def call(self) -> int:
        self.service_hub.counter.value += 1
        return self.service_hub.counter.value


def test_install_registers_by_name_returns_the_service_and_sets_no_attribute(
    tmp_path: Path,
) -> None:
    with MockNetwork(tmp_path / "net") as network:
        hub = network.create_node("Alice").services
        counter = Counter()
        assert hub.install("counter", counter) is counter
        assert not hasattr(hub, "counter")  # no setattr: found by type or by name only
        assert hub.get(Counter) is counter and hub.installed == {"counter": counter}
        with pytest.raises(ValueError, match="already has a 'counter'"):
            hub.install("counter", Counter())
        assert hub.get(Counter) is counter


def test_get_names_what_is_installed_when_it_finds_none_or_several(tmp_path: Path) -> None:
    with MockNetwork(tmp_path / "net") as network:
        hub = network.create_node("Alice").services
        with pytest.raises(LookupError, match=r"no Counter service is installed \(installed: none"):
            hub.get(Counter)
        first, second = hub.install("one", Other()), hub.install("two", Other())
        with pytest.raises(LookupError, match=r"more than one Other.*one \(Other\), two \(Other\)"):
            hub.get(Other)
        assert hub.get(Other, "two") is second and hub.get(Other, "one") is first
        with pytest.raises(LookupError, match="no Other service called 'three'"):
            hub.get(Other, "three")


def test_a_node_built_with_a_hub_subclass_serves_its_typed_attributes_to_flows(
    tmp_path: Path,
) -> None:
    def install(node: object) -> None:
        hub = getattr(node, "services")  # noqa: B009  # the node as setup receives it
        assert isinstance(hub, CountingHub)
        # A restarted MockNetwork node gets the old node's services before its setup runs.
        carried = hub.installed.get("counter")
        hub.counter = carried if isinstance(carried, Counter) else hub.install("counter", Counter())

    class Network(MockNetwork[CountingHub]):
        def _node_setup(self, identity: object) -> object:  # type: ignore[override]
            return install

    with Network(tmp_path / "net", hub=CountingHub) as network:
        alice = network.create_node("Alice")
        assert isinstance(alice.services, CountingHub)
        first = alice.start_flow(Count())
        network.run_network()
        assert first.result.result(timeout=0) == 1
        alice = network.restart_node(alice)  # a fresh hub of the same class, service carried
        second = alice.start_flow(Count())
        network.run_network()
        assert second.result.result(timeout=0) == 2
        assert alice.services.get(Counter) is alice.services.counter


def test_the_hub_token_does_not_depend_on_its_class() -> None:
    # Checkpoints that hold the hub restore on a node built with another hub class.
    assert CountingHub.serialization_token is ServiceHub.serialization_token
