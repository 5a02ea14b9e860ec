"""``TransactionBuilder``: the mutable place where a transaction is put together."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import overload

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fibers import Party
from fibers.wire import whitelisted_name
from ledger._contracts import Contract, contract_class, contract_name
from ledger._crypto import sign
from ledger._states import (
    Command,
    CommandData,
    ContractState,
    StateAndRef,
    TimeWindow,
    TransactionState,
)
from ledger._transactions import SALT_SIZE, SignedTransaction, Signer, WireTransaction

__all__ = ["TransactionBuilder"]


class TransactionBuilder:
    """Collects inputs, outputs, commands and a time window, then makes the transaction.

    The notary is the one given here, or else that of the first input added; an input with a
    different notary is refused at once. ``privacy_salt`` defaults to 32 bytes from
    ``os.urandom`` drawn now, so one builder always makes the same id; a flow that must build
    the same transaction again on replay passes a salt it recorded. Methods return the builder
    so calls chain.
    """

    def __init__(self, notary: Party | None = None, *, privacy_salt: bytes | None = None) -> None:
        self.notary = notary
        self.privacy_salt = os.urandom(SALT_SIZE) if privacy_salt is None else privacy_salt
        self._inputs: list[StateAndRef[ContractState]] = []
        self._outputs: list[TransactionState[ContractState]] = []
        self._commands: list[Command] = []
        self.time_window: TimeWindow | None = None

    @property
    def inputs(self) -> tuple[StateAndRef[ContractState], ...]:
        """The input states added so far."""
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[TransactionState[ContractState], ...]:
        """The output states added so far."""
        return tuple(self._outputs)

    @property
    def commands(self) -> tuple[Command, ...]:
        """The commands added so far."""
        return tuple(self._commands)

    def add_input_state(self, state_and_ref: StateAndRef[ContractState]) -> TransactionBuilder:
        """Spend ``state_and_ref``. Raises ``ValueError`` if it is already an input or its notary
        is not this transaction's."""
        if not isinstance(state_and_ref, StateAndRef):
            raise TypeError(f"add_input_state takes a StateAndRef, got "
                            f"{type(state_and_ref).__qualname__}")
        if any(sar.ref == state_and_ref.ref for sar in self._inputs):
            raise ValueError(f"{state_and_ref.ref} is already an input of this transaction")
        notary = state_and_ref.state.notary
        if self.notary is None:
            self.notary = notary
        elif notary != self.notary:
            raise ValueError(f"input {state_and_ref.ref} is notarised by {notary!r} but this "
                             f"transaction's notary is {self.notary!r}: a transaction spends "
                             "only states of its own notary")
        self._inputs.append(state_and_ref)
        return self

    def add_output_state(
        self, data: ContractState, contract: str | type[Contract], notary: Party | None = None
    ) -> TransactionBuilder:
        """Create an output holding ``data`` governed by ``contract`` (a ``@contract`` class or
        its registered name), notarised by ``notary`` or else the builder's notary."""
        notary = self.notary if notary is None else notary
        if notary is None:
            raise ValueError("an output needs a notary: pass notary=... here or give the "
                             "TransactionBuilder one")
        whitelisted_name(type(data))  # refuse a state that cannot be hashed, while it is obvious
        self._outputs.append(TransactionState(data, _contract_name(contract), notary))
        return self

    @overload
    def add_command(self, value: Command) -> TransactionBuilder: ...
    @overload
    def add_command(self, value: CommandData, *signers: bytes) -> TransactionBuilder: ...

    def add_command(self, value: Command | CommandData, *signers: bytes) -> TransactionBuilder:
        """Add ``Command(value, signers)``, or ``value`` itself if it is a ``Command``.
        Signers are raw public keys (``Party.owning_key``)."""
        if isinstance(value, Command):
            if signers:
                raise TypeError("pass either a Command or a command value with its signers")
            command = value
        else:
            whitelisted_name(type(value))
            command = Command(value, signers)
        self._commands.append(command)
        return self

    def set_time_window(self, window: TimeWindow) -> TransactionBuilder:
        """Require the notary to sign within ``window``."""
        if not isinstance(window, TimeWindow):
            raise TypeError(f"set_time_window takes a TimeWindow, got {type(window).__qualname__}")
        self.time_window = window
        return self

    def to_wire_transaction(self) -> WireTransaction:
        """The transaction as built so far. Raises ``ValueError`` if it is structurally invalid
        (for example inputs or a time window without a notary)."""
        return WireTransaction(
            inputs=tuple(sar.ref for sar in self._inputs), outputs=tuple(self._outputs),
            commands=tuple(self._commands), notary=self.notary, time_window=self.time_window,
            privacy_salt=self.privacy_salt,
        )

    def to_signed_transaction(self, signers: Iterable[Signer]) -> SignedTransaction:
        """The transaction signed by each of ``signers`` (each called with the id's bytes)."""
        wtx = self.to_wire_transaction()
        return SignedTransaction(wtx, tuple(signer(wtx.id.bytes) for signer in signers))

    def sign_with(self, *keys: Ed25519PrivateKey) -> SignedTransaction:
        """The transaction signed with each of ``keys``."""
        wtx = self.to_wire_transaction()
        return SignedTransaction(wtx, tuple(sign(key, wtx.id.bytes) for key in keys))


def _contract_name(contract: str | type[Contract]) -> str:
    if isinstance(contract, str):
        return contract
    if contract_class(contract_name(contract)) is not contract:
        raise TypeError(f"{contract.__qualname__} is not a registered contract: decorate it "
                        "with @contract")
    return contract_name(contract)
