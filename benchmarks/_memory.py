"""This process's resident memory, split as the ``memory`` scenario reports it (Linux ``/proc``).

* anonymous RSS (``RssAnon`` in ``/proc/self/status``): the heap, greenlet stacks, and every
  Python object; what a parked flow really costs the node.
* file-backed RSS of one mapped file (from ``/proc/self/smaps``): for LMDB's ``data.mdb``, the
  pages of the database the kernel holds in the page cache and maps into this process. They are
  the database's cache, evictable under memory pressure, and shared with any other reader, so
  they are reported apart and never counted as a flow's memory.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_SMAPS = Path("/proc/self/smaps")


class MemoryUnreadableError(RuntimeError):
    """``/proc`` does not say (not Linux); the message names the file that was missing."""


def _kib_field(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise MemoryUnreadableError(f"no {field} line in /proc/self/status: is this Linux?")


def _status() -> str:
    try:
        return _STATUS.read_text(encoding="ascii")
    except OSError as error:
        raise MemoryUnreadableError(f"cannot read {_STATUS} ({error}): is this Linux?") from error


def anonymous_rss_bytes() -> int:
    """Resident anonymous memory of this process, in bytes."""
    return _kib_field(_status(), "RssAnon")


def total_rss_bytes() -> int:
    """Resident memory of this process, anonymous and file-backed, in bytes."""
    return _kib_field(_status(), "VmRSS")


def mapped_file_rss_bytes(path: Path) -> int:
    """Resident bytes of every mapping of the file at ``path`` in this process (0 if none)."""
    wanted = str(path.resolve())
    total, inside = 0, False
    try:
        lines = _SMAPS.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise MemoryUnreadableError(f"cannot read {_SMAPS} ({error}): is this Linux?") from error
    for line in lines:
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):
            # A mapping's header: "start-end perms offset dev inode [path]".
            inside = len(head) == 6 and head[5] == wanted
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total
