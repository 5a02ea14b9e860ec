"""The wire codec: deterministic, whitelisted encoding of every value that crosses between nodes.

Contract: ``decode(encode(x)) == x`` with types preserved recursively for the types listed in
:func:`encode` (``bytearray``/``memoryview`` arrive as ``bytes``, NaN as NaN). Equal values of
equal types encode to identical bytes whatever the dict or set order (``-0.0`` and ``0.0`` differ).
``decode`` builds only builtins, the stdlib types listed and classes whitelisted on this node,
with ``cls.__new__(cls)`` and ``object.__setattr__``: never ``__init__``, ``__setstate__``,
``__reduce__``, import by name or pickle. A dataclass's ``__post_init__`` then runs on the decoded
instance, so its field checks hold for received values as for constructed ones; if it raises,
decoding fails with ``SerializationError``. It may accept non-canonical MessagePack (say, a wide
int); ``encode(decode(b)) == b`` checks that bytes are canonical. All failures raise
``SerializationError``.

Format v1 (ledger transaction ids hash these bytes: changing it is a breaking change). A message
is one MessagePack value of at most ``MAX_MESSAGE_SIZE`` bytes, nested at most ``MAX_DEPTH``
containers deep (list, dict, tuple, set, instance, custom value: one level each). Native
MessagePack carries nil, bool, int in [-2**63, 2**64), float64, str, bin (bytes), array (list)
and map (dict whose keys are all str, sorted by UTF-8 bytes). Other values are arrays that start
with a *marker*, an ext with an empty payload (``c7 00 <code>``), or *leaf* exts, by ext code:

  1  [M, e1, e2, ...]                                  tuple
  2  [M, e...], elements sorted by their encoding      set
  3  [M, e...], elements sorted by their encoding      frozenset
  4  [M, k1, v1, k2, v2, ...] sorted by key encoding   dict with a key that is not a str
  5  [M, name, state...]                               @serializable instance
  6  [M, name, to_wire(value)]                         register_custom_type instance
  16 big-endian two's complement, minimal length      int outside [-2**63, 2**64)
  17 >HBBBBBIB year month day hour min sec usec flags, then tz   datetime
  18 >HBB year month day                               date
  19 >BBBIB hour min sec usec flags, then tz           time
  20 >iII days seconds microseconds                    timedelta
  21 ASCII str(d)                                      Decimal
  22 the 16 bytes of UUID.bytes                        UUID

Time flags: bit 0 is ``fold``; bit 1 means aware, and ``>q`` UTC offset in microseconds follows;
bit 2 means the ``datetime.timezone`` has a non-default name, which follows in UTF-8. Other
tzinfo types (zoneinfo, pytz) are refused. ``name`` is ``f"{module}:{qualname}"``. ``state`` is,
for an enum, the member name (``Flag``: its value); for a dataclass, ``field, value`` pairs of
all its fields sorted by name; for another class, pairs of its set slots and ``__dict__`` items
(for an exception also ``args``) sorted by name.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import struct
import uuid
from collections.abc import Callable
from contextlib import suppress
from decimal import Decimal
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Any, Final, TypeVar

import msgspec

__all__ = [
    "MAX_DEPTH", "MAX_MESSAGE_SIZE", "PLAIN", "TUPLE_MARK", "SerializationError", "decode",
    "describe_error", "encode", "encode_built", "encoded_fields", "encoded_items", "encoded_once",
    "is_whitelisted",
    "register_custom_type", "serializable", "unregister", "whitelisted_class", "whitelisted_name",
]


class SerializationError(ValueError):
    """A value cannot be encoded for, or decoded from, the wire."""


MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
MAX_DEPTH: Final = 100

_C = TypeVar("_C", bound=type)
_Prims = frozenset[type]
_Handler = Callable[[Any, int, _Prims], Any]

_TUPLE, _SET, _FROZENSET, _DICT, _OBJECT, _CUSTOM = range(1, 7)
_BIGINT, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID = range(16, 23)
_K_DATA, _K_OPEN, _K_SLOTS, _K_ENUM, _K_FLAG = range(5)  # how a whitelisted class travels
_DT, _DATE_S, _TIME_S = struct.Struct(">HBBBBBIB"), struct.Struct(">HBB"), struct.Struct(">BBBIB")
_TD, _OFF, _US = struct.Struct(">iII"), struct.Struct(">q"), _dt.timedelta(microseconds=1)

# Types msgspec writes natively just as we want: a container of only these goes to msgspec as
# is. On the retry after msgspec refuses an int beyond 64 bits, int is taken out.
_PRIMS: Final = frozenset({type(None), bool, int, float, str, bytes, bytearray, memoryview})
_PRIMS_NO_INT: Final = _PRIMS - {int}
_LEAVES: Final = frozenset({type(None), bool, int, float, str, bytes, _dt.datetime, _dt.date,
                            _dt.time, _dt.timedelta, Decimal, uuid.UUID})
_STR: Final = frozenset({str})
_BUILTIN_BASES = (int, float, str, bytes, bytearray, tuple, list, dict, set, frozenset)
_FIX = "mark the class @serializable (from fibers import serializable) or send a built-in type"


# Markers, for encoding and as ``ext_hook`` returns them: valid only first in an array.
_M: Final = {code: msgspec.msgpack.Ext(code, b"") for code in range(1, 7)}


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    kind: int
    fields: tuple[str, ...]  # sorted: the dataclass fields, or slot names (+ "args")
    getter: Callable[[Any], tuple[Any, ...]] = tuple  # the values of a dataclass's fields
    template: tuple[str | None, ...] = ()  # (field1, None, field2, None, ...) for a dataclass
    # Run on every decoded instance, as the constructor would: a dataclass's __post_init__.
    validate: Callable[[Any], object] | None = None
    once: bool = False  # the class is @encoded_once: each instance keeps its encoding


@dataclasses.dataclass(frozen=True, slots=True)
class _Custom:
    cls: type
    name: str
    to_wire: Callable[[Any], Any]
    from_wire: Callable[[Any], Any]


_CLASSES: dict[str, type] = {}
_SPECS: dict[type, _Spec] = {}  # filled lazily: @serializable may run before @dataclass does
_CUSTOMS: dict[str, _Custom] = {}
_CUSTOM_BY_TYPE: dict[type, _Custom] = {}  # registered classes, plus subclasses once seen


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def serializable(cls: _C) -> _C:
    """Whitelist ``cls`` for the wire as ``f"{cls.__module__}:{cls.__qualname__}"``; return it.

    A later class of the same name replaces it. For dataclasses, apply it above ``@dataclass``
    (``slots=True`` makes a new class). Subclasses of builtin scalars and containers, other than
    enums and exceptions, are refused with ``TypeError``.
    """
    if not isinstance(cls, type):
        raise TypeError(f"@serializable applies to classes, not {cls!r}")
    if issubclass(cls, _BUILTIN_BASES) and not issubclass(cls, (enum.Enum, BaseException)):
        raise TypeError(f"@serializable cannot carry {cls.__qualname__}: it subclasses a builtin")
    old = _CLASSES.get(name := _qualified(cls))
    if old is not None:
        _SPECS.pop(old, None)
    _CLASSES[name] = cls
    return cls


_ONCE: Final = "__wire_encoded_once__"
_KEPT: Final = "__wire_encoding__"  # in an @encoded_once instance's __dict__: (bytes, depth)
_KEEP_LEVEL: Final = MAX_DEPTH // 2
_SPLIT_LEVELS: Final = 10


def encoded_once(cls: _C) -> _C:
    """Declare the frozen dataclass ``cls`` (apply it below ``@serializable``) immutable all the
    way down: the codec then encodes each instance once and keeps the bytes in the instance,
    so a value sent, stored and hashed several times is walked once. Instances must have a
    ``__dict__`` (no ``slots=True``). Keep it off classes holding anything that can change (a
    list, a dict, a mutable object): the kept bytes would go stale. Subclasses are not
    included: mark each class. The kept bytes are left out when the instance is pickled.

    The kept bytes are checked against ``MAX_DEPTH`` as if the instance sat half that deep (or
    where it sits, if deeper) and reused at that level or shallower; deeper, the instance is
    encoded again, so ``MAX_DEPTH`` holds wherever it is nested.
    """
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
            and cls.__dictoffset__):
        raise TypeError(f"@encoded_once applies to frozen dataclasses with a __dict__, not "
                        f"{cls.__qualname__}")
    setattr(cls, _ONCE, True)
    if "__getstate__" not in vars(cls):
        setattr(cls, "__getstate__", _state_without_kept)  # noqa: B010 (a class attribute)
    _SPECS.pop(cls, None)
    return cls


def _state_without_kept(self: object) -> dict[str, Any]:
    """An ``@encoded_once`` instance's state to pickle: its ``__dict__`` without the kept
    encoding, which is made again when needed."""
    state = dict(vars(self))
    state.pop(_KEPT, None)
    return state


def register_custom_type(
    cls: type, name: str, to_wire: Callable[[Any], Any], from_wire: Callable[[Any], Any]
) -> None:
    """Whitelist ``cls`` (and its subclasses), a type we do not own, under ``name``.

    ``to_wire(obj)`` returns an encodable value ``v``; the receiver builds ``from_wire(v)``.
    Registering ``name`` or ``cls`` again replaces the earlier registration.
    """
    for stale in [n for n, c in _CUSTOMS.items() if c.cls is cls or n == name]:
        unregister(stale)
    _CUSTOMS[name] = _Custom(cls, name, to_wire, from_wire)
    _CUSTOM_BY_TYPE.clear()  # cached subclasses may now have a closer match
    _CUSTOM_BY_TYPE.update((c.cls, c) for c in _CUSTOMS.values())


def unregister(name: str) -> None:
    """Forget the class or custom type whitelisted as ``name``, if any (for tests)."""
    cls = _CLASSES.pop(name, None)
    if cls is not None:
        _SPECS.pop(cls, None)
    if _CUSTOMS.pop(name, None) is not None:
        _CUSTOM_BY_TYPE.clear()
        _CUSTOM_BY_TYPE.update((c.cls, c) for c in _CUSTOMS.values())


def whitelisted_class(name: str) -> type | None:
    """The class marked ``@serializable`` under wire name ``name`` on this node, or None."""
    return _CLASSES.get(name)


def _custom_of(cls: type) -> _Custom | None:
    custom = _CUSTOM_BY_TYPE.get(cls)
    if custom is None:
        custom = next((c for c in _CUSTOMS.values() if issubclass(cls, c.cls)), None)
        if custom is not None:
            _CUSTOM_BY_TYPE[cls] = custom
    return custom


def _spec_of(cls: type) -> _Spec | None:
    spec = _SPECS.get(cls)
    if spec is None and _CLASSES.get(name := _qualified(cls)) is cls:
        spec = _SPECS[cls] = _make_spec(cls, name)
    return spec


def _make_spec(cls: type, name: str) -> _Spec:
    if issubclass(cls, enum.Enum):
        return _Spec(name, _K_FLAG if issubclass(cls, enum.Flag) else _K_ENUM, ())
    is_exc = issubclass(cls, BaseException)
    if dataclasses.is_dataclass(cls) and not is_exc:
        names = tuple(sorted(f.name for f in dataclasses.fields(cls)))
        get = attrgetter(*names) if names else lambda obj: ()
        getter = get if len(names) != 1 else lambda obj: (get(obj),)
        return _Spec(name, _K_DATA, names, getter, tuple(chain(*zip(names, repeat(None)))),
                     getattr(cls, "__post_init__", None), vars(cls).get(_ONCE, False))
    fields = ["args"] if is_exc else []
    for klass in cls.__mro__:
        declared = vars(klass).get("__slots__", ())
        for slot in [declared] if isinstance(declared, str) else declared:
            if slot.startswith("__") and not slot.endswith("__"):  # name-mangled private slot
                fields.append(f"_{klass.__name__.lstrip('_')}{slot}")
            elif slot not in ("__dict__", "__weakref__"):
                fields.append(slot)
    return _Spec(name, _K_OPEN if cls.__dictoffset__ else _K_SLOTS, tuple(sorted(fields)))


def is_whitelisted(cls: type) -> bool:
    """Whether instances of ``cls`` can cross the wire (the supported builtins included)."""
    return cls in _PRIMS or cls in _ENCODERS or bool(_spec_of(cls) or _custom_of(cls))


def whitelisted_name(cls: type) -> str:
    """The name ``cls`` travels under; ``SerializationError`` if it is not whitelisted."""
    custom = _custom_of(cls)
    if custom is not None and _spec_of(cls) is None:
        return custom.name
    if is_whitelisted(cls):
        return _qualified(cls)
    raise SerializationError(f"'{cls.__module__}.{cls.__qualname__}' is not whitelisted: {_FIX}")


# ---------------------------------------------------------------------------------------- encode


class _UnencodableError(Exception):
    """Internal: collects where the value sits while unwinding, for ``encode``'s message."""

    def __init__(self, what: str, hint: str = f"it is not whitelisted on the wire; {_FIX}") -> None:
        super().__init__(what)
        self.what, self.hint, self.field = what, hint, ""
        self.path: list[str] = []

    def render(self) -> str:
        where = f" in {self.field}" if self.field else ""
        where += f" at value{''.join(reversed(self.path))}" if self.path else ""
        return f"cannot encode {self.what}{where}: {self.hint}"


def _too_deep() -> SerializationError:
    return SerializationError(f"cannot encode: nesting deeper than {MAX_DEPTH} levels (a cycle?)")


def _conv(obj: Any, depth: int, prims: _Prims) -> Any:
    """``obj`` as msgspec-native values and marker arrays; it sits at nesting level ``depth``."""
    t = type(obj)
    if t in prims:
        return obj
    handler = _ENCODERS.get(t)
    if handler is not None:
        return handler(obj, depth, prims)
    spec = _spec_of(t)
    if spec is not None:
        return _obj_to_wire(obj, spec, depth, prims)
    custom = _custom_of(t)
    if custom is None:
        raise _UnencodableError(f"an object of type '{t.__module__}.{t.__qualname__}'")
    if depth > MAX_DEPTH:
        raise _too_deep()
    try:
        value = custom.to_wire(obj)
    except Exception as exc:
        raise SerializationError(f"to_wire of custom type {custom.name!r} failed: {exc}") from exc
    return [_M[_CUSTOM], custom.name, _conv(value, depth + 1, prims)]


def _items(src: Any, depth: int, prims: _Prims, out: list[Any]) -> list[Any]:
    start = len(out)
    try:
        for value in src:
            out.append(value if type(value) in prims else _conv(value, depth, prims))
    except _UnencodableError as exc:
        exc.path.append(f"[{len(out) - start}]")
        raise
    return out


def _seq_to_wire(obj: list[Any] | tuple[Any, ...], depth: int, prims: _Prims) -> Any:
    if depth > MAX_DEPTH:
        raise _too_deep()
    head = [] if type(obj) is list else [_M[_TUPLE]]
    if prims.issuperset(map(type, obj)):
        return obj if type(obj) is list else [*head, *obj]
    return _items(obj, depth + 1, prims, head)


def _set_to_wire(obj: set[Any] | frozenset[Any], depth: int, prims: _Prims) -> Any:
    if depth > MAX_DEPTH:
        raise _too_deep()
    try:
        elements = sorted([_ENC.encode(_conv(v, depth + 1, prims)) for v in obj])
    except _UnencodableError as exc:
        exc.path.append("{...}")
        raise
    return [_M[_SET if type(obj) is set else _FROZENSET], *map(msgspec.Raw, elements)]


def _dict_to_wire(obj: dict[Any, Any], depth: int, prims: _Prims) -> Any:
    if depth > MAX_DEPTH:
        raise _too_deep()
    str_keys = _STR.issuperset(map(type, obj))
    if str_keys and prims.issuperset(map(type, obj.values())):
        return obj
    native: dict[str, Any] = {}
    pairs: list[tuple[bytes, Any]] = []
    for key, value in obj.items():
        try:
            if str_keys:
                native[key] = value if type(value) in prims else _conv(value, depth + 1, prims)
            else:
                key_bytes = _ENC.encode(_conv(key, depth + 1, prims))
                pairs.append((key_bytes, _conv(value, depth + 1, prims)))
        except _UnencodableError as exc:
            exc.path.append(f"[{key!r:.40}]")
            raise
    if str_keys:
        return native
    pairs.sort(key=itemgetter(0))
    return [_M[_DICT], *(x for kb, v in pairs for x in (msgspec.Raw(kb), v))]


def _obj_to_wire(obj: Any, spec: _Spec, depth: int, prims: _Prims) -> Any:
    if depth > MAX_DEPTH:
        raise _too_deep()
    if spec.once:
        kept = obj.__dict__.get(_KEPT)
        if kept is not None and depth <= kept[1]:
            return msgspec.Raw(kept[0])
        # Invariant: the kept bytes are what the walk below encodes to, made at nesting level
        # kept[1] without passing MAX_DEPTH (so they fit at any level up to that one). Walked
        # as if at _KEEP_LEVEL at least, so that the bytes serve wherever the value is nested.
        level = max(depth, _KEEP_LEVEL)
        try:
            data = _ENC.encode(_fields_to_wire(obj, spec, level, prims))
        except SerializationError:
            if level == depth:
                raise
            level = depth  # deeper than _KEEP_LEVEL allows: keep it for this level only
            data = _ENC.encode(_fields_to_wire(obj, spec, level, prims))
        obj.__dict__[_KEPT] = (data, level)
        return msgspec.Raw(data)
    return _fields_to_wire(obj, spec, depth, prims)


def _fields_to_wire(obj: Any, spec: _Spec, depth: int, prims: _Prims) -> Any:
    if spec.kind == _K_ENUM:
        return [_M[_OBJECT], spec.name, obj.name]
    if spec.kind == _K_FLAG:
        return [_M[_OBJECT], spec.name, _conv(obj.value, depth + 1, prims)]
    if spec.kind == _K_DATA:
        out: list[Any] = [_M[_OBJECT], spec.name, *spec.template]
        try:
            out[3::2] = values = spec.getter(obj)
        except AttributeError as exc:
            raise SerializationError(f"cannot encode {type(obj).__qualname__}: {exc}") from exc
    else:
        state = [(n, v) for n in spec.fields if (v := getattr(obj, n, obj)) is not obj]
        if spec.kind == _K_OPEN:
            state += vars(obj).items()
            state.sort(key=itemgetter(0))
        out = [_M[_OBJECT], spec.name, *chain.from_iterable(state)]
        values = tuple(out[3::2])
    if prims.issuperset(map(type, values)):
        return out
    for i, value in enumerate(values, 1):
        if type(value) not in prims:
            try:
                out[2 * i + 1] = _conv(value, depth + 1, prims)
            except _UnencodableError as exc:
                exc.path.append(f".{out[2 * i]}")
                exc.field = exc.field or f"field {out[2 * i]!r} of {type(obj).__qualname__}"
                raise
    return out


def _int_to_wire(obj: int, depth: int, prims: _Prims) -> Any:
    if -(1 << 63) <= obj < 1 << 64:
        return obj
    size = (obj if obj >= 0 else ~obj).bit_length() // 8 + 1
    return msgspec.msgpack.Ext(_BIGINT, obj.to_bytes(size, "big", signed=True))


def _time_to_wire(obj: _dt.datetime | _dt.time, depth: int, prims: _Prims) -> Any:
    tz, flags, tail = obj.tzinfo, obj.fold, b""
    if tz is not None:
        if type(tz) is not _dt.timezone:
            raise _UnencodableError(
                f"a {type(obj).__name__} with tzinfo of type {type(tz).__qualname__}",
                "only fixed offsets (datetime.timezone) cross the wire; convert first, "
                "e.g. value.astimezone(datetime.timezone.utc)",
            )
        offset, name = tz.utcoffset(None), tz.tzname(None)
        flags, tail = flags | 2, _OFF.pack(offset // _US)
        if name != _dt.timezone(offset).tzname(None):
            flags, tail = flags | 4, tail + name.encode()
    clock = (obj.hour, obj.minute, obj.second, obj.microsecond, flags)
    if isinstance(obj, _dt.datetime):
        return msgspec.msgpack.Ext(_DATETIME, _DT.pack(obj.year, obj.month, obj.day, *clock) + tail)
    return msgspec.msgpack.Ext(_TIME, _TIME_S.pack(*clock) + tail)


def _leaf(code: int, to_bytes: Callable[[Any], bytes]) -> _Handler:
    return lambda obj, depth, prims: msgspec.msgpack.Ext(code, to_bytes(obj))


_ENCODERS: dict[type, _Handler] = {
    list: _seq_to_wire, tuple: _seq_to_wire, dict: _dict_to_wire,
    set: _set_to_wire, frozenset: _set_to_wire, int: _int_to_wire,
    _dt.datetime: _time_to_wire, _dt.time: _time_to_wire,
    _dt.date: _leaf(_DATE, lambda d: _DATE_S.pack(d.year, d.month, d.day)),
    _dt.timedelta: _leaf(_TIMEDELTA, lambda d: _TD.pack(d.days, d.seconds, d.microseconds)),
    Decimal: _leaf(_DECIMAL, lambda d: str(d).encode()),
    uuid.UUID: _leaf(_UUID, lambda u: u.bytes),
}


def _enc_hook(obj: Any) -> Any:
    # `_conv` hands msgspec only native values, so this is a bug guard: refuse, never guess.
    raise _UnencodableError(f"an object of type '{type(obj).__qualname__}'")


_ENC: Final = msgspec.msgpack.Encoder(enc_hook=_enc_hook, order="deterministic")
_OBJECT_MARK: Final = _ENC.encode(_M[_OBJECT])
_TUPLE_MARK: Final = _ENC.encode(_M[_TUPLE])


def encode(obj: object) -> bytes:
    """Encode ``obj`` in the module's format, in at most ``MAX_MESSAGE_SIZE`` bytes.

    Supported: None, bool, int, float, str, bytes, bytearray, memoryview, list, tuple, dict, set,
    frozenset, datetime, date, time, timedelta, Decimal, UUID and whitelisted classes, nested at
    most ``MAX_DEPTH`` deep. Anything else raises ``SerializationError`` saying where it was.
    """
    try:
        try:
            # A primitive (most payloads) needs no conversion: no call for it.
            data = _ENC.encode(obj if type(obj) in _PRIMS else _conv(obj, 1, _PRIMS))
        except OverflowError:  # an int beyond 64 bits in a container handed to msgspec as is
            data = _ENC.encode(_conv(obj, 1, _PRIMS_NO_INT))
    except _UnencodableError as exc:
        raise SerializationError(exc.render()) from None
    except UnicodeEncodeError as exc:
        raise SerializationError(f"cannot encode a str that is not valid UTF-8: {exc}") from None
    if len(data) > MAX_MESSAGE_SIZE:
        raise SerializationError(f"cannot encode: the message is {len(data)} bytes, over "
                                 f"MAX_MESSAGE_SIZE ({MAX_MESSAGE_SIZE}); send bulk data apart")
    return data


TUPLE_MARK: Final = _M[_TUPLE]
"""The first element of a tuple's array (``[TUPLE_MARK, *elements]``), for ``encode_built``."""
PLAIN: Final = _PRIMS
"""Types ``encode`` hands msgspec as they are (a tuple of only these is ``[TUPLE_MARK, *it]``)."""


def encode_built(built: Any, value: object) -> bytes:
    """``encode(value)``, from ``built``: the caller's own conversion of ``value`` (plain values
    as they are, tuples of them as ``[TUPLE_MARK, *elements]``, anything else as ``encode``
    converts it), which must be exactly what ``encode`` builds. It saves a recursion through
    the converters for records of a known shape written at every flow step; the bytes are the
    same. Where msgspec cannot take ``built`` (an int beyond 64 bits), or the result is oversize,
    it is ``encode(value)``, with its errors."""
    try:
        data = _ENC.encode(built)
    except (OverflowError, _UnencodableError, UnicodeEncodeError):
        return encode(value)
    if len(data) > MAX_MESSAGE_SIZE:
        return encode(value)
    return data


def encoded_fields(obj: object) -> dict[str, bytes]:
    """The encoding of each field of ``obj``, a whitelisted dataclass instance, exactly as it
    appears inside ``encode(obj)`` (which this makes, or reuses if ``obj`` is
    ``@encoded_once``: then the bytes it keeps also serve when ``obj`` is nested up to
    ``_SPLIT_LEVELS`` deeper than a plain ``encode`` would allow). Raises
    ``SerializationError`` as ``encode`` does."""
    data = None
    if (spec := _spec_of(type(obj))) is not None and spec.once:
        # Kept valid deeper than a plain encode keeps it: a value that holds obj (as a signed
        # transaction holds its transaction) then reuses these bytes when it is encoded.
        with suppress(SerializationError, _UnencodableError, OverflowError):
            data = _ENC.encode(_conv(obj, _KEEP_LEVEL + _SPLIT_LEVELS, _PRIMS))
    parts = _SPLIT.decode(encode(obj) if data is None else data)
    if len(parts) < 2 or bytes(parts[0]) != _OBJECT_MARK:
        raise SerializationError(f"{type(obj).__qualname__} does not encode as an object")
    names = [_DEC.decode(name) for name in parts[2::2]]
    return dict(zip(names, map(bytes, parts[3::2]), strict=True))


def encoded_items(data: bytes) -> list[bytes]:
    """The encodings of the elements of ``data``, the encoding of a list or tuple (as a value
    of ``encoded_fields`` holds it), in order: each is what ``encode`` makes of the element."""
    parts = _SPLIT.decode(data)
    if parts and bytes(parts[0]) == _TUPLE_MARK:
        parts = parts[1:]
    return list(map(bytes, parts))


# ---------------------------------------------------------------------------------------- decode


def _malformed(why: str) -> SerializationError:
    return SerializationError(f"malformed message: {why}")


def _tz_from_wire(flags: int, rest: memoryview) -> _dt.timezone | None:
    if flags & ~7 or flags & 6 == 4 or (not flags & 2 and rest):
        raise _malformed(f"bad time flags {flags} or length")
    if not flags & 2:
        return None
    offset = _OFF.unpack_from(rest)[0] * _US
    if flags & 4:
        return _dt.timezone(offset, bytes(rest[_OFF.size :]).decode())
    if len(rest) != _OFF.size:
        raise _malformed("trailing bytes after a time zone offset")
    return _dt.timezone(offset)


def _datetime_from_wire(data: memoryview) -> _dt.datetime:
    y, mo, d, h, mi, s, us, flags = _DT.unpack_from(data)
    tz = _tz_from_wire(flags, data[_DT.size :])
    return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=tz, fold=flags & 1)


def _time_from_wire(data: memoryview) -> _dt.time:
    h, mi, s, us, flags = _TIME_S.unpack_from(data)
    return _dt.time(h, mi, s, us, tzinfo=_tz_from_wire(flags, data[_TIME_S.size :]), fold=flags & 1)


_LEAF_DECODERS: dict[int, Callable[[memoryview], Any]] = {
    _BIGINT: lambda d: int.from_bytes(d, "big", signed=True),
    _DATETIME: _datetime_from_wire,
    _DATE: lambda d: _dt.date(*_DATE_S.unpack(d)),
    _TIME: _time_from_wire,
    _TIMEDELTA: lambda d: _dt.timedelta(*_TD.unpack(d)),
    _DECIMAL: lambda d: Decimal(bytes(d).decode("ascii")),
    _UUID: lambda d: uuid.UUID(bytes=bytes(d)),
}


def _ext_hook(code: int, data: memoryview) -> Any:
    try:
        return _LEAF_DECODERS[code](data) if data else _M[code]
    except KeyError:
        raise _malformed(f"unknown ext code {code} with {len(data)} bytes of payload") from None


_DEC: Final = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
_SPLIT: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])  # an array's elements, as bytes


def _revive(obj: Any, depth: int) -> Any:
    """The final form of a decoded value at nesting level ``depth``, validated."""
    t = type(obj)
    if t in _LEAVES:
        return obj
    if depth > MAX_DEPTH:
        raise _malformed(f"nesting deeper than {MAX_DEPTH} levels")
    if t is list:
        if obj and type(obj[0]) is msgspec.msgpack.Ext:
            return _REVIVERS[obj[0].code](obj, depth)
        return _revive_items(obj, depth + 1)
    if t is not dict:
        raise _malformed(f"unexpected {t.__name__} (a marker out of place?)")
    if not _STR.issuperset(map(type, obj)):
        raise _malformed("a map key that is not a str")
    if not _LEAVES.issuperset(map(type, obj.values())):
        for key, value in obj.items():
            if type(value) not in _LEAVES:
                obj[key] = _revive(value, depth + 1)
    return obj


def _revive_items(items: list[Any], depth: int) -> list[Any]:
    """Revive ``items``, each at level ``depth``, in place."""
    if not _LEAVES.issuperset(map(type, items)):
        for i, value in enumerate(items):
            if type(value) not in _LEAVES:
                items[i] = _revive(value, depth)
    return items


def _revive_collection(obj: list[Any], depth: int) -> Any:
    items, code = _revive_items(obj[1:], depth + 1), obj[0].code
    if code == _DICT:
        result: Any = dict(zip(items[::2], items[1::2], strict=True))
    else:
        result = (set if code == _SET else frozenset)(items)
    if len(result) * (2 if code == _DICT else 1) != len(items):
        raise _malformed(f"a {type(result).__name__} with duplicates")
    return result


def _check_fields(spec: _Spec, names: list[Any]) -> None:
    if not _STR.issuperset(map(type, names)) or len(set(names)) != len(names):
        raise _malformed(f"bad field names for {spec.name!r}")
    known, differs = set(spec.fields), "the sender's version of the class differs from this node's"
    # A class whose instances have a __dict__ declares no field list: any attribute can be one,
    # but not a dunder such as __class__ or __dict__.
    extra = sorted(n for n in names if n not in known and (
        spec.kind != _K_OPEN or (n.startswith("__") and n != "__notes__")))
    if extra:
        raise SerializationError(f"class {spec.name!r} on this node has no field(s) "
                                 f"{', '.join(map(repr, extra))}: {differs}")
    if spec.kind == _K_DATA:
        missing = ", ".join(map(repr, sorted(known.difference(names))))
        raise SerializationError(f"the message lacks field(s) {missing} of class {spec.name!r}: "
                                 f"{differs}")


def _revive_object(obj: list[Any], depth: int) -> Any:
    if len(obj) < 2 or type(obj[1]) is not str:
        raise _malformed("bad object header")
    cls: Any = _CLASSES.get(obj[1])
    spec = None if cls is None else _SPECS.get(cls) or _spec_of(cls)
    if spec is None:
        raise SerializationError(
            f"class {obj[1]!r} is not whitelisted on this node, so it cannot be decoded: mark it "
            "@serializable (from fibers import serializable) in this node's code and import its "
            "module before such messages arrive"
        )
    if spec.kind in (_K_ENUM, _K_FLAG):
        if len(obj) != 3:
            raise _malformed(f"bad enum value for {spec.name!r}")
        if spec.kind == _K_FLAG:
            return cls(_revive(obj[2], depth + 1))
        member = cls.__members__.get(obj[2]) if type(obj[2]) is str else None
        if member is None:
            raise SerializationError(f"enum {spec.name!r} on this node has no member {obj[2]!r}")
        return member
    names, values = obj[2::2], obj[3::2]
    if len(names) != len(values):
        raise _malformed(f"odd field list for {spec.name!r}")
    if spec.kind != _K_DATA or tuple(names) != spec.fields:
        _check_fields(spec, names)
    _revive_items(values, depth + 1)
    instance = cls.__new__(cls)
    any(map(object.__setattr__, repeat(instance), names, values))  # a C loop: each returns None
    if spec.validate is not None:
        _validated(spec, instance)
    return instance


def _validated(spec: _Spec, instance: Any) -> None:
    """Run the class's own field checks on a decoded ``instance`` (see ``_Spec.validate``)."""
    assert spec.validate is not None
    try:
        spec.validate(instance)
    except Exception as exc:
        raise SerializationError(f"a {spec.name!r} with invalid fields was refused: "
                                 f"{describe_error(exc)}") from None


def describe_error(exc: BaseException) -> str:
    """``str(exc)``, or its type name if even that fails (a message formatting an int of more
    than ``sys.get_int_max_str_digits()`` digits raises ``ValueError``). Never raises."""
    try:
        return str(exc)
    except Exception:
        return f"{type(exc).__name__} (its message could not be formatted)"


def _revive_custom(obj: list[Any], depth: int) -> Any:
    if len(obj) != 3 or type(obj[1]) is not str:
        raise _malformed("bad custom value")
    custom = _CUSTOMS.get(obj[1])
    if custom is None:
        raise SerializationError(f"custom type {obj[1]!r} is not registered on this node, so it "
                                 "cannot be decoded: call register_custom_type for it here too")
    value = _revive(obj[2], depth + 1)
    try:
        return custom.from_wire(value)
    except Exception as exc:
        raise _malformed(f"from_wire of custom type {custom.name!r} failed: {exc}") from exc


_REVIVERS: dict[int, Callable[[list[Any], int], Any]] = {
    _TUPLE: lambda obj, depth: tuple(_revive_items(obj[1:], depth + 1)),
    _SET: _revive_collection, _FROZENSET: _revive_collection, _DICT: _revive_collection,
    _OBJECT: _revive_object, _CUSTOM: _revive_custom,
}


def decode(data: bytes | memoryview) -> object:
    """Decode one message made by :func:`encode`.

    Builds only builtins, the supported stdlib types and classes whitelisted on this node.
    Raises ``SerializationError``, never anything else, for bytes it cannot accept: malformed,
    truncated, over ``MAX_MESSAGE_SIZE`` or ``MAX_DEPTH``, naming a class this node has not
    whitelisted, carrying fields this node's version of a class does not have, or values its
    ``__post_init__`` refuses.
    """
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > MAX_MESSAGE_SIZE:
        raise _malformed(f"{size} bytes is over MAX_MESSAGE_SIZE ({MAX_MESSAGE_SIZE})")
    try:
        obj = _DEC.decode(data)
        return obj if type(obj) in _LEAVES else _revive(obj, 1)
    except SerializationError:
        raise
    except msgspec.DecodeError as exc:
        raise _malformed(str(exc)) from exc
    except Exception as exc:  # hostile bytes can trip anything from struct to Decimal
        raise _malformed(f"{type(exc).__name__}: {describe_error(exc)}") from exc
