"""The ``CommercialPaper`` contract: an issuer's promise to pay the holder a face value in cash
at maturity.

Papers are grouped by their terms (issuance, face value, maturity: everything but the owner).
A transaction with commercial paper carries exactly one ``CommercialPaper`` command:

* **Issue** creates paper and consumes none. The issuer of each new paper signs, its face value
  is positive, and the transaction has a time window that ends (``until_time``) no later than
  the paper's maturity, so the paper is issued before it matures.
* **Move** changes only owners: each group of terms has as many outputs as inputs, and the
  owner of every input signs.
* **Redeem** destroys matured paper: no output shares a redeemed paper's terms, the time window
  starts (``from_time``) at or after maturity, the owner signs, and in the same transaction
  the owner receives cash of exactly the face value, in the face value's issued token (net of
  any such cash the owner spends in it; papers of one owner and token are added up).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from fibers import Party, serializable
from finance._amount import Amount, amount_problem
from finance._cash import Cash, cash_state_problem
from finance._tokens import (
    Issued,
    PartyAndReference,
    issued_problem,
    party_and_reference_problem,
    party_problem,
)
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

__all__ = ["CommercialPaper"]

_Terms = tuple[PartyAndReference, Amount[Issued], datetime]


@contract
class CommercialPaper(Contract):
    """Verifies commercial paper transactions (the rules are in this module's docstring)."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class State(OwnableState):
        """Paper issued under ``issuance`` (issuer and reference), held by ``owner``, paying
        ``face_value`` at ``maturity`` (timezone-aware; stored in UTC so equal instants have
        equal bytes)."""

        issuance: PartyAndReference
        owner: Party
        face_value: Amount[Issued]
        maturity: datetime

        def __post_init__(self) -> None:
            if isinstance(self.maturity, datetime) and self.maturity.utcoffset() is not None:
                object.__setattr__(self, "maturity", self.maturity.astimezone(UTC))
            problem = paper_problem(self)
            if problem is not None:
                raise ValueError(problem)

        @property
        def participants(self) -> list[Party]:
            """The owner alone."""
            return [self.owner]

        @property
        def terms(self) -> _Terms:
            """Everything but the owner: what a Move must leave unchanged."""
            return self.issuance, self.face_value, self.maturity

        def with_new_owner(
            self, new_owner: Party
        ) -> tuple[CommercialPaper.Move, CommercialPaper.State]:
            """A ``CommercialPaper.Move`` and this paper held by ``new_owner``."""
            return CommercialPaper.Move(), dataclasses.replace(self, owner=new_owner)

        def __str__(self) -> str:
            return (f"paper of {self.issuance} for {self.face_value} maturing "
                    f"{self.maturity.isoformat()}")

    @serializable
    @dataclass(frozen=True, slots=True)
    class Issue(CommandData):
        """Create paper: signed by its issuer, within a time window before maturity."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class Move(CommandData):
        """Change the owner of paper: signed by the current owner."""

    @serializable
    @dataclass(frozen=True, slots=True)
    class Redeem(CommandData):
        """Destroy matured paper against payment of its face value: signed by the owner."""

    def verify(self, ltx: LedgerTransaction) -> None:
        """Accept ``ltx`` only if its paper obeys the rule of its one command (module
        docstring); otherwise raise ``RequirementFailed`` naming the rule and the paper."""
        commands = [c for c in ltx.commands if isinstance(c.value, _COMMANDS)]
        require(len(commands) == 1, "a transaction with commercial paper has exactly one "
                                    "CommercialPaper command (Issue, Move or Redeem), not "
                                    f"{len(commands)}")
        command, signers = commands[0].value, frozenset(commands[0].signers)
        groups = _groups(ltx, contract_name(type(self)))
        if isinstance(command, CommercialPaper.Issue):
            _verify_issue(ltx, groups, signers)
        elif isinstance(command, CommercialPaper.Move):
            _verify_move(groups, signers)
        else:
            _verify_redeem(ltx, groups, signers)


_COMMANDS = (CommercialPaper.Issue, CommercialPaper.Move, CommercialPaper.Redeem)
_Group = tuple[list[CommercialPaper.State], list[CommercialPaper.State]]


def paper_problem(paper: object) -> str | None:
    """What makes ``paper`` not a well-formed :class:`CommercialPaper.State`, or None (for
    states decoded from the wire, which are built without their constructors)."""
    if type(paper) is not CommercialPaper.State:
        return f"expected a CommercialPaper.State, got {type(paper).__qualname__}"
    problem = (party_and_reference_problem(paper.issuance) or party_problem(paper.owner)
               or amount_problem(paper.face_value))
    problem = problem or issued_problem(paper.face_value.token)
    maturity: object = paper.maturity
    if problem is None and (not isinstance(maturity, datetime) or maturity.utcoffset() is None):
        problem = (f"maturity must be a timezone-aware datetime, got {maturity!r:.60}: use e.g. "
                   "datetime(2030, 1, 1, tzinfo=datetime.UTC)")
    return problem


def _groups(ltx: LedgerTransaction, name: str) -> dict[_Terms, _Group]:
    """Input and output papers by terms, in order of first appearance, each checked."""
    # Messages are formatted only for a refusal: verify runs on every transaction received.
    groups: dict[_Terms, _Group] = {}
    states: list[tuple[object, TransactionState[ContractState], int]] = [
        (sar.ref, sar.state, 0) for sar in ltx.inputs]
    states += [(i, state, 1) for i, state in enumerate(ltx.outputs)]
    for at, tstate, side in states:
        paper = tstate.data
        if not isinstance(paper, CommercialPaper.State):
            continue
        where = ("input", "output")[side]
        problem = paper_problem(paper)
        if problem is not None:
            raise RequirementFailed(f"{where} {at} is a malformed CommercialPaper.State: "
                                    f"{problem}")
        if tstate.contract != name:
            raise RequirementFailed(f"{where} {at} is a CommercialPaper.State governed by "
                                    f"{tstate.contract!r}, not {name!r}")
        groups.setdefault(paper.terms, ([], []))[side].append(paper)
    return groups


def _verify_issue(
    ltx: LedgerTransaction, groups: dict[_Terms, _Group], signers: frozenset[bytes]
) -> None:
    require(not any(inputs for inputs, _ in groups.values()),
            "an Issue creates commercial paper and consumes none: move or redeem existing "
            "paper in a transaction of its own")
    window = ltx.time_window
    until = None if window is None else window.until_time
    if until is None:
        raise RequirementFailed("an Issue of commercial paper needs a time window with an end "
                                "(until_time) no later than the paper's maturity")
    for _, outputs in groups.values():
        for paper in outputs:
            issuer = paper.issuance.party
            if issuer.owning_key not in signers:
                raise RequirementFailed(f"the issuer {issuer.name} must sign the Issue of "
                                        f"{paper}")
            if paper.face_value.quantity <= 0:
                raise RequirementFailed(f"the face value of {paper} must be positive")
            if until > paper.maturity:
                raise RequirementFailed(f"{paper} must be issued before it matures, but the "
                                        f"time window ends at {until.isoformat()}")


def _verify_move(groups: dict[_Terms, _Group], signers: frozenset[bytes]) -> None:
    for inputs, outputs in groups.values():
        if len(inputs) != len(outputs):
            raise RequirementFailed(f"a Move changes only the owner of {(inputs or outputs)[0]}:"
                                    f" it consumes {len(inputs)} and creates {len(outputs)} "
                                    "with those terms")
        for spent in inputs:
            if spent.owner.owning_key not in signers:
                raise RequirementFailed(f"the owner {spent.owner.name} must sign the Move of "
                                        f"{spent}")


def _verify_redeem(
    ltx: LedgerTransaction, groups: dict[_Terms, _Group], signers: frozenset[bytes]
) -> None:
    window = ltx.time_window
    start = None if window is None else window.from_time
    if start is None:
        raise RequirementFailed("a Redeem of commercial paper needs a time window with a start "
                                "(from_time) at or after the paper's maturity")
    due: dict[tuple[Party, Issued], int] = defaultdict(int)
    for inputs, outputs in groups.values():
        if not inputs:
            raise RequirementFailed(f"a Redeem creates no paper, but {outputs[0]} is an output")
        for paper in inputs:
            require(not outputs, f"redeemed paper is destroyed, but {paper} is an output")
            require(start >= paper.maturity,
                    f"{paper} must have matured before it is redeemed, but the time window "
                    f"starts at {start.isoformat()}")
            require(paper.owner.owning_key in signers,
                    f"the owner {paper.owner.name} must sign the Redeem of {paper}")
            due[paper.owner, paper.face_value.token] += paper.face_value.quantity
    for (owner, token), quantity in due.items():
        received = _cash_to(owner, token, ltx)
        require(received == quantity,
                f"the owner {owner.name} must receive the face value "
                f"({Amount(quantity, token)}) in cash when redeeming, but receives "
                f"{Amount(max(received, 0), token)}")


def _cash_to(owner: Party, token: Issued, ltx: LedgerTransaction) -> int:
    """Units of ``token`` that ``owner`` gains in ``ltx``: cash outputs owned minus inputs."""
    def total(states: list[Cash.State]) -> int:
        return sum(s.amount.quantity for s in states if cash_state_problem(s) is None
                   and s.owner.owning_key == owner.owning_key and s.amount.token == token)
    return total(ltx.outputs_of_type(Cash.State)) - total(ltx.inputs_of_type(Cash.State))
