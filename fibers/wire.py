"""The wire codec (public): ``encode`` / ``decode`` of whitelisted values, as session messages
carry them, and ``whitelisted_name``, the name a class travels under. Mark classes with
``fibers.serializable``. Encodings are deterministic, so they may be hashed (the ledger's
Merkle trees do); ``encoded_once`` lets an immutable value keep its encoding, and
``encoded_fields``/``encoded_items`` split an encoding into its parts' encodings."""

from fibers._wire import (
    decode,
    encode,
    encoded_fields,
    encoded_items,
    encoded_once,
    whitelisted_name,
)

__all__ = [
    "decode", "encode", "encoded_fields", "encoded_items", "encoded_once", "whitelisted_name",
]
