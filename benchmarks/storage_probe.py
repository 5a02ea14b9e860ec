"""Micro-benchmarks for node storage and the checkpoint codec (a report, not a test).

Run: ``python benchmarks/storage_probe.py [scratch_dir]``. The scratch directory should be on the
disk the node will use: synced commit cost is an fsync, so it is a property of that disk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType

import lmdb

from fibers._checkpoint import SerializeAsToken, TokenContext, dumps
from fibers._frame_snapshots import capture_frames
from fibers._storage import NodeStorage, Txn, journal_key


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    """Best of 7 rounds of the mean cost of ``fn()`` in microseconds (noise only adds time)."""
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - start) / repeat * 1e6)
    return min(rounds)


MAC_RECORD_SIZES = (100, 300, 1000, 3000, 10_000)
"""Payload sizes of the records the engine seals: small journal entries to large snapshots."""


def mac_costs(sizes: tuple[int, ...] = MAC_RECORD_SIZES) -> list[tuple[int, float, float]]:
    """(size, HMAC-SHA256 µs, keyed BLAKE2b-256 µs) of one MAC over a record of each size.

    Both are measured in this process, alternating per size, on the same header + payload bytes
    and a 32-byte key, the way ``NodeStorage`` seals (one-shot, no object reuse)."""
    key = os.urandom(32)
    header = b"\x03\x00\x09snapshots\x00\x00\x00\x18" + os.urandom(24)
    rows = []
    for size in sizes:
        message = header + os.urandom(size)
        repeat = max(2000, 2_000_000 // (size + 200))
        sha = per_call_us(partial(hmac.digest, key, message, "sha256"), repeat)
        blake = per_call_us(partial(_blake2b_mac, key, message), repeat)
        rows.append((size, sha, blake))
    return rows


VALUE_SIZES = (256, 512, 1024, 2048, 4096, 16_384)
"""Pickle sizes of a frozen value a flow holds (fibers._frame_snapshots.VALUE_THRESHOLD)."""


def value_costs(scratch: Path, sizes: tuple[int, ...] = VALUE_SIZES,
                steps: int = 2000) -> list[tuple[int, float, float]]:
    """(size, extra µs per step record carrying the value inline rather than a 33-byte
    reference, µs once to hash it and store it as a ``values`` record): what the
    content-addressing threshold weighs. Puts in one unsynced group, best of 7."""
    storage = NodeStorage.open(scratch / "values", sync=False)
    for name in ("steps", "values"):
        storage.prepare(name)
    step = os.urandom(250)  # a step record's journal entries and chain
    ref = b"\x03" + os.urandom(32)

    def puts(db: str, payload: bytes, hashed: bool) -> float:
        def write(txn: Txn) -> None:
            for i in range(steps):
                if hashed:
                    hashlib.blake2b(payload, digest_size=32).digest()
                storage.put_sealed(txn, db, i.to_bytes(16, "big") + ref, payload)

        def group() -> None:
            with storage.group() as writes:
                writes.step(write)

        return per_call_us(group, 1) / steps

    rows = []
    for size in sizes:
        value = os.urandom(size)
        inline = puts("steps", step + value, False)
        referenced = puts("steps", step + ref, False)
        rows.append((size, inline - referenced, puts("values", value, True)))
    storage.close()
    return rows


def _blake2b_mac(key: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(message, key=key, digest_size=32).digest()


def raw_commit(scratch: Path, *, sync: bool) -> float:
    env = lmdb.open(str(scratch / f"raw-{sync}"), map_size=1 << 30, max_dbs=4, sync=sync)
    db = env.open_db(b"flows")
    value = os.urandom(200)
    counter = iter(range(10**9))

    def commit_one() -> None:
        with env.begin(write=True) as txn:
            txn.put(next(counter).to_bytes(8, "big"), value, db=db)

    try:
        return per_call_us(commit_one, 200)
    finally:
        env.close()


def group_step(scratch: Path, *, sync: bool, steps: int = 1000) -> tuple[float, float]:
    """(µs per step including its share of the commit, µs of the commit alone)."""
    storage = NodeStorage.open(scratch / f"group-{sync}", sync=sync)
    value = os.urandom(200)
    run_id = os.urandom(16)
    index = iter(range(10**9))

    def step(txn: Txn) -> None:
        i = next(index)
        storage.put(txn, "journal", journal_key(run_id, i), value)
        storage.put(txn, "snapshots", run_id + i.to_bytes(4, "big"), value)
        storage.put(txn, "outbox", i.to_bytes(8, "big") + run_id, value)

    totals, commits = [], []
    try:
        for _ in range(5):
            start = time.perf_counter()
            group = storage.group()
            with group:
                for _ in range(steps):
                    group.step(step)
                before_commit = time.perf_counter()
            end = time.perf_counter()
            totals.append((end - start) / steps * 1e6)
            commits.append((end - before_commit) * 1e6)
        return sorted(totals)[2], sorted(commits)[2]
    finally:
        storage.close()


class _Vault(SerializeAsToken):
    pass


def _outer(vault: _Vault) -> list[FrameType]:
    party = "O=Bank A, L=London, C=GB"
    nonce = 12345
    timeout = 30.0
    tags = ("x", "y")
    assert nonce and timeout and tags
    return _middle(party, vault)


def _middle(party: str, vault: _Vault) -> list[FrameType]:
    quantity = 1000
    currency = "USD"
    found = {"x": 1}
    assert currency and found
    return _inner(party, quantity, vault)


def _inner(party: str, amount: int, vault: _Vault) -> list[FrameType]:
    ref = b"\x01" * 32
    ok = True
    assert ref and ok
    return _chain_of_callers(3)


def _chain_of_callers(depth: int) -> list[FrameType]:
    frames: list[FrameType] = []
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        assert frame is not None
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


def frames_with_locals(vault: _Vault) -> list[FrameType]:
    """Three frames with ~5 small locals each (one a service), like a flow's suspendable chain."""
    return _outer(vault)


def main() -> None:
    scratch = Path(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
    print(f"scratch: {scratch}")
    print(f"raw LMDB commit of one 200 B put, synced:   {raw_commit(scratch, sync=True):8.1f} µs")
    print(f"raw LMDB commit of one 200 B put, unsynced: {raw_commit(scratch, sync=False):8.1f} µs")
    for sync in (True, False):
        per_step, commit = group_step(scratch, sync=sync)
        print(
            f"group of 1000 steps x 3 puts (sync={sync!s:5}): {per_step:6.1f} µs/step "
            f"(commit {commit:8.1f} µs)"
        )

    storage = NodeStorage.open(scratch / "seal")
    payload = os.urandom(1024)
    key = journal_key(os.urandom(16), 7)
    blob = storage.seal("snapshots", key, payload)
    seal_us = per_call_us(lambda: storage.seal("snapshots", key, payload), 20000)
    unseal_us = per_call_us(lambda: storage.unseal("snapshots", key, blob), 20000)
    print(f"seal 1 KB:   {seal_us:6.2f} µs")
    print(f"unseal 1 KB: {unseal_us:6.2f} µs")
    print("MAC of one record:  size   HMAC-SHA256   keyed BLAKE2b-256   BLAKE2b/HMAC")
    for size, sha, blake in mac_costs():
        print(f"                  {size:6,} B {sha:9.2f} µs {blake:13.2f} µs {blake / sha:14.2f}x")
    storage.close()
    print("frozen value held:  size   inline, extra per step   hash + own record, once")
    for size, extra, once in value_costs(scratch):
        print(f"                  {size:6,} B {extra:16.2f} µs {once:20.2f} µs")

    tokens = TokenContext()
    vault = _Vault()
    tokens.register(vault)
    frames = frames_with_locals(vault)
    lock_frames = [*frames[:2], _frame_with_lock()]
    lambda_frames = [*frames, _frame_with_lambda()]
    small = {"a": 1, "b": "hello", "c": [1, 2, 3], "d": 3.5, "e": b"xx"}
    probes: list[tuple[str, Callable[[], object], int]] = [
        ("pickle.dumps of a 5-entry dict", lambda: pickle.dumps(small, 5), 20000),
        ("checkpoint dumps of that dict", lambda: dumps(small, tokens), 20000),
        ("capture_frames, 3 frames x ~5 locals", lambda: capture_frames(frames, tokens), 5000),
        ("  same, innermost frame holds a lock", lambda: capture_frames(lock_frames, tokens), 5000),
        ("  same, plus a lambda local (dill)", lambda: capture_frames(lambda_frames, tokens), 200),
    ]
    for label, fn, repeat in probes:
        print(f"{label:40} {per_call_us(fn, repeat):8.2f} µs")


def _frame_with_lambda() -> FrameType:
    double = lambda x: x * 2  # noqa: E731
    assert callable(double)
    return sys._getframe()


def _frame_with_lock() -> FrameType:
    lock = threading.Lock()
    count = 1
    assert lock and count
    return sys._getframe()


if __name__ == "__main__":
    main()
