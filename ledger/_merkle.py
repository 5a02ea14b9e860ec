"""The Merkle scheme that gives a transaction its id.

A transaction is five *component groups*, always in this order (a group's index is its
position): ``0 inputs`` (StateRefs), ``1 outputs`` (TransactionStates), ``2 commands``,
``3 notary`` (zero or one Party), ``4 time_window`` (zero or one TimeWindow).

- Component ``i`` of group ``g`` is the bytes ``fibers.wire.encode(component)``.
- Its nonce is ``SHA-256(privacy_salt ‖ g as 4 bytes big-endian ‖ i as 4 bytes big-endian)``:
  the 32-byte random salt makes equal transactions differ and hides unrevealed components from
  someone who sees only hashes; revealing one nonce reveals nothing about the salt or the others.
- Its leaf hash is ``SHA-256(0x00 ‖ nonce ‖ component bytes)``.
- A tree over hashes ``h_0 … h_{n-1}`` is built level by level: adjacent pairs combine as
  ``SHA-256(0x01 ‖ left ‖ right)`` and an odd last hash moves up a level unchanged; the root is
  the single hash left. One hash is its own root; no hashes give ``ZERO_HASH`` (32 zero bytes).
- A group's hash is the root of the tree over its leaf hashes (an empty group: ``ZERO_HASH``).
- The transaction id is the root of the tree over the five group hashes, in group order.

The 0x00/0x01 prefixes keep a leaf from ever being taken for an inner node (second-preimage
attacks on the tree shape). The bytes hashed are the wire codec's format v1: changing that
format, the group order or any of the rules above changes every transaction id.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Final

from fibers.wire import encode
from ledger._crypto import ZERO_HASH, SecureHash

__all__ = [
    "GROUPS", "component_nonce", "encoded_group_hash", "group_hash", "leaf_hash", "merkle_root",
]

GROUPS: Final = ("inputs", "outputs", "commands", "notary", "time_window")
_INDEXES: Final = struct.Struct(">II")
_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"


def component_nonce(privacy_salt: bytes, group: int, index: int) -> SecureHash:
    """The nonce of component ``index`` of group number ``group``."""
    return SecureHash.sha256(privacy_salt + _INDEXES.pack(group, index))


def leaf_hash(nonce: SecureHash, component: object) -> SecureHash:
    """The leaf hash of ``component`` under ``nonce``; ``SerializationError`` if it cannot be
    encoded."""
    return SecureHash.sha256(_LEAF + nonce.bytes + encode(component))


def merkle_root(hashes: Sequence[SecureHash]) -> SecureHash:
    """The root of the tree over ``hashes`` as the module docstring defines it."""
    if not hashes:
        return ZERO_HASH
    return SecureHash(_root([h.bytes for h in hashes]))


def _root(level: list[bytes]) -> bytes:
    while len(level) > 1:
        paired = [hashlib.sha256(_NODE + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def group_hash(nonces: Sequence[SecureHash], components: Sequence[object]) -> SecureHash:
    """The hash of a group whose components and their nonces are given in order."""
    return merkle_root([leaf_hash(n, c) for n, c in zip(nonces, components, strict=True)])


def encoded_group_hash(privacy_salt: bytes, group: int, encoded: Sequence[bytes]) -> SecureHash:
    """``group_hash`` of group number ``group`` of a transaction salted with ``privacy_salt``,
    its components given by their encodings (``encode(component)``, the same bytes), in order:
    the nonces and leaves are hashed as bytes, with no object per hash."""
    if not encoded:
        return ZERO_HASH
    sha256, pack = hashlib.sha256, _INDEXES.pack
    return SecureHash(_root([
        sha256(_LEAF + sha256(privacy_salt + pack(group, i)).digest() + component).digest()
        for i, component in enumerate(encoded)]))
