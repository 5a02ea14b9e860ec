"""RPC users: scrypt-hashed passwords and permissions (see docs/rpc.md).

A password hash is ``scrypt$N$r$p$<salt b64>$<hash b64>`` (``hashlib.scrypt``, dklen 32).
Permissions are ``ALL``, ``StartFlow.<class>`` (the flow's ``module:qualname``,
``module.qualname`` or ``qualname``) and ``InvokeRpc.<operation>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["ALL", "FailureBackoff", "User", "Users", "hash_password", "verify_password"]

ALL = "ALL"
_DKLEN = 32
_PERMISSION = re.compile(r"ALL|(StartFlow|InvokeRpc)\.[A-Za-z_][A-Za-z0-9_.:]*")


def hash_password(password: str, *, n: int = 16384, r: int = 8, p: int = 1) -> str:
    """``password`` hashed with a fresh salt, in the format of docs/rpc.md."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN)
    return (f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches ``password_hash``; False for a malformed hash too."""
    try:
        scheme, n, r, p, salt, digest = password_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class User:
    """An RPC user: name, password hash and permissions."""

    username: str
    password_hash: str
    permissions: frozenset[str]

    def __post_init__(self) -> None:
        # A permission that looks like more than it grants ("all", "StartFlow.*") is refused
        # here rather than silently granting nothing: its owner would not know why.
        for permission in sorted(self.permissions):
            if not _PERMISSION.fullmatch(permission):
                hint = " (did you mean ALL?)" if permission.strip().upper() == ALL else ""
                raise ValueError(
                    f"permission {permission!r} of RPC user {self.username!r} is not ALL, "
                    f"StartFlow.<flow class> or InvokeRpc.<operation>{hint}: there are no "
                    "wildcards, and names are case-sensitive")

    def may(self, accepted: Iterable[str]) -> bool:
        """Whether the user holds ``ALL`` or one of the ``accepted`` permissions."""
        return ALL in self.permissions or any(a in self.permissions for a in accepted)


class Users:
    """The users of one server; checks credentials. A successful check is remembered (keyed
    by an HMAC of the password under a per-process key) so that scrypt, which is slow on
    purpose, runs once per user and password rather than on every request."""

    def __init__(self, users: Iterable[User]) -> None:
        self._users = {u.username: u for u in users}
        # The decoy costs what a real user's check costs: same scrypt parameters.
        self._decoy = hash_password(os.urandom(16).hex(), **_cost_of(
            next(iter(self._users.values())).password_hash if self._users else ""))
        self._key = os.urandom(32)
        self._verified: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def authenticate(self, username: str, password: str) -> User | None:
        """The user, if ``password`` is theirs; None otherwise (unknown user included)."""
        user = self._users.get(username)
        if user is None:
            # As slow as a wrong password, so that timing does not tell which users exist.
            verify_password(password, self._decoy)
            return None
        token = (username, hmac.new(self._key, password.encode(), "sha256").digest())
        with self._lock:
            if token in self._verified:
                return user
        if not verify_password(password, user.password_hash):
            return None
        with self._lock:
            self._verified.add(token)
        return user


def _cost_of(password_hash: str) -> dict[str, int]:
    """The scrypt parameters (n, r, p) of ``password_hash``; the defaults if malformed."""
    try:
        scheme, n, r, p, _salt, _digest = password_hash.split("$")
        if scheme == "scrypt":
            return {"n": int(n), "r": int(r), "p": int(p)}
    except ValueError:
        pass
    return {}


class FailureBackoff:
    """Failed logins per client address: after ``free`` failures in a row, the address must
    wait ``first`` seconds before it is heard again, doubling with each further failure up to
    ``longest``; a success clears it. Per address and not per user, so that nobody can lock
    the operator out by failing in their name; an attacker with many addresses is slowed per
    address only (docs/rpc.md). At most ``max_tracked`` addresses are remembered (the
    longest-quiet ones are forgotten first), so memory stays bounded. Thread-safe."""

    def __init__(self, *, free: int = 5, first: float = 1.0, longest: float = 60.0,
                 max_tracked: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.first, self.longest = free, first, longest
        self.max_tracked = max_tracked
        self._clock = clock
        self._lock = threading.Lock()
        # Invariant: address -> (failures in a row, not heard again before this time);
        # in the order the addresses last failed.
        self._failures: dict[str, tuple[int, float]] = {}

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try to log in again (0: now)."""
        with self._lock:
            _count, until = self._failures.get(address, (0, 0.0))
        return max(0.0, until - self._clock())

    def failed(self, address: str) -> None:
        """Count a failed login from ``address``."""
        with self._lock:
            count, _until = self._failures.pop(address, (0, 0.0))
            count += 1
            until = 0.0
            if count >= self.free:
                doubling = 2 ** min(count - self.free, 30)
                until = self._clock() + min(self.first * doubling, self.longest)
            self._failures[address] = (count, until)
            while len(self._failures) > self.max_tracked:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        """``address`` logged in: its failures are forgotten."""
        with self._lock:
            self._failures.pop(address, None)
