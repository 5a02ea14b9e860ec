"""Ledger invariants under random issue/move/exit sequences run through FinalityFlow and a
notary: value is never created or destroyed, and no state is ever consumed twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import FlowLogic, Party, initiated_by, initiating_flow, serializable, suspendable
from fibers._node import Node
from ledger import (
    CommandData,
    Contract,
    ContractState,
    FinalityFlow,
    LedgerTransaction,
    NotaryError,
    NotaryException,
    ReceiveFinalityFlow,
    SecureHash,
    SignedTransaction,
    StateAndRef,
    StateRef,
    TransactionBuilder,
    contract,
    require,
)
from ledger.testing import MockNetwork

# ----- a small conserving token ---------------------------------------------------------------


@serializable
@dataclass(frozen=True)
class Token(ContractState):
    owner: Party
    amount: int

    @property
    def participants(self) -> list[Party]:
        return [self.owner]


@contract
class TokenContract(Contract):
    """Issue and Exit change the supply by exactly their amount; Move conserves it."""

    @serializable
    @dataclass(frozen=True)
    class Issue(CommandData):
        amount: int

    @serializable
    @dataclass(frozen=True)
    class Move(CommandData):
        pass

    @serializable
    @dataclass(frozen=True)
    class Exit(CommandData):
        amount: int

    def verify(self, ltx: LedgerTransaction) -> None:
        inputs = [sar.state.data for sar in ltx.inputs if isinstance(sar.state.data, Token)]
        outputs = ltx.outputs_of_type(Token)
        require(all(t.amount > 0 for t in outputs), "every output holds a positive amount")
        require(len(ltx.commands) == 1, "exactly one command")
        command = ltx.commands[0]
        signers = set(command.signers)
        require(all(t.owner.owning_key in signers for t in inputs), "input owners sign")
        supply_in, supply_out = sum(t.amount for t in inputs), sum(t.amount for t in outputs)
        match command.value:
            case TokenContract.Issue(amount):
                require(not inputs and amount > 0, "an issue spends nothing")
                require(supply_out == amount, "an issue creates exactly its amount")
            case TokenContract.Exit(amount):
                require(bool(inputs) and amount > 0, "an exit spends tokens")
                require(supply_in == supply_out + amount, "an exit destroys exactly its amount")
            case TokenContract.Move():
                require(bool(inputs), "a move spends tokens")
                require(supply_in == supply_out, "a move conserves the amount")
            case _:
                require(False, "a Token command")


@initiating_flow
class Finalise(FlowLogic[SignedTransaction]):
    """Build a Token transaction signed by this node and run FinalityFlow on it."""

    def __init__(self, notary: Party, inputs: list[StateAndRef[Any]],
                 outputs: list[tuple[Party, int]], command: CommandData) -> None:
        self.notary, self.inputs, self.outputs, self.command = notary, inputs, outputs, command

    @suspendable
    def call(self) -> SignedTransaction:
        builder = TransactionBuilder(self.notary, privacy_salt=self.random_bytes(32))
        for sar in self.inputs:
            builder.add_input_state(sar)
        for owner, amount in self.outputs:
            builder.add_output_state(Token(owner, amount), TokenContract)
        builder.add_command(self.command, self.our_identity.owning_key)
        stx = self.service_hub.key_management.sign_transaction(builder.to_signed_transaction([]))
        return self.sub_flow(FinalityFlow(stx))


@initiated_by(Finalise)
class ReceiveFinalised(FlowLogic[SignedTransaction]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveFinalityFlow(self.other))


# ----- the model --------------------------------------------------------------------------------

NAMES = ("Alice", "Bob", "Charlie")
Action = tuple[str, int, int, int]
actions = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.integers(0, 2), st.integers(1, 100), st.just(0)),
        st.tuples(st.just("move"), st.integers(0, 50), st.integers(0, 2), st.integers(0, 100)),
        st.tuples(st.just("exit"), st.integers(0, 50), st.integers(1, 100), st.just(0)),
        # A move of a state that was already consumed, if there is one.
        st.tuples(st.just("respend"), st.integers(0, 50), st.integers(0, 2), st.integers(0, 100)),
    ),
    min_size=2, max_size=10,
)


class Ledger:
    """The network, every Token state ever produced, and the supply that should exist."""

    def __init__(self) -> None:
        self.network = MockNetwork()
        self.network.create_notary_node("Notary")
        self.nodes = [self.network.create_node(name) for name in NAMES]
        self.produced: list[StateAndRef[Any]] = []
        self.supply = 0

    def apply(self, action: Action) -> None:
        kind, a, b, c = action
        if kind == "issue":
            owner = self.nodes[a]
            self._finalise(owner, [], [(owner.party, b)], TokenContract.Issue(b))
            self.supply += b
            return
        pool = self.produced
        if kind == "respend":
            kind, pool = "move", [sar for sar in pool if self._consumed(sar.ref)]
        if not pool:
            return
        sar = pool[a % len(pool)]
        token: Token = sar.state.data
        owner = self.network.node(token.owner.name)
        spent = self._consumed(sar.ref)
        if kind == "move":
            receiver = self.nodes[b].party
            paid = max(1, token.amount * c // 100)
            outputs = [(receiver, paid)] + ([(token.owner, token.amount - paid)]
                                            if paid < token.amount else [])
            ok = self._finalise(owner, [sar], outputs, TokenContract.Move(), spent)
        else:
            exited = min(b, token.amount)
            change = [(token.owner, token.amount - exited)] if exited < token.amount else []
            ok = self._finalise(owner, [sar], change, TokenContract.Exit(exited), spent)
            self.supply -= exited if ok else 0

    def _finalise(self, node: Node, inputs: list[StateAndRef[Any]],
                  outputs: list[tuple[Party, int]], command: CommandData,
                  double_spend: bool = False) -> bool:
        handle = node.start_flow(Finalise(self.network.notary, inputs, outputs, command))
        self.network.run_network()
        error = handle.result.exception(timeout=0)
        if double_spend:
            assert isinstance(error, NotaryException), error
            assert isinstance(error.error, NotaryError.Conflict)
            assert set(error.error.consumed) == {sar.ref for sar in inputs}
            return False
        assert error is None, error
        stx = handle.result.result(timeout=0)
        self.produced += [stx.tx.out_ref(i) for i in range(len(stx.tx.outputs))]
        return True

    def _consumed(self, ref: StateRef) -> bool:
        notary = self.network.node("Notary")
        return notary.services.uniqueness.consumed_by(ref) is not None

    def check_invariants(self) -> None:
        held: list[StateAndRef[Any]] = []
        for node in self.nodes:
            mine = node.services.vault.query(Token)
            assert all(sar.state.data.owner == node.party for sar in mine)
            held += mine
        assert sum(sar.state.data.amount for sar in held) == self.supply
        assert len({sar.ref for sar in held}) == len(held)
        consumer: dict[StateRef, SecureHash] = {}
        for node in self.network.nodes:
            for stx in node.services.validated_transactions.all():
                for ref in stx.tx.inputs:
                    assert consumer.setdefault(ref, stx.id) == stx.id, f"{ref} spent twice"
        notary = self.network.node("Notary")
        for ref, tx_id in consumer.items():
            assert notary.services.uniqueness.consumed_by(ref) == tx_id
        assert not {sar.ref for sar in held} & consumer.keys()


@settings(max_examples=25, deadline=None)
@given(actions)
def test_random_ledger_activity_conserves_value_and_never_double_spends(
        steps: list[Action]) -> None:
    ledger = Ledger()
    try:
        for step in steps:
            ledger.apply(step)
            ledger.check_invariants()
    finally:
        ledger.network.stop_nodes()
