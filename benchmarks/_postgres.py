"""A throwaway PostgreSQL server for the ``dbos`` scenario: DBOS's production system database.

DBOS's docs (docs.dbos.dev, "DBOS Database Connections") take the system database as a
``system_database_url`` of the form ``postgresql://user:password@host:port/database`` and create
that database if it does not exist. Rather than rely on a system service, the scenario starts its
own server: ``initdb`` on a temporary data directory, ``pg_ctl start`` on a free localhost port
(Unix socket in the same directory), trust authentication for local connections only, stopped
and deleted afterwards. PostgreSQL's defaults are kept: ``fsync=on``, ``synchronous_commit=on``,
so every commit is durable, as LMDB with ``sync=True`` and SQLite with ``synchronous=FULL``.

The server binaries come from ``PATH`` or Debian's ``/usr/lib/postgresql/<version>/bin``
(``apt-get install postgresql``). PostgreSQL refuses to run as root; as root the server runs as
the ``postgres`` user that the package creates (via ``runuser``). Where none of that is present,
``PostgresUnavailableError`` says what is missing and how to get it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = "apt-get install postgresql (as root), or put initdb and pg_ctl on PATH"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")  # <version>/bin, as Debian's packages lay it out


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server can be started here; the message says why and what to install."""


def _binaries() -> tuple[str, str]:
    """(initdb, pg_ctl), from PATH or the newest Debian cluster version."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    versions = sorted(DEBIAN_BINARIES.glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for bin_dir in reversed(versions):
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return str(bin_dir / "initdb"), str(bin_dir / "pg_ctl")
    raise PostgresUnavailableError(f"PostgreSQL's initdb and pg_ctl were not found: {INSTALL}")


def _run_as() -> tuple[list[str], int | None]:
    """The command prefix that runs the server as a user PostgreSQL accepts, and that user's
    uid when it has to own the data directory (None: the current user)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailableError(
            "running as root, and PostgreSQL refuses root; no 'postgres' user to run it as: "
            f"{INSTALL}") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailableError("running as root without runuser to start PostgreSQL "
                                       "as the 'postgres' user")
    return [runuser, "-u", "postgres", "--"], user.pw_uid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PostgresUnavailableError(f"{what} failed ({done.returncode}): {' '.join(detail)}")


@contextmanager
def temporary_server(database: str = "fibers_bench") -> Iterator[str]:
    """Start a PostgreSQL server for the block; yields the URL of ``database`` on it (DBOS
    creates the database). ``PostgresUnavailableError`` if none can be started."""
    initdb, pg_ctl = _binaries()
    prefix, owner = _run_as()
    home = Path(tempfile.mkdtemp(prefix="fibers-bench-pg-"))
    data, log = home / "data", home / "server.log"
    try:
        if owner is not None:
            os.chown(home, owner, -1)
        _checked([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-instructions"], "initdb")
        port = _free_port()
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _checked([*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60",
                  "-o", options, "start"], "pg_ctl start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120, check=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
