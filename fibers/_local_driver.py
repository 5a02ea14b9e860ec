"""``ManualDriver``: the one loop that moves manual-mode node runtimes on an in-memory network,
one event at a time. ``MockNetwork``, the embedded demo network and the shell all move their
nodes with it (exported from ``fibers.runtime``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from fibers._identity import Party
from fibers.transport import InFlightMessage, InMemoryNetwork

if TYPE_CHECKING:
    from fibers.runtime import NodeRuntime


class ManualDriver:
    """Moves the manual-mode ``NodeRuntime``s of the parties of ``network``.

    An event is a frame handed to its recipient (``deliver_next``: the oldest deliverable one)
    or the timers that are due (``fire_timers``). ``step`` does the next event and, when only
    timers are left, waits for the earliest of them through ``wait(seconds)``: move a test
    clock for simulated time, or sleep for real time. ``observe`` sees every frame
    ``deliver_next`` hands over, after its recipient handled it.
    """

    def __init__(
        self,
        network: InMemoryNetwork,
        *,
        observe: Callable[[InFlightMessage], object] | None = None,
    ) -> None:
        self.network = network
        self.observe = observe
        self._runtimes: dict[str, NodeRuntime] = {}

    def add(self, runtime: NodeRuntime) -> None:
        """Move ``runtime`` from now on (replacing the stopped runtime of the same party)."""
        current = self._runtimes.get(runtime.party.name)
        if current is not None and current.is_running and current is not runtime:
            raise ValueError(f"{runtime.party} already runs here: stop its runtime first")
        self._runtimes[runtime.party.name] = runtime

    def runtime(self, party: Party | str) -> NodeRuntime:
        """The runtime of ``party`` (or of the party of that name)."""
        name = party if isinstance(party, str) else party.name
        try:
            return self._runtimes[name]
        except KeyError:
            raise KeyError(f"no runtime for {name!r} on this network") from None

    @property
    def runtimes(self) -> list[NodeRuntime]:
        """Every runtime added, running or not, in the order their parties were added."""
        return list(self._runtimes.values())

    def pending(self) -> list[InFlightMessage]:
        """Frames waiting for a running recipient, in delivery order."""
        return self.network.pending()

    def deliver_next(self) -> InFlightMessage | None:
        """Hand the oldest deliverable frame to its recipient and let it handle it; None when
        there is none."""
        message = self.network.deliver_next()
        if message is None:
            return None
        self._runtimes[message.recipient.name].pump()
        if self.observe is not None:
            self.observe(message)
        return message

    def deliver_all(self) -> int:
        """Hand every deliverable frame over, each recipient's as one batch, and let the
        recipients handle them (in the order their first frame was queued)."""
        order = list(dict.fromkeys(m.recipient.name for m in self.network.pending()))
        delivered = self.network.deliver_all()
        for name in order:
            self._runtimes[name].run_until_quiet()
        return delivered

    def fire_timers(self) -> int:
        """Let every running node fire its due timers (and run what else waits for it)."""
        return sum(runtime.pump() for runtime in self.runtimes if runtime.is_running)

    def next_deadline(self) -> datetime | None:
        """The earliest sleep or retry deadline of a running node."""
        deadlines = [d for runtime in self.runtimes if runtime.is_running
                     and (d := runtime.node.next_deadline()) is not None]
        return min(deadlines, default=None)

    def run(self, max_messages: int | None = None) -> int:
        """Deliver frames one at a time, oldest first, firing due timers before each, until
        none is left or ``max_messages`` were delivered. Time does not move. Returns how many
        were delivered."""
        delivered = 0
        while max_messages is None or delivered < max_messages:
            self.fire_timers()
            if self.deliver_next() is None:
                break
            delivered += 1
        return delivered

    def step(
        self,
        now: Callable[[], datetime],
        wait: Callable[[float], object],
        *,
        max_wait: float | None = None,
    ) -> bool:
        """Do the next event: fire due timers, else deliver one frame, else ``wait`` until the
        earliest deadline (``now`` is the nodes' clock) and fire it. False when nothing can
        move: no frame, no deadline, or the deadline is more than ``max_wait`` seconds away."""
        if self.fire_timers():
            return True
        if self.deliver_next() is not None:
            return True
        deadline = self.next_deadline()
        if deadline is None:
            return False
        seconds = max((deadline - now()).total_seconds(), 0.0)
        if max_wait is not None and seconds > max_wait:
            return False
        wait(seconds)
        self.fire_timers()
        return True
