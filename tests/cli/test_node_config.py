"""``snapshot_locals`` in node.toml: absent is the default, a known value reaches the node a
``fibers node run`` builds, anything else refuses to start naming the setting."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cli._bootstrap import BootstrapPlan, bootstrap
from cli._node_config import ConfigError, load_node_config
from cli._node_process import NodeProcess, run_node
from cli._process_network import free_base_port


def _alice(tmp_path: Path) -> Path:
    bootstrap(BootstrapPlan(tmp_path / "net", "Notary", True, ("Alice",),
                            base_port=free_base_port(4)))
    return tmp_path / "net" / "Alice"


def _set(node_dir: Path, line: str) -> None:
    toml = node_dir / "node.toml"
    toml.write_text(f"{line}\n{toml.read_text()}")  # a top-level key: before the tables


def test_the_default_is_on_demand_and_every_step_reaches_the_node(tmp_path: Path) -> None:
    alice = _alice(tmp_path)
    assert load_node_config(alice).snapshot_locals == "on_demand"
    _set(alice, 'snapshot_locals = "every_step"')
    assert load_node_config(alice).snapshot_locals == "every_step"
    process = NodeProcess(alice)
    try:
        node = process._build(process.transport)
        assert node.snapshot_locals == "every_step"
        node.stop()
    finally:
        process.storage.close()
        process._lock.close()


@pytest.mark.parametrize("line", ['snapshot_locals = "always"', "snapshot_locals = 1"])
def test_a_bad_value_is_refused_naming_the_setting(
    tmp_path: Path, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = _alice(tmp_path)
    _set(alice, line)
    with pytest.raises(ConfigError, match="snapshot_locals must be 'on_demand'"):
        load_node_config(alice)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert run_node(alice) == 1
    finally:  # run_node installs its own handlers
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    error = capsys.readouterr().err
    assert "cannot start the node" in error and "snapshot_locals" in error
