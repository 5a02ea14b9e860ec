"""The network behind ``fibers shell --embedded``: the demo's embedded network (a notary and
two banks under a run directory), one ``NodeOps`` per node, a little cash and paper to work
with, and crashing and restarting nodes for the shell."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cli._embedded import EmbeddedNetwork
from cli._ops import NodeOps
from fibers import Node
from finance import Amount, CommercialPaper, SellerStarter, TwoPartyTradeFlow

__all__ = ["ACCEPTABLE_PRICE", "EmbeddedShellNetwork"]

ACCEPTABLE_PRICE = Amount.parse("1000.00 USD")
"""The most a bank's buyer side pays for commercial paper sold to it with SellerStarter."""


class EmbeddedShellNetwork:
    """Notary, SellerBank and BuyerBank on their own storage under ``base_dir``, moved only by
    the shell (through ``NodeOps.pump``). Implements the shell's ``NetworkControl``."""

    def __init__(self, base_dir: Path) -> None:
        self.net = EmbeddedNetwork(base_dir)
        self.ops: dict[str, NodeOps] = {
            node.party.name: NodeOps(functools.partial(self.net.node, node.party.name),
                                     driver=self.net)
            for node in self.net.nodes
        }
        for node in (self.net.seller, self.net.buyer):
            self._register_buyer(node)

    def _register_buyer(self, node: Node) -> None:
        """A bank buys the commercial paper another sells it (SellerStarter) for up to
        ``ACCEPTABLE_PRICE``. Registrations live in the node object: a restarted node needs
        them again."""
        notary = self.net.notary
        node.register_initiated_flow(
            SellerStarter,
            lambda party: TwoPartyTradeFlow.Buyer(party, notary, ACCEPTABLE_PRICE,
                                                  CommercialPaper.State))

    def prepare(self) -> list[str]:
        """Issue BuyerBank two cash states of 1,000.00 USD and SellerBank a commercial paper
        of 1,000.00 USD maturing in 30 days, as the demo does, by starting the flows through
        ``NodeOps``. Returns a line describing each; raises if a flow fails."""
        notary = self.net.notary.name
        seller, buyer = self.net.seller.party.name, self.net.buyer.party.name
        done = []
        for reference in ("01", "02"):
            self._run(buyer, "CashIssueFlow",
                      {"amount": "1000.00 USD", "issuer_ref": reference, "notary": notary})
            done.append(f"{buyer} issued itself 1,000.00 USD (ref {reference})")
        self._run(seller, "CommercialPaperIssueFlow",
                  {"face_value": "1000.00 USD", "maturity": "now+30d", "notary": notary})
        done.append(f"{seller} issued itself commercial paper of 1,000.00 USD maturing in "
                    "30 days")
        return done

    def _run(self, node: str, flow: str, args: dict[str, str]) -> None:
        ops = self.ops[node]
        run_id = ops.start_flow(flow, args).run_id
        ops.pump(lambda: ops.outcome(run_id) is not None, time_budget=30.0)
        outcome = ops.outcome(run_id)
        if outcome is None or outcome.status != "COMPLETED":
            raise RuntimeError(f"preparing the embedded network: {flow} on {node} did not "
                               f"complete: {outcome.error if outcome else 'still running'}")

    # ----- NetworkControl ------------------------------------------------------------------------

    def is_up(self, name: str) -> bool:
        """Whether the node called ``name`` runs."""
        return name not in self.net.down

    def crash(self, name: str) -> None:
        """Stop the node as a crash would; messages for it wait in the network."""
        self.net.crash(name)

    def restart(self, name: str) -> int:
        """Start the node again from its storage; returns how many flows it restored."""
        node = self.net.restart(name)
        if name != self.net.notary.name:
            self._register_buyer(node)
        return len(node.flows()) + len(node.hospital())

    # ----- the py prompt -------------------------------------------------------------------------

    def namespace(self, name: str) -> dict[str, Any]:
        """What ``py`` adds for the node called ``name``: the node object and the network."""
        return {"node": self.net.node(name), "net": self.net}

    def close(self) -> None:
        """Stop every node (their storage stays under the run directory)."""
        self.net.close()
