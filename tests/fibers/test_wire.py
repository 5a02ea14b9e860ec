"""The wire codec: exact round trips, deterministic bytes, whitelisting, limits, hostile input."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import _wire
from fibers._errors import SerializationError
from fibers._wire import (
    MAX_DEPTH,
    MAX_MESSAGE_SIZE,
    decode,
    encode,
    is_whitelisted,
    register_custom_type,
    serializable,
    whitelisted_name,
)

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=150)
MARKER_OBJECT = msgspec.msgpack.Ext(5, b"")  # the documented marker of a @serializable instance


@serializable
@dataclass(frozen=True, slots=True)
class Point:
    x: int
    label: str
    weight: float | None
    tags: tuple[str, ...]


@serializable
@dataclass
class Box:
    items: list[Any]
    meta: dict[str, Any]


@serializable
class Colour(enum.Enum):
    RED = "r"
    GREEN = (1, 2)
    CRIMSON = "r"  # an alias of RED


@serializable
class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


@serializable
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@serializable
class Plain:
    def __init__(self, a: Any, b: Any) -> None:
        self.a, self._Plain__hidden = a, b

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


@serializable
class Slotted:
    __slots__ = ("__secret", "a", "never_set")

    def __init__(self, a: Any, secret: Any) -> None:
        self.a, self.__secret = a, secret


@serializable
class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@serializable
class Guarded:
    calls: ClassVar[list[str]] = []

    def __init__(self, value: int) -> None:
        Guarded.calls.append("__init__")
        self.value = value

    def __setstate__(self, state: Any) -> None:
        Guarded.calls.append("__setstate__")

    def __reduce__(self) -> Any:
        Guarded.calls.append("__reduce__")
        return (Guarded, (0,))


class Opaque:
    """Never whitelisted."""


class Evil:
    """Not whitelisted; counts every attempt to build one."""

    built = 0

    def __new__(cls) -> Evil:
        Evil.built += 1
        return super().__new__(cls)


def typed(x: Any) -> Any:
    """A comparable form of ``x`` that also tells types, -0.0, Decimal exponents and tzinfo."""
    t, inner = type(x), x
    if t in (list, tuple):
        inner = tuple(map(typed, x))
    elif t in (set, frozenset):
        inner = frozenset(map(typed, x))
    elif t is dict:
        inner = frozenset((typed(k), typed(v)) for k, v in x.items())
    elif t in (float, Decimal):
        inner = repr(x)
    elif t in (datetime, time):
        inner = (x.isoformat(), x.fold, x.tzname())
    elif isinstance(x, enum.Enum):
        inner = x.name
    elif dataclasses.is_dataclass(x):
        inner = tuple(typed(getattr(x, f.name)) for f in dataclasses.fields(x))
    elif isinstance(x, BaseException):
        inner = (typed(x.args), typed(vars(x)))
    elif hasattr(x, "__dict__"):
        inner = typed(vars(x))
    return (t, inner)


def roundtrip(x: Any) -> Any:
    return decode(encode(x))


# ----- strategies -------------------------------------------------------------------------

offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
timezones = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(timezone, offsets),
    st.builds(timezone, offsets, st.text(max_size=4)),
)
datetimes = st.builds(
    lambda d, fold: d.replace(fold=fold), st.datetimes(timezones=timezones), st.integers(0, 1)
)
big_ints = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**200)])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers() | big_ints,
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    datetimes,
    st.dates(),
    st.times(timezones=timezones),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.sampled_from([*Colour, *Level, Perm.R, Perm.R | Perm.W, Perm(0)]),
)
points = st.builds(
    Point,
    st.integers(),
    st.text(max_size=5),
    st.none() | st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=3).map(tuple),
)
hashables = st.recursive(
    scalars | points,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    scalars | points,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.builds(Box, st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner)),
        st.builds(Plain, inner, inner),
        st.builds(Refused, st.text(max_size=5), st.integers()),
    ),
    max_leaves=25,
)


# ----- fidelity and determinism -----------------------------------------------------------


@FAST
@given(values)
def test_every_supported_value_round_trips_with_its_types_and_canonical_bytes(value: Any) -> None:
    data = encode(value)
    back = decode(data)
    assert typed(back) == typed(value)
    assert encode(back) == data


@FAST
@given(st.dictionaries(hashables, scalars, max_size=6), st.sets(hashables, max_size=6))
def test_bytes_do_not_depend_on_dict_or_set_order(mapping: dict[Any, Any], items: set[Any]) -> None:
    assert encode(dict(reversed(list(mapping.items())))) == encode(mapping)
    assert encode(set(reversed(list(items)))) == encode(items)
    assert encode(frozenset(reversed(list(items)))) == encode(frozenset(items))


def test_equal_sets_iterating_differently_encode_identically() -> None:
    first, second = set([1, 9, 17]), set([17, 9, 1])
    assert list(first) != list(second)  # otherwise this test shows nothing
    assert encode(first) == encode(second)
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
    assert encode({(1, 2): 0, 3: 1, "x": 2}) == encode({"x": 2, 3: 1, (1, 2): 0})


def test_scalars_keep_their_exact_identity() -> None:
    assert math.copysign(1, roundtrip(-0.0)) == -1
    assert math.isnan(roundtrip(float("nan")))
    assert roundtrip(float("-inf")) == float("-inf")
    for big in (2**64, -(2**63) - 1, 10**400, -(10**400)):
        assert roundtrip(big) == big
    assert type(roundtrip(True)) is bool and type(roundtrip(1)) is int
    assert roundtrip(bytearray(b"ab")) == b"ab" and type(roundtrip(bytearray(b"ab"))) is bytes
    assert roundtrip(memoryview(b"cd")) == b"cd"
    assert decode(memoryview(encode("view"))) == "view"
    for text in ("-0.0100", "1.50E+30", "-0", "Infinity"):
        assert str(roundtrip(Decimal(text))) == text
    assert roundtrip(uuid.UUID(int=7)) == uuid.UUID(int=7)
    assert roundtrip(date(1, 1, 1)) == date(1, 1, 1) and type(roundtrip(date(1, 1, 1))) is date


def test_naive_and_aware_datetimes_are_preserved_exactly() -> None:
    naive = datetime(2024, 2, 29, 23, 59, 59, 999999)
    named = timezone(timedelta(hours=5, minutes=30, microseconds=1), "IST-ish")
    for value in (naive, naive.replace(fold=1), naive.replace(tzinfo=UTC),
                  naive.replace(tzinfo=named), time(1, 2, 3, 4, tzinfo=named)):
        back = roundtrip(value)
        assert (back, back.tzinfo, back.fold) == (value, value.tzinfo, value.fold)
        assert back.tzname() == value.tzname()
    assert roundtrip(naive).tzinfo is None


def test_other_tzinfo_types_are_refused_with_a_fix() -> None:
    class Paris(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=1)

    with pytest.raises(SerializationError, match=r"tzinfo of type .*Paris.*datetime\.timezone"):
        encode([datetime(2024, 1, 1, tzinfo=Paris())])


# ----- whitelisted classes ----------------------------------------------------------------


def test_dataclasses_plain_classes_enums_and_exceptions_round_trip() -> None:
    point = Point(1, "p", None, ("a",))
    assert roundtrip(point) == point and roundtrip({point: {point}}) == {point: {point}}
    box = Box([point, Colour.GREEN], {"k": (Level.HIGH,)})
    assert roundtrip(box) == box and type(roundtrip(box).meta["k"][0]) is Level
    assert roundtrip(Plain([1], {2})) == Plain([1], {2})
    assert roundtrip(Colour.CRIMSON) is Colour.RED
    assert roundtrip(Perm.R | Perm.X) == Perm.R | Perm.X
    slotted = roundtrip(Slotted("a", b"s"))
    assert (slotted.a, slotted._Slotted__secret) == ("a", b"s")
    assert not hasattr(slotted, "never_set")
    error = roundtrip(Refused("no funds", 402))
    assert type(error) is Refused and error.args == ("no funds",) and error.code == 402
    assert str(error) == "no funds"


def test_decoding_never_runs_init_setstate_or_reduce_but_runs_post_init_checks() -> None:
    @serializable
    @dataclass(frozen=True)
    class Checked:
        amount: int

        def __post_init__(self) -> None:
            if self.amount < 0:
                raise ValueError("negative")

    Guarded.calls.clear()
    assert roundtrip(Guarded(3)).value == 3
    assert Guarded.calls == ["__init__"]  # only the sender's own construction
    forged = msgspec.msgpack.encode([MARKER_OBJECT, whitelisted_name(Checked), "amount", -5])
    # A decoded value is checked as a constructed one is (issue 15): __post_init__ runs.
    with pytest.raises(SerializationError, match=r"Checked' with invalid fields.*negative"):
        decode(forged)
    assert decode(msgspec.msgpack.encode(
        [MARKER_OBJECT, whitelisted_name(Checked), "amount", 5])).amount == 5


def test_a_validation_message_that_cannot_be_formatted_still_reports() -> None:
    @serializable
    @dataclass(frozen=True)
    class Loud:
        n: int

        def __post_init__(self) -> None:
            if self.n > 10:
                raise ValueError(f"too big: {self.n}")  # str() of 10**5000 itself raises

    unchecked = Loud.__new__(Loud)
    object.__setattr__(unchecked, "n", 10**5000)  # as a hostile peer would send it
    with pytest.raises(SerializationError) as caught:
        decode(encode(unchecked))
    assert "Loud' with invalid fields" in str(caught.value)
    assert "integer string conversion" in str(caught.value)


def test_serializable_returns_the_class_and_a_later_class_of_the_same_name_replaces_it() -> None:
    def make(extra_field: bool) -> type:
        if extra_field:

            @serializable
            @dataclass
            class Versioned:
                a: int
                b: int

            return Versioned

        @serializable
        @dataclass
        class Versioned:  # type: ignore[no-redef]
            a: int

        return Versioned

    old = make(extra_field=True)
    payload = encode(old(1, 2))
    new = make(extra_field=False)
    assert new.__qualname__ == old.__qualname__
    assert whitelisted_name(new) == f"{__name__}:{new.__qualname__}"
    assert is_whitelisted(new) and not is_whitelisted(old)
    with pytest.raises(SerializationError, match=r"has no field\(s\) 'b'.*sender's version"):
        decode(payload)
    with pytest.raises(SerializationError, match="not whitelisted"):
        encode(old(1, 2))
    payload = encode(new(1))
    make(extra_field=True)
    with pytest.raises(SerializationError, match=r"lacks field\(s\) 'b'"):
        decode(payload)


def test_serializable_refuses_builtin_subclasses() -> None:
    class Money(int):
        pass

    with pytest.raises(TypeError, match="subclasses a builtin"):
        serializable(Money)


def test_is_whitelisted_and_whitelisted_name() -> None:
    assert is_whitelisted(Point) and is_whitelisted(int) and is_whitelisted(datetime)
    assert not is_whitelisted(Opaque) and not is_whitelisted(msgspec.Raw)
    assert whitelisted_name(Point) == f"{Point.__module__}:Point"
    with pytest.raises(SerializationError, match=r"Opaque.*@serializable"):
        whitelisted_name(Opaque)


def test_custom_types_round_trip_with_their_subclasses() -> None:
    class Key:  # stands for a third-party class we cannot decorate
        def __init__(self, raw: bytes) -> None:
            self.raw = raw

    class Ed25519Key(Key):
        pass

    register_custom_type(Key, "test:Key", lambda key: ("k1", key.raw), lambda v: Key(v[1]))
    try:
        back = roundtrip({"signer": Ed25519Key(b"\x01" * 32)})["signer"]
        assert type(back) is Key and back.raw == b"\x01" * 32
        assert is_whitelisted(Ed25519Key) and whitelisted_name(Key) == "test:Key"
        payload = encode([Key(b"x")])
    finally:
        _wire.unregister("test:Key")
    with pytest.raises(SerializationError, match="custom type 'test:Key' is not registered"):
        decode(payload)
    register_custom_type(Key, "test:Key", lambda key: 1 / 0, Key)
    try:
        with pytest.raises(SerializationError, match="to_wire of custom type 'test:Key' failed"):
            encode(Key(b""))
    finally:
        _wire.unregister("test:Key")


def test_custom_type_registrations_replace_each_other_and_from_wire_errors_are_malformed() -> None:
    class Handle:
        pass

    register_custom_type(Handle, "test:Handle", lambda h: None, lambda v: Handle())
    register_custom_type(Handle, "test:Handle2", lambda h: None, lambda v: 1 / 0)
    try:
        assert whitelisted_name(Handle) == "test:Handle2"
        with pytest.raises(SerializationError, match=r"malformed message: from_wire .* failed"):
            decode(encode(Handle()))
    finally:
        _wire.unregister("test:Handle2")
    assert not is_whitelisted(Handle)


# ----- errors ------------------------------------------------------------------------------


def test_encoding_a_foreign_object_names_it_and_says_how_to_fix_it() -> None:
    with pytest.raises(SerializationError) as info:
        encode(Opaque())
    message = str(info.value)
    assert f"'{Opaque.__module__}.{Opaque.__qualname__}'" in message
    assert "@serializable (from fibers import serializable)" in message
    assert "built-in type" in message


def test_encoding_errors_say_where_the_value_was() -> None:
    with pytest.raises(SerializationError, match=r"at value\['payload'\]\['items'\]\[2\]:"):
        encode({"payload": {"items": [1, 2, Opaque()]}})
    with pytest.raises(SerializationError, match=r"in field 'items' of Box at value\.items\[1\]"):
        encode(Box([1, Opaque()], {}))
    with pytest.raises(SerializationError, match=r"in field 'code' of Refused at value\.code"):
        encode(Refused("x", Opaque()))  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match=r"at value\[0\]\{\.\.\.\}"):
        encode([{Opaque()}])
    with pytest.raises(SerializationError, match="not valid UTF-8"):
        encode("\ud800")


def test_an_unset_dataclass_field_is_reported() -> None:
    @serializable
    @dataclass
    class Lazy:
        total: int = dataclasses.field(init=False)

    with pytest.raises(SerializationError, match=r"cannot encode .*Lazy: .*'total'"):
        encode(Lazy())


def test_decoding_an_unknown_class_is_refused_without_building_anything() -> None:
    name = f"{Evil.__module__}:{Evil.__qualname__}"
    for forged_name in (name, "os:system", "builtins:eval"):
        forged = msgspec.msgpack.encode([MARKER_OBJECT, forged_name, "x", 1])
        with pytest.raises(SerializationError) as info:
            decode(forged)
        assert f"class {forged_name!r} is not whitelisted on this node" in str(info.value)
        assert "@serializable" in str(info.value)
    assert Evil.built == 0


def test_a_class_unregistered_after_sending_is_refused_on_receipt() -> None:
    @serializable
    class Foreign:
        pass

    payload = encode(Foreign())
    _wire.unregister(whitelisted_name(Foreign))
    with pytest.raises(SerializationError, match=r"Foreign' is not whitelisted on this node"):
        decode(payload)


def test_fields_the_receiving_class_lacks_are_refused_by_name() -> None:
    for cls, field in ((Slotted, "extra"), (Plain, "__class__"), (Point, "colour")):
        forged = msgspec.msgpack.encode([MARKER_OBJECT, whitelisted_name(cls), field, 1])
        with pytest.raises(SerializationError, match=f"no field\\(s\\) '{field}'"):
            decode(forged)
    forged = msgspec.msgpack.encode([MARKER_OBJECT, whitelisted_name(Colour), "BLUE"])
    with pytest.raises(SerializationError, match="no member 'BLUE'"):
        decode(forged)
    assert _wire.whitelisted_class(whitelisted_name(Point)) is Point
    assert _wire.whitelisted_class("os:system") is None


@pytest.mark.parametrize(
    "state",
    [["x"], [1, 2], ["x", 1, "x", 2], ["label", "", "tags", [], "weight", None, "x"]],
)
def test_forged_instances_with_a_bad_shape_are_malformed(state: list[Any]) -> None:
    forged = msgspec.msgpack.encode([MARKER_OBJECT, whitelisted_name(Point), *state])
    with pytest.raises(SerializationError, match=r"^malformed message: .*Point"):
        decode(forged)
    forged = msgspec.msgpack.encode([MARKER_OBJECT, whitelisted_name(Colour), *state])
    with pytest.raises(SerializationError, match=r"Colour"):
        decode(forged)


# ----- limits and hostile bytes --------------------------------------------------------------


def nest(depth: int, wrap: Any) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: [v],
        lambda v: (v,),
        lambda v: {"k": v},
        lambda v: {1: v},
        lambda v: frozenset([v]),
        lambda v: Plain(v, None),
    ],
)
def test_nesting_depth_is_limited_on_both_sides(wrap: Any) -> None:
    assert encode(roundtrip(nest(MAX_DEPTH, wrap))) == encode(nest(MAX_DEPTH, wrap))
    with pytest.raises(SerializationError, match=f"nesting deeper than {MAX_DEPTH}"):
        encode(nest(MAX_DEPTH + 1, wrap))
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="a cycle"):
        encode(cyclic)


def test_crafted_deep_messages_are_refused() -> None:
    assert decode(b"\x91" * MAX_DEPTH + b"\x00") == nest(MAX_DEPTH, lambda v: [v])
    for crafted in (b"\x91" * (MAX_DEPTH + 1) + b"\x00", b"\x91" * 100_000 + b"\x00",
                    b"\x92\xc7\x00\x01" * (MAX_DEPTH + 1) + b"\x00"):
        with pytest.raises(SerializationError, match="malformed message"):
            decode(crafted)


def test_message_size_is_limited_on_both_sides() -> None:
    assert len(encode(b"x" * (MAX_MESSAGE_SIZE - 5))) == MAX_MESSAGE_SIZE
    with pytest.raises(SerializationError, match="over MAX_MESSAGE_SIZE"):
        encode(b"x" * (MAX_MESSAGE_SIZE - 4))
    with pytest.raises(SerializationError, match=r"malformed message: .* over MAX_MESSAGE_SIZE"):
        decode(b"\x00" * (MAX_MESSAGE_SIZE + 1))


@pytest.mark.parametrize(
    "crafted",
    [
        b"",
        b"\xc1",
        b"\x92\x01",  # truncated
        b"\x01\x02",  # trailing bytes
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xa1\xff",  # invalid UTF-8
        b"\x81\x01\x02",  # a native map with an int key
        b"\xc7\x00\x63",  # an unknown ext code
        b"\xc7\x00\x05",  # a marker outside an array
        b"\x92\x01\xc7\x00\x01",  # a marker out of place
        b"\xc7\x02\x12\x00\x00",  # a date too short
        b"\xc7\x04\x12\x00\x00\x0d\x01",  # month 13
        b"\x93\xc7\x00\x02\x01\x01",  # a set with duplicates
        b"\x92\xc7\x00\x02\x91\x01",  # a set with an unhashable element
        b"\x92\xc7\x00\x04\x01",  # a dict with an odd item count
        b"\x95\xc7\x00\x04\x01\x02\x01\x03",  # a dict with a duplicate key
        b"\x93\xc7\x00\x05\x01\x01",  # an object whose name is not a str
        msgspec.msgpack.encode([msgspec.msgpack.Ext(22, b"short")]),
        msgspec.msgpack.encode([msgspec.msgpack.Ext(21, b"not a number")]),
    ],
)
def test_malformed_messages_raise_serialization_error(crafted: bytes) -> None:
    with pytest.raises(SerializationError, match=r"^malformed message: "):
        decode(crafted)


@FAST
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_ever_raise_serialization_error(data: bytes) -> None:
    with contextlib.suppress(SerializationError):
        decode(data)


@settings(FAST, max_examples=300)
@given(values, st.data())
def test_mutated_valid_messages_only_ever_raise_serialization_error(
    value: Any, data: st.DataObject
) -> None:
    raw = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if action == "insert" or not raw:
            raw.insert(at, data.draw(st.integers(0, 255)))
        elif action == "set":
            raw[min(at, len(raw) - 1)] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del raw[min(at, len(raw) - 1)]
        else:
            del raw[at:]
    with contextlib.suppress(SerializationError):
        decode(bytes(raw))
