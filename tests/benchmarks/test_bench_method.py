"""The method of `fibers bench`: ids and targets, judging, memory readings, the same round trips
per flow at every concurrency, and where PostgreSQL is missing. No timing is asserted."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from benchmarks import _postgres, durable, roundtrip
from benchmarks._memory import anonymous_rss_bytes, mapped_file_rss_bytes, total_rss_bytes
from benchmarks._report import Result
from benchmarks.targets import CONTRACT, REPORTED, TARGETS, Target


def _result(id_: str, value: float | None, baseline: float | None = None,
            unmeasured: str | None = None) -> Result:
    return Result(id=id_, scenario="s", name="n", value=value, unit="B", baseline=baseline,
                  unmeasured=unmeasured)


def test_the_issue_contract_is_the_target_table() -> None:
    assert TARGETS["durable.suspensions_per_s.1000"] == Target("value", ">=", 50_000,
                                                              ">= 50,000/s")
    bounds = {i: (t.on, t.op, t.bound) for i, t in TARGETS.items()}
    assert bounds == {
        "durable.suspensions_per_s.1000": ("value", ">=", 50_000),
        "durable.one_suspension_vs_raw_commit": ("ratio", "<=", 1.3),
        "roundtrip.vs_asyncio.1": ("ratio", "<=", 2.0),
        "memory.hibernated_bytes": ("value", "<=", 1024),
        "memory.live_bytes": ("value", "<=", 8192),
        "restore.ready_s.100000": ("value", "<=", 1.0),
        "restore.wake_all_s.100000": ("value", "<=", 10.0),
        "trade.vs_crypto_floor": ("ratio", "<=", 3.0),
        "trade.per_s.processes": ("value", ">=", 300),
    }
    assert set(REPORTED) == {"durable.vs_dbos_sqlite.1000", "durable.vs_dbos_postgres.1000",
                             "durable.every_step_per_s.1000", "trade.every_step_vs_crypto_floor"}
    assert len(CONTRACT) == len(set(CONTRACT)) == len(TARGETS) + len(REPORTED)


def test_a_ratio_target_is_judged_on_the_ratio_not_the_value() -> None:
    judged = _result("trade.vs_crypto_floor", value=9.0, baseline=3.0).judged()
    assert judged.ratio == 3.0 and judged.met is True
    assert _result("trade.vs_crypto_floor", value=9.1, baseline=3.0).judged().met is False
    # A huge value with a good ratio still meets it: the value is not what is bounded.
    assert _result("trade.vs_crypto_floor", value=1e9, baseline=1e9).judged().met is True


def test_a_value_target_is_judged_on_the_value_in_its_unit() -> None:
    assert _result("memory.live_bytes", value=8192).judged().met is True
    assert _result("memory.live_bytes", value=8193).judged().met is False
    assert _result("durable.suspensions_per_s.1000", 49_999, baseline=1).judged().met is False
    assert _result("durable.suspensions_per_s.1000", 50_000, baseline=1e9).judged().met is True


def test_unmeasured_and_untargeted_results_are_never_judged() -> None:
    unmeasured = _result("memory.hibernated_bytes", None, unmeasured="not built yet").judged()
    assert unmeasured.met is None and unmeasured.ratio is None
    assert unmeasured.to_json()["target"] == "<= 1,024 B"
    assert _result("memory.rss_bytes", value=1e12).judged().met is None


def test_a_result_has_a_value_or_the_reason_it_has_none_never_both() -> None:
    with pytest.raises(ValueError, match=r"memory\.x: give a value or the reason"):
        _result("memory.x", None)
    with pytest.raises(ValueError, match=r"memory\.x: give a value or the reason"):
        _result("memory.x", 1.0, unmeasured="why")


def test_anonymous_rss_counts_a_touched_allocation_and_not_a_mapped_file(
        tmp_path: Path) -> None:
    size = 64 << 20
    before = anonymous_rss_bytes()
    block = bytearray(size)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page: make it resident
    assert anonymous_rss_bytes() - before >= size * 3 // 4
    del block
    path = tmp_path / "data.mdb"
    path.write_bytes(b"\x02" * size)
    assert mapped_file_rss_bytes(path) == 0, "not mapped yet"
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
        anonymous = anonymous_rss_bytes()
        assert sum(view[i] for i in range(0, size, 4096)) == 2 * (size // 4096)
        assert mapped_file_rss_bytes(path) >= size * 3 // 4
        assert mapped_file_rss_bytes(tmp_path / "other.mdb") == 0
        # The file's pages are file-backed: they barely move the anonymous figure.
        assert anonymous_rss_bytes() - anonymous < size // 4
        assert total_rss_bytes() >= mapped_file_rss_bytes(path)


def test_waves_give_every_concurrency_the_same_round_trips_per_flow() -> None:
    assert roundtrip.waves_of(20_000, 1, 100) == 200
    assert roundtrip.waves_of(20_000, 100, 100) == 2
    assert roundtrip.waves_of(1000, 1000, 10) == 1  # never fewer round trips per flow
    assert roundtrip.waves_of(1001, 10, 10) == 11  # at least the round trips asked for


@pytest.mark.parametrize(("flows", "round_trips", "waves"), [(1, 30, 3), (3, 30, 1), (4, 30, 1)])
def test_durable_flows_each_do_per_flow_round_trips_whatever_the_concurrency(
        tmp_path: Path, flows: int, round_trips: int, waves: int) -> None:
    figure = durable.fibers_suspensions(tmp_path, flows, round_trips, naive=False)
    # Each flow checks its own sum of PER_FLOW answers; two suspensions per round trip.
    assert figure.suspensions == 2 * durable.PER_FLOW * flows * waves


def test_roundtrip_baselines_do_the_same_work_as_fibers() -> None:
    figures = roundtrip.measure(60, 3, per_flow=10)
    assert [f.round_trips for f in figures] == [60, 60, 60]  # 2 waves of 3 pairs x 10


def test_without_postgresql_the_reason_names_the_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(_postgres, "DEBIAN_BINARIES", tmp_path)
    with pytest.raises(_postgres.PostgresUnavailableError, match="apt-get install postgresql"):
        _postgres.temporary_server().__enter__()
    (tmp_path / "15" / "bin").mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (tmp_path / "15" / "bin" / name).touch()
    assert _postgres._binaries() == (str(tmp_path / "15/bin/initdb"),
                                     str(tmp_path / "15/bin/pg_ctl"))


def test_a_server_that_fails_to_start_is_reported_not_raised_raw(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = tmp_path / "initdb"
    failing.write_text("#!/bin/sh\necho 'initdb: cannot create data directory' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(_postgres, "_binaries", lambda: (str(failing), str(failing)))
    monkeypatch.setattr(_postgres, "_run_as", lambda: ([], None))
    with pytest.raises(_postgres.PostgresUnavailableError,
                       match=r"initdb failed \(1\): initdb: cannot create data directory"):
        _postgres.temporary_server().__enter__()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path: PostgreSQL refuses root")
def test_as_root_the_server_runs_as_the_postgres_user_or_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(_postgres.pwd, "getpwnam", no_user)
    with pytest.raises(_postgres.PostgresUnavailableError, match="refuses root"):
        _postgres._run_as()
