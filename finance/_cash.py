"""The ``Cash`` contract: claims on an issuer for an amount of currency, that move between owners
and are conserved per issuer, reference and currency.

Cash states are grouped by token (:class:`~finance.Issued`: issuer, reference and currency).
Each group is verified under exactly one rule, chosen in this order:

* **Exit**, when a ``Cash.Exit`` names the group's token: the issuer takes the exited value off
  the ledger. inputs - outputs == exit amount; the issuer and every input owner sign the Exit.
* **Issue**, when the transaction has a ``Cash.Issue`` and the group's outputs exceed its
  inputs: the issuer signs an Issue command, and every input owner an Issue or a Move.
* **Move**, otherwise: inputs == outputs, and every input owner signs a ``Cash.Move``.

Every cash output holds a positive amount; every cash state is governed by this contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fibers import Party, serializable
from finance._amount import Amount, amount_problem, format_quantity
from finance._tokens import Issued, currency_decimals, issued_problem, party_problem
from ledger import (
    CommandData,
    Contract,
    ContractState,
    LedgerTransaction,
    OwnableState,
    RequirementFailed,
    TransactionState,
    contract,
    contract_name,
    require,
)

__all__ = ["Cash"]


@contract
class Cash(Contract):
    """Verifies cash transactions (the rules are in this module's docstring)."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class State(OwnableState):
        """``amount`` of an issued currency, owned by ``owner``."""

        amount: Amount[Issued]
        owner: Party

        def __post_init__(self) -> None:
            problem = cash_state_problem(self)
            if problem is not None:
                raise ValueError(problem)

        @property
        def participants(self) -> list[Party]:
            """The owner alone."""
            return [self.owner]

        def with_new_owner(self, new_owner: Party) -> tuple[Cash.Move, Cash.State]:
            """A ``Cash.Move`` and this cash owned by ``new_owner``."""
            return Cash.Move(), Cash.State(self.amount, new_owner)

        def __str__(self) -> str:
            return f"{self.amount} owned by {self.owner.name}"

    @serializable
    @dataclass(frozen=True, slots=True)
    class Issue(CommandData):
        """Create cash: signed by the issuer of every token whose outputs exceed its inputs."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class Move(CommandData):
        """Hand cash to new owners: signed by the owner of every input it moves."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class Exit(CommandData):
        """Take ``amount`` off the ledger: signed by its issuer and the owners of the inputs."""

        amount: Amount[Issued]

    def verify(self, ltx: LedgerTransaction) -> None:
        """Accept ``ltx`` only if every group of cash states obeys its rule (module docstring);
        otherwise raise ``RequirementFailed`` naming the rule and the group."""
        groups = _groups(ltx, contract_name(type(self)))
        commands = _Commands(ltx)
        issued_any = False
        for token, group in groups.items():
            exit_command = commands.exits.pop(token, None)
            if exit_command is not None:
                _verify_exit(token, group, *exit_command)
            elif commands.issue_signers is not None and group.outputs > group.inputs:
                _verify_issue(token, group, commands.issue_signers, commands.move_signers)
                issued_any = True
            else:
                _verify_move(token, group, commands.move_signers)
        if commands.exits:
            stray, _ = next(iter(commands.exits.values()))
            raise RequirementFailed(f"the exit of {stray} consumes no cash of that token: exit "
                                    "only cash the transaction spends")
        require(commands.issue_signers is None or issued_any,
                "a Cash.Issue must create cash: no token's outputs exceed its inputs")


def cash_state_problem(state: object) -> str | None:
    """What makes ``state`` not a well-formed :class:`Cash.State`, or None (for states decoded
    from the wire, which are built without their constructors)."""
    if type(state) is not Cash.State:
        return f"expected a Cash.State, got {type(state).__qualname__}"
    problem = amount_problem(state.amount) or party_problem(state.owner)
    return problem or issued_problem(state.amount.token)


@dataclass(slots=True)
class _Group:
    """Totals of one token's cash in a transaction, and the owners of its inputs."""

    inputs: int = 0
    outputs: int = 0
    owners: dict[bytes, Party] = field(default_factory=dict)


def _groups(ltx: LedgerTransaction, name: str) -> dict[Issued, _Group]:
    """The transaction's cash by token, in order of first appearance, each state checked."""
    groups: dict[Issued, _Group] = {}
    for sar in ltx.inputs:
        state = _checked(sar.state, name, "input", sar.ref)
        if state is not None:
            group = groups.setdefault(state.amount.token, _Group())
            group.inputs += state.amount.quantity
            group.owners.setdefault(state.owner.owning_key, state.owner)
    for index, output in enumerate(ltx.outputs):
        state = _checked(output, name, "output", index)
        if state is not None:
            if state.amount.quantity <= 0:
                raise RequirementFailed(f"output {index} holds no {state.amount.token}: cash "
                                        "outputs must hold a positive amount")
            groups.setdefault(state.amount.token, _Group()).outputs += state.amount.quantity
    return groups


def _checked(
    tstate: TransactionState[ContractState], name: str, side: str, at: object
) -> Cash.State | None:
    # Messages are formatted only for a refusal: verify runs on every transaction received.
    state = tstate.data
    if not isinstance(state, Cash.State):
        return None
    problem = cash_state_problem(state)
    if problem is not None:
        raise RequirementFailed(f"{side} {at} is a malformed Cash.State: {problem}")
    if tstate.contract != name:
        raise RequirementFailed(f"{side} {at} is a Cash.State governed by "
                                f"{tstate.contract!r}: cash states must be governed by {name!r}")
    return state


class _Commands:
    """The Cash commands of a transaction, by kind."""

    def __init__(self, ltx: LedgerTransaction) -> None:
        issues = ltx.commands_of_type(Cash.Issue)
        self.issue_signers = _signers(c.signers for c in issues) if issues else None
        self.move_signers = _signers(c.signers for c in ltx.commands_of_type(Cash.Move))
        # Invariant: at most one Exit per token; popped by verify as each group is checked.
        self.exits: dict[Issued, tuple[Amount[Issued], frozenset[bytes]]] = {}
        for command in ltx.commands:
            if not isinstance(command.value, Cash.Exit):
                continue
            amount = command.value.amount
            problem = amount_problem(amount) or issued_problem(amount.token)
            require(problem is None, f"a Cash.Exit holds a malformed amount: {problem}")
            require(amount.quantity > 0, f"the exit of {amount} must be of a positive amount")
            require(amount.token not in self.exits,
                    f"one Cash.Exit per token, but {amount.token} has two")
            self.exits[amount.token] = (amount, frozenset(command.signers))


def _signers(signer_lists: Iterable[tuple[bytes, ...]]) -> frozenset[bytes]:
    return frozenset(key for signers in signer_lists for key in signers)


def _money(quantity: int, token: Issued) -> str:
    return f"{format_quantity(quantity, currency_decimals(token.product))} {token.product}"


def _verify_move(token: Issued, group: _Group, signers: frozenset[bytes]) -> None:
    if group.inputs != group.outputs:
        hint = "; only a Cash.Issue signed by the issuer creates cash" if (
            group.outputs > group.inputs) else ""
        raise RequirementFailed(f"for {token}, inputs ({_money(group.inputs, token)}) must "
                                f"equal outputs ({_money(group.outputs, token)}) in a "
                                f"move{hint}")
    _require_owners_signed(token, group, signers, "Cash.Move")


def _verify_issue(
    token: Issued, group: _Group, signers: frozenset[bytes], move_signers: frozenset[bytes]
) -> None:
    if token.issuer.owning_key not in signers:
        issued = _money(group.outputs - group.inputs, token)
        raise RequirementFailed(f"for {token}, the issue of {issued} must be signed by the "
                                f"issuer {token.issuer.name}")
    _require_owners_signed(token, group, signers | move_signers, "Cash.Issue or Cash.Move")


def _verify_exit(
    token: Issued, group: _Group, amount: Amount[Issued], signers: frozenset[bytes]
) -> None:
    require(group.inputs - group.outputs == amount.quantity,
            f"for {token}, inputs ({_money(group.inputs, token)}) minus outputs "
            f"({_money(group.outputs, token)}) must equal the exit "
            f"({_money(amount.quantity, token)})")
    require(token.issuer.owning_key in signers,
            f"for {token}, the exit must be signed by the issuer {token.issuer.name}")
    _require_owners_signed(token, group, signers, "Cash.Exit")


def _require_owners_signed(
    token: Issued, group: _Group, signers: frozenset[bytes], command: str
) -> None:
    missing = [owner.name for key, owner in group.owners.items() if key not in signers]
    if missing:
        raise RequirementFailed(f"for {token}, the {command} must be signed by every input "
                                f"owner, but not by {', '.join(missing)}")
