"""The simulation explorer: runs a user's scenario under every crash point, delivery order and
duplicate, and checks an invariant once the network is quiet (README, "Test a flow against every
crash").

How it explores. A run is a ``Simulation`` (fresh network in a fresh directory, test clock,
seeded ids) moved one event at a time; the events are the choices of ``fibers.testing._schedule``.
The explorer is a stateless model checker: it re-runs the scenario from scratch for each
schedule and searches the tree of choices depth-first. Crash points and failing writes are
learnt as it goes: once an event ran, it knows how many commits (and writes) each node made in
it, and adds "the same event, crashing before/after commit k" (and "failing write k") as
siblings; once such a crash ran, "... and crashing again at commit j of the restore".

Equivalent schedules are not re-run: partial-order reduction with sleep sets (Godefroid). Two
events that touch different nodes commute (a node's state changes only by what is delivered to
it; what it sends lands in streams named by sender and count, see ``LabelledNetwork``), so of
all the orders of independent events only one is run to the end; a run that could only
continue with an event already covered in a sibling subtree stops early (counted in
``Report.pruned``). Sleep sets, not state hashing: a node's state is an LMDB store plus
greenlets, with random keys and signatures in it, so no stable hash of it exists; the
independence relation, in contrast, is exact and free in an actor system.

Budgets. A run makes at most ``max_crashes`` crashes (plus one crash of each restore) and
``max_duplicates`` duplicate deliveries. With ``max_schedules`` the depth-first search gets
half of it; if that does not exhaust the tree the other half are random schedules drawn from
``seed`` (so a budgeted exploration is reproducible, and not all spent in one corner).

A failure is shrunk (``fibers.testing._shrink``) to the fewest choices that still fail the same
way and reported with its transcript and the line that replays it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibers.testing._mock_network import MockNetwork
from fibers.testing._schedule import (
    Choice,
    Fault,
    ScheduleError,
    format_schedule,
    parse_schedule,
)
from fibers.testing._shrink import ddmin
from fibers.testing._simulate import END, Invariant, Observed, Options, Scenario, Simulation

__all__ = ["ExplorationFailure", "Failure", "Report", "explore", "replay"]


class ExplorationFailure(AssertionError):
    """A schedule under which the invariant (or the run) failed; the message carries the
    schedule, the line that replays it and the transcript."""


@dataclass
class Failure:
    """One failing schedule: ``schedule`` (shrunk, replayable text), ``full_schedule`` (as the
    search ran it), ``error`` (what was raised) and ``transcript`` (the events of the shrunk
    run, one line each)."""

    schedule: str
    full_schedule: str
    error: BaseException
    transcript: list[str]
    replay_line: str

    def __str__(self) -> str:
        lines = "\n".join(f"    {line}" for line in self.transcript)
        return (f"{type(self.error).__name__}: {self.error}\n"
                f"  schedule: {self.schedule or '(the default order: no choice needed)'}\n"
                f"  replay:   {self.replay_line}\n"
                f"  transcript:\n{lines}")


@dataclass
class Report:
    """The outcome of ``explore``."""

    schedules_run: int = 0  # distinct schedules run to the end and checked
    pruned: int = 0  # runs stopped early as equivalent to one already run (sleep sets)
    exhaustive: bool = False  # every schedule (up to equivalence) within the budgets was run
    sampled: int = 0  # of schedules_run, how many were random (past max_schedules / 2)
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)  # the text of each schedule run

    def raise_first(self) -> None:
        """Raise the first failure as an ``AssertionError`` carrying its minimal schedule."""
        if self.failures:
            first = self.failures[0]
            raise ExplorationFailure(f"a schedule fails\n{first}") from first.error


class _Stop(Exception):
    """The run cannot go on (sleep-set blocked)."""


def explore(
    scenario: Scenario,
    invariant: Invariant,
    *,
    crashes: bool = True,
    reorder: bool = True,
    duplicates: bool = True,
    storage_faults: bool = False,
    max_schedules: int | None = None,
    seed: int = 0,
    network: Callable[[Path], MockNetwork[Any]] = MockNetwork,
    max_crashes: int = 1,
    max_duplicates: int = 1,
    max_events: int = 1000,
    shrink: bool = True,
) -> Report:
    """Run ``scenario`` (which gets a fresh ``network(directory)``, creates nodes and starts
    flows) under every schedule within the budgets, and ``invariant`` on each once it is quiet
    (nothing deliverable, no deadline left, nothing runnable; crashed nodes restarted). Stops
    at the first failure, shrunk. See the module docstring for what is explored and how."""
    options = Options(crashes, reorder, duplicates, storage_faults, max_crashes, max_duplicates,
                      1, max_events, seed, network, shrink)
    report, started = Report(), time.monotonic()
    budget = None if max_schedules is None else max(1, max_schedules // 2)
    _Search(scenario, invariant, options, report).depth_first(budget)
    if not report.exhaustive and not report.failures and max_schedules is not None:
        _sample(scenario, invariant, options, report, max_schedules)
    report.seconds = time.monotonic() - started
    return report


def replay(
    scenario: Scenario,
    invariant: Invariant,
    schedule: str,
    *,
    network: Callable[[Path], MockNetwork[Any]] = MockNetwork,
    seed: int = 0,
) -> list[str]:
    """Run ``schedule`` (as ``explore`` printed it) again: its choices in order, each as soon
    as it is possible, every other event in the default order. Returns the transcript;
    raises ``ExplorationFailure`` (an AssertionError) with the transcript when it fails."""
    choices = parse_schedule(schedule)
    faults = any(c.fault is not None and not c.fault.is_crash for c in choices)
    options = Options(storage_faults=faults, seed=seed, network=network)
    trace, transcript, error = _guided(scenario, invariant, options, choices)
    if error is not None:
        failure = Failure(schedule, format_schedule(trace), error, transcript,
                          _replay_line(scenario, invariant, schedule, options))
        raise ExplorationFailure(f"the schedule fails\n{failure}") from error
    return transcript


# ----- depth-first search with sleep sets ------------------------------------------------------

@dataclass
class _Level:
    """A state on the current path: what can happen there, what its sleep set holds, what was
    already explored from it and what the current path does."""

    choices: list[Choice]
    sleep: set[Choice]
    done: list[Choice]
    chosen: Choice


class _Search:
    def __init__(self, scenario: Scenario, invariant: Invariant, options: Options,
                 report: Report) -> None:
        self.scenario, self.invariant, self.options = scenario, invariant, options
        self.report = report

    def depth_first(self, budget: int | None) -> None:
        path: list[_Level] = []
        while True:
            self._run(path)
            if self.report.failures:
                return
            if not _backtrack(path):
                self.report.exhaustive = True
                return
            if budget is not None and self.report.schedules_run >= budget:
                return

    def _run(self, path: list[_Level]) -> None:
        sim: Simulation | None = None
        try:
            sim = Simulation(self.scenario, self.options)
            depth = 0
            while enabled := sim.enabled():
                if depth == len(path):
                    level = _new_level(path, enabled)
                    if level is None:
                        raise _Stop
                    path.append(level)
                level = path[depth]
                if level.chosen.kind == "end":
                    break
                may_crash, may_fail = sim.may_crash(), sim.may_fail_writes()
                executed, observed = sim.execute(level.chosen)
                for variant in _variants(executed, observed, may_crash, may_fail):
                    if variant not in level.choices:
                        level.choices.append(variant)
                depth += 1
                if depth > self.options.max_events:
                    raise AssertionError(f"the network was not quiet after {depth} events")
            self.report.schedules.append(format_schedule(sim.trace))
            sim.check(self.invariant)
            self.report.schedules_run += 1
        except _Stop:
            self.report.pruned += 1
        except Exception as exc:  # the run failed: that is what we look for
            self.report.schedules_run += 1
            trace = sim.trace if sim is not None else []
            self.report.failures.append(
                _failure(self.scenario, self.invariant, self.options, trace, exc))
        finally:
            if sim is not None:
                sim.close()


def _new_level(path: list[_Level], enabled: list[Choice]) -> _Level | None:
    """The next state's level: its sleep set from its parent's, None when every event possible
    there is asleep (the run is equivalent to one explored already)."""
    sleep: set[Choice] = set()
    if path:
        parent = path[-1]
        sleep = {c for c in (*parent.sleep, *parent.done) if c.independent_of(parent.chosen)}
    awake = [c for c in enabled if c not in sleep]
    if not awake:
        return None
    return _Level(list(enabled), sleep, [], awake[0])


def _backtrack(path: list[_Level]) -> bool:
    """Move the path to the next unexplored branch; False when there is none."""
    while path:
        level = path[-1]
        level.done.append(level.chosen)
        for choice in level.choices:
            if choice not in level.done and choice not in level.sleep:
                level.chosen = choice
                return True
        path.pop()
    return False


def _variants(choice: Choice, observed: Observed, may_crash: bool,
              may_fail: bool) -> list[Choice]:
    """The faults that could have been injected into the event ``choice`` just was."""
    found: list[Choice] = []
    fault = choice.fault
    if fault is None:
        for node, commits in observed.commits.items():
            if may_crash and choice.kind in ("deliver", "dup", "timers") and (
                choice.kind == "timers" or node == choice.recipient
            ):
                found += [choice.with_fault(Fault(node, point, k))
                          for k in range(commits) for point in "<>"]
        if may_fail:
            for node, writes in observed.writes.items():
                if choice.kind == "timers" or node == choice.recipient:
                    found += [choice.with_fault(Fault(node, "~", k)) for k in range(writes)]
    elif fault.is_crash and fault.restore is None:
        found += [choice.with_fault(Fault(fault.node, fault.point, fault.index, (point, k)))
                  for k in range(observed.restore_commits) for point in "<>"]
    return found


# ----- sampling past the budget ----------------------------------------------------------------

def _sample(scenario: Scenario, invariant: Invariant, options: Options, report: Report,
            max_schedules: int) -> None:
    rng = random.Random(options.seed)
    seen: set[str] = set()
    for _ in range(max_schedules * 3):
        if report.schedules_run >= max_schedules or report.failures:
            return
        sim = Simulation(scenario, options)
        try:
            events = 0
            while enabled := sim.enabled():
                choice = _pick(rng, sim, enabled)
                if choice.kind == "end":
                    break
                sim.execute(choice)
                events += 1
                if events > options.max_events:
                    raise AssertionError(f"the network was not quiet after {events} events")
            text = format_schedule(sim.trace)
            if text in seen:
                continue
            seen.add(text)
            report.schedules.append(text)
            sim.check(invariant)
            report.schedules_run += 1
            report.sampled += 1
        except Exception as exc:
            report.schedules_run += 1
            report.sampled += 1
            report.failures.append(_failure(scenario, invariant, options, sim.trace, exc))
        finally:
            sim.close()


def _pick(rng: random.Random, sim: Simulation, enabled: Sequence[Choice]) -> Choice:
    moves = [c for c in enabled if c.kind in ("deliver", "timers")]
    dups = [c for c in enabled if c.kind == "dup"]
    if not moves:
        return END if not dups or rng.random() < 0.6 else rng.choice(dups)
    choice = rng.choice(dups) if dups and rng.random() < 0.1 else rng.choice(moves)
    node = choice.recipient or rng.choice([n.party.name for n in sim.net.nodes])
    if sim.may_crash() and rng.random() < 0.15:
        restore = (rng.choice("<>"), 0) if rng.random() < 0.25 else None
        return choice.with_fault(Fault(node, rng.choice("<>"), rng.randrange(2), restore))
    if sim.may_fail_writes() and rng.random() < 0.15:
        return choice.with_fault(Fault(node, "~", rng.randrange(8)))
    return choice


# ----- failures: guided replay and shrinking ----------------------------------------------------

def _guided(scenario: Scenario, invariant: Invariant, options: Options,
            choices: list[Choice]) -> tuple[list[Choice], list[str], BaseException | None]:
    """Run ``choices`` as a guided schedule (see ``replay``): the trace, the transcript and
    the error (None when the invariant held)."""
    wanted = [c for c in choices if c.kind != "end"]
    sim: Simulation | None = None
    try:
        sim = Simulation(scenario, options)
        sim.limited = False
        events = 0
        while enabled := sim.enabled():
            bases = {c.base for c in enabled}
            if wanted and wanted[0].base in bases:
                choice = wanted.pop(0)
            else:
                default = [c for c in enabled if c.kind in ("deliver", "timers")]
                if not default and wanted:
                    raise ScheduleError(f"{wanted[0]} never became possible: the run was "
                                        "quiet before")
                if not default:
                    break
                choice = default[0]
            sim.execute(choice)
            events += 1
            if events > options.max_events:
                raise AssertionError(f"the network was not quiet after {events} events")
        sim.check(invariant)
        return sim.trace, sim.transcript, None
    except ScheduleError:
        raise
    except Exception as exc:
        return (sim.trace, sim.transcript, exc) if sim else ([], [], exc)
    finally:
        if sim is not None:
            sim.close()


def _failure(scenario: Scenario, invariant: Invariant, options: Options, trace: list[Choice],
             error: BaseException) -> Failure:
    minimal = list(trace)

    def fails(candidate: list[Choice]) -> bool:
        try:
            _, _, found = _guided(scenario, invariant, options, candidate)
        except ScheduleError:
            return False
        return found is not None and type(found) is type(error)

    if options.shrink and trace and fails(minimal):
        minimal = ddmin(minimal, fails)
    schedule = format_schedule(minimal)
    try:
        _, transcript, found = _guided(scenario, invariant, options, minimal)
    except ScheduleError:
        transcript, found = [], None
    if found is None:  # the failure did not reproduce from the choices alone
        schedule = format_schedule(trace)
        transcript = []
    return Failure(schedule, format_schedule(trace), found or error, transcript,
                   _replay_line(scenario, invariant, schedule, options))


def _replay_line(scenario: Scenario, invariant: Invariant, schedule: str,
                 options: Options) -> str:
    extra = ""
    if options.network is not MockNetwork:
        extra += f", network={getattr(options.network, '__qualname__', options.network)}"
    if options.seed:
        extra += f", seed={options.seed}"
    return (f"replay({getattr(scenario, '__qualname__', scenario)}, "
            f"{getattr(invariant, '__qualname__', invariant)}, {schedule!r}{extra})")
