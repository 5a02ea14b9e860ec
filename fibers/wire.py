"""The wire codec (public): ``encode`` / ``decode`` of whitelisted values, as session messages
carry them, and ``whitelisted_name``, the name a class travels under. Mark classes with
``fibers.serializable``. Encodings are deterministic, so they may be hashed (the ledger's
Merkle trees do)."""

from fibers._wire import decode, encode, whitelisted_name

__all__ = ["decode", "encode", "whitelisted_name"]
