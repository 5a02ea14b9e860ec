"""The checkpoint codec: service tokens, dill fallback, frame snapshots, code fingerprints."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, FunctionType
from typing import ClassVar

import pytest

from fibers._checkpoint import CheckpointError, SerializeAsToken, TokenContext, dumps, loads
from fibers._frame_snapshots import (
    VALUE_THRESHOLD,
    FrameSnapshot,
    SnapshotCache,
    SnapshotValues,
    Unserialisable,
    capture_frames,
    code_fingerprint,
    decode_snapshots,
    describe_local,
    encode_snapshots,
    value_digest,
    value_of_ref,
)

PICKLE_TAG, DILL_TAG = 0x01, 0x02


class Vault(SerializeAsToken):
    def __init__(self) -> None:
        self.states: list[str] = []


class Notary(SerializeAsToken):
    def __init__(self, name: str) -> None:
        self.name = name

    def serialization_token(self) -> str:
        return f"notary:{self.name}"


@dataclass(frozen=True)
class Order:
    item: str
    quantity: int


def node_tokens(*services: SerializeAsToken) -> TokenContext:
    tokens = TokenContext()
    for service in services:
        tokens.register(service)
    return tokens


@pytest.fixture
def tokens() -> TokenContext:
    return node_tokens(Vault())


# -- dumps / loads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 42, "text", b"\x00bytes", [1, (2, 3.5)], {"a": {1, 2}}, Order("cp", 3), OSError(2, "x")],
    ids=repr,
)
def test_plain_objects_round_trip_with_the_c_pickler(value: object, tokens: TokenContext) -> None:
    data = dumps(value, tokens)
    assert data[0] == PICKLE_TAG
    restored = loads(data, tokens)
    assert type(restored) is type(value)
    assert repr(restored) == repr(value)


def test_service_comes_back_as_the_live_instance_of_the_restoring_node() -> None:
    old_vault, old_notary = Vault(), Notary("N1")
    data = dumps(
        {"flow": [Order("cp", 1), (old_vault, old_notary)]}, node_tokens(old_vault, old_notary)
    )

    new_vault, new_notary = Vault(), Notary("N1")
    restored = loads(data, node_tokens(new_notary, new_vault))

    assert isinstance(restored, dict)
    services = restored["flow"][1]
    assert services[0] is new_vault and services[1] is new_notary
    assert data.count(b"notary:N1") == 1


def test_default_token_is_the_qualified_class_name() -> None:
    assert Vault().serialization_token() == f"{__name__}:Vault"


def test_registering_two_instances_under_one_token_is_an_error() -> None:
    tokens = node_tokens(Vault())
    with pytest.raises(CheckpointError, match="already registered to another instance"):
        tokens.register(Vault())


def test_dumps_refuses_a_service_of_another_node(tokens: TokenContext) -> None:
    with pytest.raises(CheckpointError, match="not a service registered on this node"):
        dumps([Vault()], tokens)


def test_unknown_token_on_load_names_the_token() -> None:
    notary = Notary("N2")
    data = dumps(notary, node_tokens(notary))
    with pytest.raises(CheckpointError, match="refers to service 'notary:N2', which is not"):
        loads(data, TokenContext())


def test_lambda_falls_back_to_dill(tokens: TokenContext) -> None:
    offset = 5
    data = dumps({"f": lambda x: x + offset}, tokens)
    assert data[0] == DILL_TAG
    restored = loads(data, tokens)
    assert isinstance(restored, dict) and restored["f"](1) == 6


def test_local_class_instance_with_a_service_falls_back_to_dill(tokens: TokenContext) -> None:
    vault = tokens.resolve(f"{__name__}:Vault")

    class Local:
        def __init__(self) -> None:
            self.service = vault
            self.count = 3

    data = dumps(Local(), tokens)
    assert data[0] == DILL_TAG
    new_vault = Vault()
    restored = loads(data, node_tokens(new_vault))
    assert type(restored).__name__ == "Local"
    assert restored.service is new_vault and restored.count == 3  # type: ignore[attr-defined]


def test_unpicklable_object_is_a_checkpoint_error_naming_its_type(tokens: TokenContext) -> None:
    with pytest.raises(CheckpointError, match="cannot checkpoint generator"):
        dumps((i for i in range(3)), tokens)


def test_dill_is_not_used_for_os_resources(tokens: TokenContext, tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as file, pytest.raises(CheckpointError, match="OS resource"):
        dumps([file, lambda: None], tokens)
    with pytest.raises(CheckpointError, match="OS resource"):
        dumps(threading.Lock(), tokens)


def test_loads_reports_bad_data_as_checkpoint_error(tokens: TokenContext) -> None:
    with pytest.raises(CheckpointError, match="unknown checkpoint codec tag"):
        loads(b"\x09" + pickle.dumps(1), tokens)
    with pytest.raises(CheckpointError, match="cannot restore checkpoint data"):
        loads(b"\x01\x80\x05garbage", tokens)
    missing_class = b"\x01" + pickle.dumps(Order("x", 1)).replace(b"Order", b"Gone1")
    with pytest.raises(CheckpointError, match="AttributeError") as raised:
        loads(missing_class, tokens)
    assert isinstance(raised.value.__cause__, AttributeError)


# -- frame snapshots ---------------------------------------------------------------------------


def capture_here(tokens: TokenContext) -> tuple[list[FrameSnapshot], int]:
    vault = tokens.resolve(f"{__name__}:Vault")
    order = Order("cp", 2)
    lock = threading.Lock()
    sock = socket.socket()
    try:
        step = lambda: order.quantity  # noqa: E731
        frame = sys._getframe()
        assert vault and step
        snapshots, line = capture_frames([frame], tokens), frame.f_lineno
        return snapshots, line
    finally:
        sock.close()
        assert lock


def test_capture_keeps_unserialisable_locals_and_round_trips_the_rest(
    tokens: TokenContext,
) -> None:
    [snapshot], line = capture_here(tokens)
    local = snapshot.locals

    assert local["lock"] == Unserialisable("_thread.lock", local["lock"].repr)  # type: ignore[union-attr]
    assert local["lock"].repr.startswith("<unlocked _thread.lock object")  # type: ignore[union-attr]
    assert isinstance(local["sock"], Unserialisable)
    assert local["sock"].type_name == "socket.socket"
    assert local["sock"].repr.startswith("<socket.socket fd=")
    assert isinstance(local["frame"], Unserialisable) and local["frame"].type_name == "frame"

    new_vault = Vault()
    restored = {
        name: loads(value, node_tokens(new_vault))
        for name, value in local.items()
        if isinstance(value, bytes)
    }
    assert restored["order"] == Order("cp", 2)
    assert restored["vault"] is new_vault
    assert restored["step"]() == 2
    assert local["order"][0] == PICKLE_TAG and local["step"][0] == DILL_TAG  # type: ignore[index]

    assert snapshot.module == __name__
    assert snapshot.qualname == "capture_here"
    assert snapshot.filename == __file__
    assert snapshot.line == line
    assert snapshot.code_fingerprint == code_fingerprint(capture_here.__code__)


class Hostile:
    def __reduce__(self) -> tuple[object, ...]:
        raise ValueError("no pickling")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_capture_never_raises(tokens: TokenContext) -> None:
    def holder() -> list[FrameSnapshot]:
        hostile = Hostile()
        stranger = Vault()  # a service that is not this node's
        long_text = "x" * 1000
        assert hostile and stranger and long_text
        return capture_frames([sys._getframe()], tokens)

    [snapshot] = holder()
    hostile = snapshot.locals["hostile"]
    assert isinstance(hostile, Unserialisable) and hostile.type_name == f"{__name__}.Hostile"
    assert hostile.repr.startswith("<Hostile instance at 0x")  # reprlib's stand-in
    stranger = snapshot.locals["stranger"]
    assert isinstance(stranger, Unserialisable) and stranger.type_name == f"{__name__}.Vault"
    assert loads(snapshot.locals["long_text"], tokens) == "x" * 1000  # type: ignore[arg-type]


def test_snapshots_encode_and_decode(tokens: TokenContext) -> None:
    snapshots, _ = capture_here(tokens)
    snapshots.append(FrameSnapshot("m", "f", "m.py", 1, "00" * 8, {}))
    assert decode_snapshots(encode_snapshots(snapshots)) == snapshots


def test_decode_snapshots_rejects_malformed_data() -> None:
    with pytest.raises(CheckpointError, match="malformed frame snapshot data"):
        decode_snapshots(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"refers to \w+\.system"):
        decode_snapshots(pickle.dumps((1, ((os.system,),))))
    with pytest.raises(CheckpointError, match="snapshot format 2"):
        decode_snapshots(pickle.dumps((2, ())))
    with pytest.raises(CheckpointError, match="bad local entry"):
        decode_snapshots(pickle.dumps((1, (("m", "f", "m.py", 1, "fp", (("x", 1),)),))))


def test_describe_local(tokens: TokenContext) -> None:
    assert describe_local(dumps({"a": [1, 2]}, tokens), tokens) == "{'a': [1, 2]}"
    assert (
        describe_local(Unserialisable("_thread.lock", "<unlocked lock>"), tokens)
        == "<unserialisable _thread.lock: <unlocked lock>>"
    )
    long = describe_local(dumps("y" * 1000, tokens), tokens)
    assert len(long) <= 200 and long.startswith("'yyy")
    notary = Notary("N3")
    unreadable = describe_local(dumps(notary, node_tokens(notary)), tokens)
    assert unreadable.startswith("<unreadable: checkpoint refers to service 'notary:N3'")


# -- code fingerprints -------------------------------------------------------------------------

FLOW_SOURCE = """
def call(self, other):
    reply = self.send_and_receive(other, "ping", str)
    def check(s):
        return s == "pong"
    return reply.unwrap(check)
"""


def compile_function(source: str, name: str = "call") -> FunctionType:
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(source), "flows.py", "exec"), namespace)
    function = namespace[name]
    assert isinstance(function, FunctionType)
    return function


def fingerprint(source: str) -> str:
    return code_fingerprint(compile_function(source).__code__)


def test_fingerprint_is_stable_when_lines_move_or_comments_are_added() -> None:
    original = fingerprint(FLOW_SOURCE)
    assert len(original) == 16 and int(original, 16) >= 0
    assert fingerprint("\n\n# a new comment\n" + FLOW_SOURCE) == original
    commented = FLOW_SOURCE.replace("    return reply", "    # why we unwrap\n\n    return reply")
    assert fingerprint(commented) == original


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    return reply", '    logger.info("got reply")\n    return reply'),
        ('s == "pong"', 's == "PONG"'),  # only the nested function changes
        ("reply = ", "answer = reply = "),
    ],
)
def test_fingerprint_changes_when_the_body_changes(old: str, new: str) -> None:
    assert new.replace(old, "") != ""
    assert fingerprint(FLOW_SOURCE.replace(old, new)) != fingerprint(FLOW_SOURCE)


def test_fingerprint_does_not_depend_on_hash_randomisation() -> None:
    source = 'def call(x):\n    return x in {"alpha", "beta", "gamma", "delta", 1.5, b"raw"}\n'
    script = (
        "import sys\n"
        "from fibers._frame_snapshots import code_fingerprint\n"
        "namespace = {}\n"
        "exec(compile(sys.argv[1], 'flows.py', 'exec'), namespace)\n"
        "print(code_fingerprint(namespace['call'].__code__), end='')\n"
    )
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "2" else "2"
    other_process = subprocess.run(
        [sys.executable, "-c", script, source],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert other_process == fingerprint(source)


# -- content-addressed values ------------------------------------------------------------------


@dataclass(frozen=True)
class Counted:
    """A frozen value that counts how often it is pickled."""

    body: bytes
    pickled: ClassVar[list[int]] = [0]

    def __reduce__(self) -> tuple[object, ...]:
        type(self).pickled[0] += 1
        return (Counted, (self.body,))


def _frame_of(big: Counted, text: str, blob: bytes, small: Order,
              big_list: list[bytes]) -> FrameType:
    """A finished frame holding exactly these locals."""
    return sys._getframe()


def _capture_of(frame: FrameType, tokens: TokenContext, cache: SnapshotCache,
                stored: set[bytes]) -> tuple[FrameSnapshot, SnapshotValues]:
    values: SnapshotValues = []
    [snapshot] = capture_frames([frame], tokens, cache=cache, values=values, stored=stored)
    return snapshot, values


def test_large_frozen_values_are_referenced_and_pickled_once_per_flow(
    tokens: TokenContext,
) -> None:
    big = Counted(b"x" * 4096)
    text, blob, small = "t" * VALUE_THRESHOLD, b"b" * VALUE_THRESHOLD, Order("cp", 1)
    big_list = [b"y" * 4096]  # large, but not frozen: inline
    frame = _frame_of(big, text, blob, small, big_list)
    cache: SnapshotCache = {}
    stored: set[bytes] = set()
    Counted.pickled[0] = 0
    first, values = _capture_of(frame, tokens, cache, stored)
    refs = {name: value_of_ref(v) for name, v in first.locals.items() if isinstance(v, bytes)}
    assert refs["big"] is not None and refs["text"] is not None and refs["blob"] is not None
    assert refs["small"] is None and refs["big_list"] is None
    assert len(values) == 3 and Counted.pickled[0] == 1
    assert all(value_digest(pickled) == digest for digest, pickled in values)
    by_digest = dict(values)
    ref = refs["big"]
    assert ref is not None and loads(by_digest[ref], tokens) == big
    stored.update(by_digest)
    second, again = _capture_of(frame, tokens, cache, stored)
    assert again == [] and Counted.pickled[0] == 1  # stored for this flow: not even pickled
    assert second.locals == first.locals
    fresh, carried = _capture_of(frame, tokens, {}, stored)  # a cache that forgot them
    assert carried == [] and fresh.locals == first.locals  # pickled, hashed, not carried


def test_a_reference_whose_value_is_not_stored_is_pickled_again(tokens: TokenContext) -> None:
    """A capture that is not written (inspection) leaves references in the flow's cache; the
    next capture must carry the value again rather than reference a record never written."""
    frame = _frame_of(Counted(b"z" * 4096), "", b"", Order("cp", 1), [])
    cache: SnapshotCache = {}
    Counted.pickled[0] = 0
    assert len(_capture_of(frame, tokens, cache, set())[1]) == 1
    assert len(_capture_of(frame, tokens, cache, set())[1]) == 1
    assert Counted.pickled[0] == 2


def test_describe_local_resolves_references_and_names_a_bad_one(tokens: TokenContext) -> None:
    pickled = dumps("v" * 2000, tokens)
    digest = value_digest(pickled)
    ref = b"\x03" + digest
    assert value_of_ref(ref) == digest
    assert describe_local(ref, tokens, {digest: pickled}.__getitem__).startswith("'vvv")

    def missing(wanted: bytes) -> bytes:
        raise CheckpointError(f"the value record {wanted.hex()} is missing")

    assert describe_local(ref, tokens, missing) == (
        f"<unreadable: the value record {digest.hex()} is missing>")
    assert "no store" in describe_local(ref, tokens)
