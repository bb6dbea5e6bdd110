"""`shadow up` gives the client path the CPU first (#16): one proxy worker per available
core, and every thread of the subscriber and the comparer at --pipeline-nice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from shadow.cli import demo_apps
from shadow.settings import available_cores
from tests.conftest import wait_for
from tests.procs import reap, start_up


def niceness(pid: int) -> dict[int, int]:
    """Every thread's niceness (field 19 of /proc/PID/task/TID/stat)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        out[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return out


async def test_the_pipeline_runs_niced_in_every_thread_and_the_proxy_on_every_core(
        http_server, tmp_path: Path) -> None:
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    ours = os.nice(0)
    proc, _, _ = await start_up("--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"),
                                "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path)
    try:
        children = psutil.Process(proc.pid).children()
        roles = {c.pid: next(r for r in ("proxy", "subscriber", "comparer", "redis")
                             if any(r in part for part in c.cmdline())) for c in children}
        assert sorted(roles.values()).count("proxy") == available_cores()
        niced = min(ours + 10, 19)

        def settled() -> bool:  # the comparer has its store's thread: the store is open
            comparer = next(pid for pid, role in roles.items() if role == "comparer")
            return len(niceness(comparer)) > 1 and all(
                set(niceness(pid).values()) == {niced}
                for pid, role in roles.items() if role in ("subscriber", "comparer"))

        await wait_for(settled, 60, "the subscriber's and comparer's threads at niceness 10")
        for pid, role in roles.items():
            if role not in ("subscriber", "comparer"):
                assert set(niceness(pid).values()) == {ours}, (role, niceness(pid))
    finally:
        proc.send_signal(signal.SIGINT)
        await reap(proc)
