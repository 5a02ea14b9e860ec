"""TEST-ONLY node process for the remote shell's tests (tests/cli/test_repl_remote.py): until
``fibers node run`` serves a bootstrapped node directory, this script runs the in-memory
Notary, BankA and BankB of ``tests.cli.rpc_nodes`` on their own threads and serves BankA's
RPC as configured in ``NODE_DIR/node.toml``. It prints ``ready <url>`` once serving, and stops
cleanly on SIGTERM, SIGINT or the RPC's ``shutdown``. Not a deployment tool.

    python -m tests.cli.rpc_node_server BASE_DIR NODE_DIR
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from tests.cli.rpc_nodes import RpcNodes


def main(base: Path, node_dir: Path) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    nodes = RpcNodes(base, node_dir=node_dir, on_shutdown=stop.set)
    try:
        print(f"ready {nodes.server.url}", flush=True)
        stop.wait()
    finally:
        nodes.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
