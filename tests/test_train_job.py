"""`supermask run` on Ray Train: both strategies, a worker killed mid-run, a driver killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from supermask.runtime.events import read_events
from supermask.runtime.job import run_job
from supermask.runtime.mask_store import MaskStore
from supermask.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "tasks" / "synthetic.yaml"


def _learned_once(out: Path, ids: list[str]) -> None:
    """Every task's mask was written exactly once, and none was learned again after it was stored."""
    events = read_events(out / "events.jsonl")
    written = Counter(e["task"] for e in events if e["event"] == "task_stored" and e["written"])
    assert written == dict.fromkeys(ids, 1), written
    stored_at = {e["task"]: e["time"] for e in events if e["event"] == "task_stored"}
    late = [e for e in events if e["event"] == "task_started" and e["time"] > stored_at[e["task"]]]
    assert not late, f"tasks learned again after they were stored: {late}"


def test_data_parallel_search_over_two_workers(ray_cluster, tmp_path):
    spec = load_spec(SYNTHETIC, ["stream.num_tasks=2", "run.strategy=data_parallel", "run.num_workers=2"])
    result = run_job(spec, tmp_path, progress=False)
    assert result.workers == 2
    assert all(t.accuracy > 0.5 for t in result.tasks), [t.accuracy for t in result.tasks]
    store = MaskStore.open(tmp_path / "store")
    try:
        mask = store.get("synthetic-0000")
        assert mask.metrics["data_parallel_workers"] == 2
    finally:
        store.close()


def test_killed_train_worker_restarts_and_resumes_from_checkpoint(ray_cluster, tmp_path):
    spec = load_spec(
        SYNTHETIC, ["stream.num_tasks=4", "search.epochs=60", "run.checkpoint_every=10", "run.num_workers=2"]
    )
    events = tmp_path / "events.jsonl"
    killed = {}

    def kill_a_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            started = [e for e in read_events(events) if e["event"] == "task_started"]
            checkpoints = (
                list((tmp_path / "checkpoints").glob("*.pt")) if (tmp_path / "checkpoints").exists() else []
            )
            if started and checkpoints:
                os.kill(started[0]["pid"], signal.SIGKILL)
                killed.update(pid=started[0]["pid"], task=started[0]["task"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_worker)
    thread.start()
    result = run_job(spec, tmp_path, progress=False)
    thread.join()
    assert killed, "no worker was killed: the test did not exercise a restart"
    ids = [f"synthetic-{t:04d}" for t in range(4)]
    _learned_once(tmp_path, ids)
    resumed = {t.task_id: t.resumed_at_steps for t in result.tasks}
    assert resumed[killed["task"]], f"{killed['task']} restarted from scratch: {resumed}"
    assert all(t.accuracy > 0.5 for t in result.tasks)


def _run_cli(out: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "supermask.cli",
        "run",
        str(SYNTHETIC),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_driver_killed_halfway_resumes_with_the_same_command(tmp_path):
    extra = ["--set", "stream.num_tasks=4", "--set", "search.epochs=40", "--set", "run.checkpoint_every=10"]
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    driver = _run_cli(interrupted, *extra)
    deadline = time.time() + 240
    while time.time() < deadline:
        stored = [e for e in read_events(interrupted / "events.jsonl") if e["event"] == "task_stored"]
        if len(stored) >= 2:
            break
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` would
    driver.wait()
    assert len(stored) >= 2, driver.stdout.read()[-3000:]

    again = _run_cli(interrupted, *extra)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    reference = _run_cli(whole, *extra)
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-3000:]

    ids = [f"synthetic-{t:04d}" for t in range(4)]
    _learned_once(interrupted, ids)
    resumed = json.loads((interrupted / "results.json").read_text())
    uninterrupted = json.loads((whole / "results.json").read_text())
    assert [t["task"] for t in resumed["tasks"]] == ids
    assert sum(t["resumed_from_store"] for t in resumed["tasks"]) >= 2
    assert [t["accuracy"] for t in resumed["tasks"]] == [t["accuracy"] for t in uninterrupted["tasks"]]
