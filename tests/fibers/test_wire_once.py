"""Values encoded once (``fibers.wire.encoded_once``) and encodings split into their parts."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from typing import Any

import pytest

from fibers import _wire
from fibers._errors import SerializationError
from fibers._wire import (
    MAX_DEPTH,
    decode,
    encode,
    encoded_fields,
    encoded_items,
    encoded_once,
    serializable,
)


@serializable
@encoded_once
@dataclass(frozen=True)
class Kept:
    name: str
    parts: tuple[Any, ...]


@serializable
@dataclass(frozen=True)
class Plain:
    name: str
    parts: tuple[Any, ...]


def nested(levels: int) -> Any:
    """A value ``levels`` containers deep."""
    value: Any = 1
    for _ in range(levels):
        value = (value,)
    return value


def walked(value: Any) -> bytes:
    """``encode(value)`` with ``Kept`` treated as an ordinary class: nothing kept or reused."""
    spec = _wire._spec_of(Kept)
    assert spec is not None and spec.once
    _wire._SPECS[Kept] = dataclasses.replace(spec, once=False)
    try:
        return encode(value)
    finally:
        _wire._SPECS[Kept] = spec


def test_a_value_encoded_once_has_the_bytes_of_an_ordinary_value_every_time() -> None:
    parts = (1, "two", b"3", (4, 5.0), frozenset({6}), Plain("inner", (7,)), 2**70)
    kept = Kept("k", parts)
    first = encode(kept)
    assert first == walked(kept)
    assert encode(kept) == first  # the second time from what it kept
    assert _wire._KEPT in vars(kept)
    # Nested in other values, the kept bytes are spliced in unchanged.
    assert encode([kept, {"k": kept}, {kept}]) == walked([kept, {"k": kept}, {kept}])
    assert decode(first) == kept
    assert decode(encode((kept, kept))) == (kept, kept)


def test_kept_bytes_never_break_the_depth_limit() -> None:
    kept = Kept("deep", (nested(40),))  # 42 levels: the instance, its tuple, 40 tuples inside
    encode(kept)  # kept, checked as if it sat half MAX_DEPTH deep
    for levels in range(MAX_DEPTH - 45, MAX_DEPTH - 38):  # it fits under 58 lists, not 59
        wrapped = _wrap(kept, levels)
        if levels <= MAX_DEPTH - 42:
            assert encode(wrapped) == walked(_wrap(first_of(kept), levels))
            assert decode(encode(wrapped)) == wrapped
        else:
            for encoding in (encode, walked):
                with pytest.raises(SerializationError, match="deeper than"):
                    encoding(wrapped)
    too_deep_to_keep = Kept("deeper", (nested(MAX_DEPTH - 5),))
    assert encode(too_deep_to_keep) == walked(too_deep_to_keep)  # fits at the top only
    with pytest.raises(SerializationError, match="deeper than"):
        encode(_wrap(too_deep_to_keep, 4))


def first_of(value: Kept) -> Kept:
    """An equal value that has kept nothing yet."""
    return Kept(value.name, value.parts)


def _wrap(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def test_what_a_value_kept_is_not_pickled_and_comes_back_the_same() -> None:
    kept = Kept("p", (1, 2))
    data = encode(kept)
    pickled = pickle.dumps(kept)
    assert data not in pickled
    restored = pickle.loads(pickled)
    assert restored == kept
    assert encode(restored) == data


def test_encoded_fields_and_items_are_the_encodings_of_the_parts() -> None:
    value = Plain("whole", (1, "x", Plain("inner", ()), (2, 3), [4]))
    fields = encoded_fields(value)
    assert fields == {"name": encode("whole"), "parts": encode(value.parts)}
    assert encoded_items(fields["parts"]) == [encode(part) for part in value.parts]
    assert encoded_items(encode([1, (2,)])) == [encode(1), encode((2,))]
    kept = Kept("k", (Plain("a", ()),))
    assert encoded_fields(kept)["parts"] == encode(kept.parts)
    assert encode(kept) == encode(first_of(kept))
    with pytest.raises(SerializationError):
        encoded_fields(object())


def test_only_frozen_dataclasses_with_a_dict_can_be_encoded_once() -> None:
    @dataclass
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    for cls in (Mutable, Slotted, int):
        with pytest.raises(TypeError, match="frozen dataclasses with a __dict__"):
            encoded_once(cls)
    assert dataclasses.is_dataclass(encoded_once(dataclass(frozen=True)(type("Ok", (), {}))))
