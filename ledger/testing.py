"""Test support for the ledger: a ``MockNetwork`` whose nodes carry the ledger services, and
helpers that build, sign and record transactions without running flows.

The ledger services need the node itself (its storage, step writes, commit hooks) and must be
in place before the node restores its flows, so they are installed by the node's ``setup``
hook (``Node(setup=...)``, called by its constructor before the restore). ``restart_node``
builds fresh ledger services on the new node (their indexes reloaded from its storage) and
carries every other installed service over.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from fibers import Node, NodeIdentity, Party, serializable
from fibers.testing import MockNetwork as EngineMockNetwork
from ledger._builder import TransactionBuilder
from ledger._contracts import Contract, contract, require
from ledger._hub import LedgerServiceHub, install_ledger_services
from ledger._services import LEDGER_SERVICE_NAMES, notary_identities
from ledger._states import CommandData, ContractState, OwnableState, StateAndRef
from ledger._transactions import LedgerTransaction, SignedTransaction

__all__ = [
    "DummyContract",
    "DummyState",
    "MockNetwork",
    "issue_for_test",
    "record_for_test",
    "sign_for_test",
    "spend_for_test",
]


class MockNetwork(EngineMockNetwork[LedgerServiceHub]):
    """``fibers.testing.MockNetwork`` with the ledger services on every node, and notaries.

    ``create_notary_node`` makes a node that is also a notary (validating or not); ``notary``
    is the first one's party, and every node's ``service_hub.notary_identities()`` lists them.
    """

    def __init__(self, base_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(base_dir, hub=LedgerServiceHub, **options)
        self._notary_nodes: dict[str, bool] = {}  # name -> validating

    def create_notary_node(
        self, name: str = "Notary", validating: bool = True
    ) -> Node[LedgerServiceHub]:
        """A new node called ``name`` that runs a notary (``validating`` or not)."""
        self._notary_nodes[name] = validating
        try:
            return self.create_node(name)
        except BaseException:
            del self._notary_nodes[name]
            raise

    @property
    def notary(self) -> Party:
        """The party of the first notary node; ``LookupError`` if there is none yet."""
        notaries = notary_identities(self.network_map)
        if not notaries:
            raise LookupError("this network has no notary yet: call create_notary_node() first")
        return notaries[0]

    def _node_setup(self, identity: NodeIdentity) -> Callable[[Node[LedgerServiceHub]], object]:
        name = identity.party.name
        return functools.partial(install_ledger_services, notary=name in self._notary_nodes,
                                 validating=self._notary_nodes.get(name, False))

    def restart_node(self, node: Node[LedgerServiceHub]) -> Node[LedgerServiceHub]:
        """See ``fibers.testing.MockNetwork.restart_node``; the new node gets fresh ledger
        services over its storage, not the old node's."""
        for name in LEDGER_SERVICE_NAMES:
            node.services.installed.pop(name, None)
        return super().restart_node(node)

    def __enter__(self) -> Self:
        return self


# ----- a dummy state and contract -----------------------------------------------------------------

@serializable
@dataclass(frozen=True)
class DummyState(OwnableState):
    """An ownable state carrying an integer ``magic`` value, governed by ``DummyContract``."""

    owner: Party
    magic: int

    @property
    def participants(self) -> list[Party]:
        return [self.owner]

    def with_new_owner(self, new_owner: Party) -> tuple[CommandData, OwnableState]:
        return DummyContract.Move(), dataclasses.replace(self, owner=new_owner)


@contract
class DummyContract(Contract):
    """``Issue`` creates magic from nothing; ``Move`` conserves it and is signed by the owner
    of every input."""

    @serializable
    @dataclass(frozen=True)
    class Issue(CommandData):
        """Create ``DummyState``s."""

    @serializable
    @dataclass(frozen=True)
    class Move(CommandData):
        """Hand ``DummyState``s to new owners."""

    def verify(self, ltx: LedgerTransaction) -> None:
        outputs, inputs = ltx.outputs_of_type(DummyState), ltx.inputs_of_type(DummyState)
        require(all(s.magic >= 0 for s in outputs), "every output's magic is non-negative")
        issues = ltx.commands_of_type(DummyContract.Issue)
        moves = ltx.commands_of_type(DummyContract.Move)
        require(len(issues) + len(moves) == 1, "exactly one DummyContract command")
        if issues:
            require(not inputs, "an Issue consumes no DummyState")
            return
        require(sum(s.magic for s in inputs) == sum(s.magic for s in outputs),
                "a Move conserves magic")
        signers = set(moves[0].signers)
        require(all(s.owner.owning_key in signers for s in inputs),
                "the owner of every input signs the Move")


# ----- transactions without flows -----------------------------------------------------------------

def issue_for_test(
    node: Node[LedgerServiceHub],
    state: ContractState | Iterable[ContractState],
    contract: str | type[Contract] = DummyContract,
    notary: Party | None = None,
    *,
    command: CommandData | None = None,
    salt: bytes | None = None,
) -> SignedTransaction:
    """Issue ``state`` (or each of several) on ``node``: a transaction with those outputs
    under ``contract`` and ``notary`` (default: the network's first), ``command`` signed by
    ``node`` (default ``DummyContract.Issue()``), signed by ``node`` and recorded there."""
    states = [state] if isinstance(state, ContractState) else list(state)
    builder = TransactionBuilder(_notary_for(node, notary), privacy_salt=salt)
    for output in states:
        builder.add_output_state(output, contract)
    builder.add_command(_command(command, contract, DummyContract.Issue()), node.party.owning_key)
    stx = sign_for_test(builder.to_signed_transaction([]), node)
    record_for_test(stx, node)
    return stx


def spend_for_test(
    node: Node[LedgerServiceHub],
    inputs: Sequence[StateAndRef[ContractState]],
    outputs: Iterable[ContractState],
    contract: str | type[Contract] = DummyContract,
    *,
    command: CommandData | None = None,
    signers: Iterable[Node[LedgerServiceHub]] = (),
    salt: bytes | None = None,
) -> SignedTransaction:
    """Spend ``inputs`` into ``outputs`` under ``contract`` with ``command`` (default
    ``DummyContract.Move()``) required of the inputs' owners (their participants, for states
    that are not ownable); signed by ``node`` and each of ``signers`` with every required key
    they hold (add the notary node to get its signature) and recorded on ``node``."""
    builder = TransactionBuilder(privacy_salt=salt)
    for sar in inputs:
        builder.add_input_state(sar)
    for output in outputs:
        builder.add_output_state(output, contract)
    keys = {key for sar in inputs for key in _owner_keys(sar.state.data)}
    if not keys:
        keys = {node.party.owning_key}
    builder.add_command(_command(command, contract, DummyContract.Move()), *sorted(keys))
    stx = sign_for_test(builder.to_signed_transaction([]), node, *signers)
    record_for_test(stx, node)
    return stx


def sign_for_test(stx: SignedTransaction, *nodes: Node[LedgerServiceHub]) -> SignedTransaction:
    """``stx`` with a signature by every required key (``required_signing_keys``) that one of
    ``nodes`` holds and that has not signed yet."""
    for node in nodes:
        keys = node.services.key_management
        for key in sorted(keys.our_keys_in(stx.missing_signers)):
            stx = keys.sign_transaction(stx, key)
    return stx


def record_for_test(stx: SignedTransaction, *nodes: Node[LedgerServiceHub]) -> None:
    """Record ``stx`` (unverified) in the transaction storage of each of ``nodes``."""
    for node in nodes:
        node.services.validated_transactions.record(stx)


def _notary_for(node: Node[LedgerServiceHub], notary: Party | None) -> Party:
    if notary is not None:
        return notary
    notaries = notary_identities(node.network_map)
    if not notaries:
        raise ValueError("no notary is registered on this node's network: pass notary=... or "
                         "create one with MockNetwork.create_notary_node()")
    return notaries[0]


def _command(
    command: CommandData | None, contract: str | type[Contract], dummy: CommandData
) -> CommandData:
    if command is not None:
        return command
    if contract is DummyContract or contract == f"{__name__}:DummyContract":
        return dummy
    raise ValueError(f"pass command=... to use contract {contract!r}: the default command "
                     "is DummyContract's")


def _owner_keys(state: ContractState) -> list[bytes]:
    if isinstance(state, OwnableState):
        return [state.owner.owning_key]
    return [party.owning_key for party in state.participants]
