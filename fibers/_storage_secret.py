"""Where a node's secret comes from (docs/security.md).

The node secret (32 bytes) comes from, in order: the ``secret_file`` argument of
``NodeStorage.open``; the environment variable ``FIBERS_NODE_SECRET`` (64 hex digits); the
file named by ``FIBERS_NODE_SECRET_FILE``; else ``<base_dir>/node.secret``, created on first
open. A secret file must be a private (owner-only) regular file of exactly 32 bytes.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Final

__all__ = ["SECRET_ENV", "SECRET_FILE_ENV", "resolve_secret"]

_SECRET_LEN: Final = 32
_SECRET_FILE: Final = "node.secret"
SECRET_ENV: Final = "FIBERS_NODE_SECRET"
"""Environment variable that may hold the node secret as 64 hex digits."""
SECRET_FILE_ENV: Final = "FIBERS_NODE_SECRET_FILE"
"""Environment variable that may name the file holding the node secret (created if missing)."""


def resolve_secret(base_dir: Path, secret_file: Path | None) -> bytes:
    """The node secret, from the first source that is set (module docstring)."""
    if secret_file is not None:
        return _load_or_create_secret(Path(secret_file))
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        try:
            secret = bytes.fromhex(from_env.strip())
        except ValueError:
            secret = b""
        if len(secret) != _SECRET_LEN:
            raise ValueError(f"environment variable {SECRET_ENV} must hold the node secret as "
                             f"{2 * _SECRET_LEN} hex digits; it does not (its value is not shown)")
        return secret
    file_from_env = os.environ.get(SECRET_FILE_ENV)
    if file_from_env:
        return _load_or_create_secret(Path(file_from_env))
    return _load_or_create_secret(base_dir / _SECRET_FILE)


def _load_or_create_secret(path: Path) -> bytes:
    """The node secret at ``path``, created (owner-only, 32 random bytes) if missing."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    # Write to a private temporary file and hard-link it into place: the link fails if another
    # opener won the race, and no reader ever sees a partly written secret.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_SECRET_LEN))
            f.flush()
            os.fsync(f.fileno())
        with suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"node secret {path} is not a regular file")
        if mode & 0o077:
            raise PermissionError(
                f"node secret {path} has mode {stat.S_IMODE(mode):#o}; it must be accessible by "
                f"its owner only. Run: chmod 600 {path}"
            )
        secret = f.read(_SECRET_LEN + 1)
    if len(secret) != _SECRET_LEN:
        raise ValueError(
            f"node secret {path} holds {len(secret)} bytes, expected {_SECRET_LEN}: it is "
            "damaged or not a Fibers node secret. Restore it from backup; deleting it makes "
            "every existing checkpoint unreadable."
        )
    return secret


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
