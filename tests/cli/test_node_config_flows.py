"""``node.toml``'s optional ``[flows]`` table: the node's hibernation settings
(``snapshot_locals`` is tested in test_node_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli._node_config import ConfigError, load_node_config

BASE = """name = "BankA"
[p2p]
host = "127.0.0.1"
port = 10002
[rpc]
host = "127.0.0.1"
port = 10003
"""


def _config(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "node.toml").write_text(BASE + extra)
    return tmp_path


def test_without_a_flows_table_nothing_hibernates(tmp_path: Path) -> None:
    config = load_node_config(_config(tmp_path, ""))
    assert (config.hibernate_after, config.max_live_parked) == (None, None)


def test_the_flows_table_sets_the_hibernation_settings(tmp_path: Path) -> None:
    config = load_node_config(_config(
        tmp_path, "[flows]\nhibernate_after = 300\nmax_live_parked = 10000\n"))
    assert (config.hibernate_after, config.max_live_parked) == (300.0, 10000)


@pytest.mark.parametrize("line", ["hibernate_after = -1", "hibernate_after = 'soon'",
                                  "max_live_parked = 2.5", "max_live_parked = true"])
def test_a_bad_setting_is_refused_naming_it(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=r"node.toml is not a valid .*\[flows\]"):
        load_node_config(_config(tmp_path, f"[flows]\n{line}\n"))
