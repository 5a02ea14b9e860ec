"""Transactions: wire form (what is hashed and signed), signed form, and resolved form.

``WireTransaction`` --sign its id--> ``SignedTransaction`` --resolve inputs--> ``LedgerTransaction``
--``verify()``--> every contract involved accepts it.

The id of a ``WireTransaction`` is a Merkle root over its component groups (the exact scheme is
in ``ledger._merkle``). Signatures are Ed25519 over ``id.bytes``. Instances decoded from the wire
are built without their constructors, so the checks a peer's transaction needs (structure,
signatures, resolution, contracts) run in ``verify_signatures``, ``to_ledger_transaction`` and
``LedgerTransaction.verify``, never only at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TypeVar

from fibers import Party, serializable
from fibers.wire import encoded_fields, encoded_items, encoded_once
from ledger._contracts import contract_class, owning_contract
from ledger._crypto import DigitalSignature, SecureHash, describe_key
from ledger._errors import (
    ContractRejection,
    InvalidNotary,
    MalformedTransactionException,
    SignatureInvalidException,
    SignaturesMissingException,
    TransactionResolutionException,
    TransactionVerificationException,
    UnknownContract,
)
from ledger._filtered import FilteredGroup, FilteredTransaction
from ledger._merkle import GROUPS, component_nonce, encoded_group_hash, merkle_root
from ledger._states import (
    Command,
    CommandData,
    ContractState,
    StateAndRef,
    StateRef,
    TimeWindow,
    TransactionState,
)

__all__ = ["LedgerTransaction", "SignedTransaction", "StateResolver", "WireTransaction"]

_T = TypeVar("_T")
SALT_SIZE = 32

StateResolver = Callable[[StateRef], TransactionState[ContractState] | None]
"""Looks up the output a ``StateRef`` points at; returns None or raises ``LookupError`` when this
node does not have its transaction."""


@serializable
@encoded_once
@dataclass(frozen=True)
class WireTransaction:
    """The canonical, hashable content of a transaction.

    ``privacy_salt`` is 32 random bytes so that transactions with equal content have different
    ids. The constructor raises ``ValueError``/``TypeError`` for a structurally invalid
    transaction (see :meth:`structure_problem`).

    Immutable all the way down (its states and commands are frozen values): its id, its
    structure check and its wire encoding are each computed once per instance and kept
    (``fibers.wire.encoded_once``); none of them is pickled.
    """

    inputs: tuple[StateRef, ...]
    outputs: tuple[TransactionState[ContractState], ...]
    commands: tuple[Command, ...]
    notary: Party | None
    time_window: TimeWindow | None
    privacy_salt: bytes

    def __post_init__(self) -> None:
        for name in ("inputs", "outputs", "commands"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problem = self.structure_problem()
        if problem is not None:
            raise ValueError(problem)

    def structure_problem(self) -> str | None:
        """What makes this transaction structurally invalid, or None if nothing does (checked
        once per instance: it cannot change)."""
        kept = self.__dict__.get(_PROBLEM, self)
        if kept is self:
            kept = self.__dict__[_PROBLEM] = self._find_structure_problem()
        assert kept is None or isinstance(kept, str)
        return kept

    def _find_structure_problem(self) -> str | None:
        salt: object = self.privacy_salt
        if type(salt) is not bytes or len(salt) != SALT_SIZE or not any(salt):
            return f"privacy_salt must be {SALT_SIZE} random bytes, got {salt!r:.80}"
        problem = _type_problem(self)
        if problem is None and len(set(self.inputs)) != len(self.inputs):
            twice = next(r for r in self.inputs if self.inputs.count(r) > 1)
            problem = f"input {twice} is spent twice in one transaction"
        needs_notary = bool(self.inputs) or self.time_window is not None
        if problem is None and self.notary is None and needs_notary:
            problem = ("a transaction with inputs or a time window needs a notary to sign it: "
                       "give TransactionBuilder(notary=...) a notary")
        return problem

    def _groups(self) -> tuple[tuple[object, ...], ...]:
        # Invariant: same order as ledger._merkle.GROUPS.
        return (self.inputs, self.outputs, self.commands,
                () if self.notary is None else (self.notary,),
                () if self.time_window is None else (self.time_window,))

    def _nonces(self, group: int, count: int) -> tuple[SecureHash, ...]:
        return tuple(component_nonce(self.privacy_salt, group, i) for i in range(count))

    @cached_property
    def group_hashes(self) -> tuple[SecureHash, ...]:
        """The hash of each component group, in ``ledger._merkle.GROUPS`` order."""
        # Each component's encoding is cut out of the transaction's own encoding, which is
        # kept for sending and storing it: one walk of the transaction serves all three.
        fields = encoded_fields(self)
        groups = (encoded_items(fields["inputs"]), encoded_items(fields["outputs"]),
                  encoded_items(fields["commands"]),
                  [] if self.notary is None else [fields["notary"]],
                  [] if self.time_window is None else [fields["time_window"]])
        return tuple(encoded_group_hash(self.privacy_salt, g, encoded)
                     for g, encoded in enumerate(groups))

    @cached_property
    def id(self) -> SecureHash:
        """The Merkle root over the component groups (computed once)."""
        return merkle_root(self.group_hashes)

    @property
    def required_signing_keys(self) -> frozenset[bytes]:
        """Every command signer, plus the notary's key if there are inputs or a time window."""
        keys = {key for command in self.commands for key in command.signers}
        if self.notary is not None and (self.inputs or self.time_window is not None):
            keys.add(self.notary.owning_key)
        return frozenset(keys)

    def __getstate__(self) -> dict[str, object]:
        # Its fields only: what it keeps (id, hashes, checks, encoding) is made again when
        # needed, and equal transactions pickle to equal bytes whatever was computed on them.
        return {field.name: self.__dict__[field.name] for field in fields(self)}

    def filtered(self, include: Iterable[str]) -> FilteredTransaction:
        """A view revealing only the groups named in ``include`` (names from
        ``ledger._merkle.GROUPS``: inputs, outputs, commands, notary, time_window)."""
        names = set(include)
        unknown = names.difference(GROUPS)
        if unknown:
            raise ValueError(f"unknown component group(s) {', '.join(sorted(unknown))}: choose "
                             f"from {', '.join(GROUPS)}")
        groups = enumerate(zip(GROUPS, self._groups(), strict=True))
        revealed = tuple(FilteredGroup(name, components, self._nonces(g, len(components)))
                         for g, (name, components) in groups if name in names)
        return FilteredTransaction(self.id, self.group_hashes, revealed)

    def out_ref(self, index: int) -> StateAndRef[ContractState]:
        """Output ``index`` with the reference that will locate it once recorded."""
        return StateAndRef(self.outputs[index], StateRef(self.id, index))

    def to_ledger_transaction(self, resolve_state: StateResolver) -> LedgerTransaction:
        """This transaction with its inputs resolved through ``resolve_state``.

        Raises ``MalformedTransactionException`` for a structurally invalid transaction and
        ``TransactionResolutionException`` naming the first input that does not resolve.
        """
        self._check_structure()
        inputs = []
        for ref in self.inputs:
            state = None
            with suppress(LookupError):
                state = resolve_state(ref)
            if not isinstance(state, TransactionState):
                raise TransactionResolutionException(self.id, ref)
            inputs.append(StateAndRef(state, ref))
        return LedgerTransaction(self.id, tuple(inputs), self.outputs, self.commands,
                                 self.notary, self.time_window)

    def verified(self, resolve_state: StateResolver) -> LedgerTransaction:
        """``to_ledger_transaction(resolve_state)`` whose contracts accept it (raises as
        ``LedgerTransaction.verify`` does). Contracts are run once per instance and inputs: a
        node verifying the same transaction again against the very same input states (as a
        seller does in its checks and then in finality) gets the accepted result back."""
        ltx = self.to_ledger_transaction(resolve_state)
        accepted = self.__dict__.get(_ACCEPTED)
        if not (isinstance(accepted, LedgerTransaction) and _same_inputs(accepted, ltx)):
            ltx.verify()
            self.__dict__[_ACCEPTED] = ltx
        return ltx

    def _check_structure(self) -> None:
        problem = self.structure_problem()
        if problem is not None:
            raise MalformedTransactionException(self.id, problem)

    def key_names(self) -> dict[bytes, str]:
        """Names for the keys of the parties this transaction mentions (its notary and its
        outputs' participants), for error messages."""
        names: dict[bytes, str] = {}
        parties: list[Party] = [] if self.notary is None else [self.notary]
        for output in self.outputs:
            # A user's participants property failing must not hide the error being reported.
            with suppress(Exception):
                parties.extend(output.data.participants)
        for party in parties:
            if isinstance(party, Party):
                names.setdefault(party.owning_key, party.name)
        return names


_PROBLEM = "_structure_problem"  # where a WireTransaction keeps its structure_problem()
_ACCEPTED = "_accepted"  # where it keeps the LedgerTransaction its contracts last accepted


def _same_inputs(accepted: LedgerTransaction, ltx: LedgerTransaction) -> bool:
    # The very same state objects (not equal ones: 1 == 1.0 == True), so the contracts would
    # see exactly what they accepted; outputs and commands are the transaction's own.
    return len(accepted.inputs) == len(ltx.inputs) and all(
        a.state is b.state for a, b in zip(accepted.inputs, ltx.inputs, strict=True))


def _type_problem(wtx: WireTransaction) -> str | None:
    kinds: tuple[tuple[str, type], ...] = (
        ("inputs", StateRef), ("outputs", TransactionState), ("commands", Command))
    for name, kind in kinds:
        values: object = getattr(wtx, name)
        if type(values) is not tuple:
            return f"{name} must be a tuple, got {type(values).__qualname__}"
        wrong = next((v for v in values if not isinstance(v, kind)), None)
        if wrong is not None:
            return f"{name} hold a {type(wrong).__qualname__} where a {kind.__name__} belongs"
    for ref in wtx.inputs:  # refs must hash: notaries and vaults key on them
        if type(ref.txhash) is not SecureHash or type(ref.index) is not int or ref.index < 0:
            return f"input {ref!r:.80} is not a valid StateRef"
    optional: tuple[tuple[str, type], ...] = (("notary", Party), ("time_window", TimeWindow))
    for name, kind in optional:
        value: object = getattr(wtx, name)
        if not isinstance(value, kind | None):
            return f"{name} must be a {kind.__name__} or None, got {type(value).__qualname__}"
    return None


Signer = Callable[[bytes], DigitalSignature]
"""Signs the given bytes (a transaction id) with one key, e.g. ``functools.partial(sign, key)``."""


@serializable
@encoded_once
@dataclass(frozen=True)
class SignedTransaction:
    """A ``WireTransaction`` with the signatures collected over its id so far (immutable: its
    wire encoding is made once and kept, see ``WireTransaction``)."""

    tx: WireTransaction
    sigs: tuple[DigitalSignature, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigs", tuple(self.sigs))

    @property
    def id(self) -> SecureHash:
        """The id of the wire transaction."""
        return self.tx.id

    def with_additional_signature(self, sig: DigitalSignature) -> SignedTransaction:
        """A copy with ``sig`` added (no copy if it is already there). Does not verify it."""
        return self.with_additional_signatures([sig])

    def with_additional_signatures(self, sigs: Iterable[DigitalSignature]) -> SignedTransaction:
        """A copy with each of ``sigs`` not already present added, in order."""
        added = [sig for sig in dict.fromkeys(sigs) if sig not in self.sigs]
        return SignedTransaction(self.tx, self.sigs + tuple(added)) if added else self

    @property
    def missing_signers(self) -> frozenset[bytes]:
        """Required keys that have no signature yet (signatures are not verified here)."""
        return self.tx.required_signing_keys - {sig.by for sig in self.sigs}

    def verify_signatures(
        self, except_keys: Collection[bytes] = frozenset(), *,
        key_names: Mapping[bytes, str] | None = None,
        already_checked: Collection[DigitalSignature] = frozenset(),
    ) -> None:
        """Check every signature is valid over ``id`` and every required key except
        ``except_keys`` signed.

        ``already_checked`` names signatures (compared by value: key and bytes) the caller
        knows to be valid over this transaction's id because it verified them earlier in the
        same flow or produced them itself: their Ed25519 verification is skipped, but they
        still count towards the required keys. Never put a signature received from a peer and
        not yet verified there.

        Raises ``SignatureInvalidException`` naming the first key whose signature does not
        verify, then ``SignaturesMissingException`` naming every missing key (by party name when
        the transaction or ``key_names`` knows it), and ``MalformedTransactionException`` for a
        structurally invalid transaction.
        """
        self.tx._check_structure()
        data = self.id.bytes
        for sig in self.sigs:
            if already_checked and _among(sig, already_checked):
                continue
            if not _signature_valid(sig, data):
                key = sig.by if isinstance(sig, DigitalSignature) else b""
                names = self._key_names(key_names)
                raise SignatureInvalidException(self.id, key, describe_key(key, names.get(key)))
        missing = self.missing_signers.difference(except_keys)
        if missing:
            ordered = sorted(missing)
            names = self._key_names(key_names)
            described = [describe_key(key, names.get(key)) for key in ordered]
            raise SignaturesMissingException(ordered, described, self.id)

    def _key_names(self, extra: Mapping[bytes, str] | None) -> dict[bytes, str]:
        # Only for an error message: looked up once verification has failed.
        return {**self.tx.key_names(), **(extra or {})}

    def verify_required_signatures(self) -> None:
        """``verify_signatures()`` with no exceptions: the transaction is fully signed."""
        self.verify_signatures()

    def to_ledger_transaction(self, resolve_state: StateResolver) -> LedgerTransaction:
        """See ``WireTransaction.to_ledger_transaction``; signatures are not checked here."""
        return self.tx.to_ledger_transaction(resolve_state)

    def verify(
        self, resolve_state: StateResolver, except_keys: Collection[bytes] = frozenset(), *,
        already_checked: Collection[DigitalSignature] = frozenset(),
    ) -> LedgerTransaction:
        """Check signatures (all required keys but ``except_keys``; the Ed25519 check of those
        in ``already_checked`` is skipped, see ``verify_signatures``), resolve the inputs and
        run the contracts; return the verified ``LedgerTransaction``. Raises the
        ``TransactionVerificationException`` subclass of the first check that fails."""
        self.verify_signatures(except_keys, already_checked=already_checked)
        return self.tx.verified(resolve_state)


def _among(sig: object, checked: Collection[DigitalSignature]) -> bool:
    try:
        return sig in checked
    except TypeError:  # decoded from a peer, it may hold unhashable fields: not checked
        return False


def _signature_valid(sig: object, data: bytes) -> bool:
    try:
        return isinstance(sig, DigitalSignature) and sig.is_valid(data)
    except ValueError:  # a malformed public key from a peer: not a valid signature either
        return False


@serializable
@dataclass(frozen=True)
class LedgerTransaction:
    """A transaction with its inputs resolved to the states they spend: what contracts see."""

    id: SecureHash
    inputs: tuple[StateAndRef[ContractState], ...]
    outputs: tuple[TransactionState[ContractState], ...]
    commands: tuple[Command, ...]
    notary: Party | None
    time_window: TimeWindow | None

    def verify(self) -> None:
        """Check every state uses this transaction's notary, then run the ``verify`` of each
        distinct contract named by the inputs and outputs (in order of first appearance).

        Raises ``InvalidNotary``, ``UnknownContract``, or ``ContractRejection`` (naming the
        contract and wrapping whatever its ``verify`` raised, or naming a state put under a
        contract it does not belong to, see ``owning_contract``).
        """
        self._check_notaries()
        states = [sar.state for sar in self.inputs] + list(self.outputs)
        for state in states:
            owner = owning_contract(type(state.data))
            if owner is not None and owner != state.contract:
                raise ContractRejection(
                    self.id, state.contract,
                    f"{type(state.data).__qualname__} belongs to contract {owner} and cannot "
                    f"be governed by {state.contract}",
                )
        for name in dict.fromkeys(state.contract for state in states):
            cls = contract_class(name)
            if cls is None:
                raise UnknownContract(self.id, name)
            try:
                cls().verify(self)
            except TransactionVerificationException:
                raise
            except Exception as exc:
                raise ContractRejection(self.id, name, _reason(exc)) from exc

    def _check_notaries(self) -> None:
        where = [(f"input {sar.ref}", sar.state) for sar in self.inputs]
        where += [(f"output {i}", state) for i, state in enumerate(self.outputs)]
        for label, state in where:
            if state.notary != self.notary:
                ours = "none" if self.notary is None else _party(self.notary)
                raise InvalidNotary(self.id, f"{label} ({type(state.data).__qualname__}) names "
                                    f"notary {_party(state.notary)} but the transaction's "
                                    f"notary is {ours}; every state of a transaction must "
                                    "use its notary")

    def outputs_of_type(self, cls: type[_T]) -> list[_T]:
        """The data of the outputs that are instances of ``cls``, in order."""
        return [state.data for state in self.outputs if isinstance(state.data, cls)]

    def inputs_of_type(self, cls: type[_T]) -> list[_T]:
        """The data of the input states that are instances of ``cls``, in order."""
        return [sar.state.data for sar in self.inputs if isinstance(sar.state.data, cls)]

    def commands_of_type(self, cls: type[CommandData]) -> list[Command]:
        """The commands whose value is an instance of ``cls``, in order."""
        return [command for command in self.commands if isinstance(command.value, cls)]

    def out_ref(self, index: int) -> StateAndRef[ContractState]:
        """Output ``index`` with the reference that locates it."""
        return StateAndRef(self.outputs[index], StateRef(self.id, index))


def _party(party: Party) -> str:
    return describe_key(party.owning_key, party.name)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, ValueError) and text:  # RequirementFailed & co: the message is the rule
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
