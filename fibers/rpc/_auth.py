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
import threading
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ALL", "User", "Users", "hash_password", "verify_password"]

ALL = "ALL"
_DKLEN = 32


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

    def may(self, accepted: Iterable[str]) -> bool:
        """Whether the user holds ``ALL`` or one of the ``accepted`` permissions."""
        return ALL in self.permissions or any(a in self.permissions for a in accepted)


class Users:
    """The users of one server; checks credentials. A successful check is remembered (keyed
    by an HMAC of the password under a per-process key) so that scrypt, which is slow on
    purpose, runs once per user and password rather than on every request."""

    def __init__(self, users: Iterable[User]) -> None:
        self._users = {u.username: u for u in users}
        self._decoy = hash_password(os.urandom(16).hex())
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
