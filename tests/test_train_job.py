"""`supermask run` on Ray Train: both strategies, a worker killed mid-run, a driver killed mid-run."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from conftest import SYNTHETIC, KillWhen, cli_process, learned_once, wait_for
from supermask.config.spec import load_spec
from supermask.recipes.learn import learn_block
from supermask.recipes.learners import learner_for
from supermask.recipes.recipe import Recipe, Workbench
from supermask.runtime.events import read_events
from supermask.runtime.job import run_job
from supermask.runtime.mask_store import MaskStore
from supermask.store.maskfile import MaskFile


def job(tmp_path, *overrides):
    return run_job(learner_for(load_spec(SYNTHETIC, list(overrides))), tmp_path, progress=False)


def test_data_parallel_search_over_two_workers(ray_cluster, tmp_path):
    result = job(tmp_path, "stream.num_tasks=2", "run.strategy=data_parallel", "run.num_workers=2")
    assert result.workers == 2
    assert all(t.accuracy > 0.5 for t in result.tasks), [t.accuracy for t in result.tasks]
    store = MaskStore.open(tmp_path / "store")
    try:
        mask = store.get("synthetic-0000")
        assert mask.metrics["data_parallel_workers"] == 2
    finally:
        store.close()


def test_killed_train_worker_restarts_and_resumes_its_block_from_checkpoint(ray_cluster, tmp_path):
    events = tmp_path / "events.jsonl"

    def mid_block_with_a_checkpoint():
        # A block's checkpoint is named after its first task: kill the worker that is learning it.
        first = {p.stem.split("+")[0] for p in tmp_path.glob("checkpoints/*.pt")}
        started = [e for e in read_events(events) if e["event"] == "task_started" and e["task"] in first]
        return started[-1] if started else None

    killer = KillWhen(mid_block_with_a_checkpoint, lambda e: os.kill(e["pid"], signal.SIGKILL), timeout=180)
    killer.start()
    result = job(
        tmp_path,
        "stream.num_tasks=4",
        "search.epochs=150",
        "run.checkpoint_seconds=0.3",
        "run.num_workers=2",
        "run.tasks_per_worker=2",
    )
    killer.join()
    assert killer.done, "no worker was killed: the test did not exercise a restart"
    learned_once(tmp_path, [f"synthetic-{t:04d}" for t in range(4)])
    resumed = {t.task_id: t.resumed_at_steps for t in result.tasks}
    first = killer.done["task"]
    block = [first, f"synthetic-{int(first[-4:]) + 1:04d}"]
    assert all(resumed[t] for t in block), f"the killed block {block} restarted from scratch: {resumed}"
    assert resumed[block[0]] == resumed[block[1]]  # the block's tasks resumed together, as one stack
    assert all(t.accuracy > 0.5 for t in result.tasks)


def run_cli(out, *extra):
    return cli_process("run", str(SYNTHETIC), "--out", str(out), "--no-progress", *extra)


@pytest.mark.slow
def test_driver_killed_halfway_resumes_with_the_same_command(tmp_path):
    extra = [
        "--set",
        "stream.num_tasks=4",
        "--set",
        "search.epochs=40",
        "--set",
        "run.checkpoint_seconds=0.5",
    ]
    extra += ["--set", "run.tasks_per_worker=1"]
    interrupted = tmp_path / "interrupted"
    driver = run_cli(interrupted, *extra)

    def two_stored():
        stored = [e for e in read_events(interrupted / "events.jsonl") if e["event"] == "task_stored"]
        return len(stored) >= 2

    stored = wait_for(two_stored, timeout=240, every=0.1)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` would
    driver.wait()
    assert stored, driver.stdout.read()[-3000:]

    again = run_cli(interrupted, *extra)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]

    ids = [f"synthetic-{t:04d}" for t in range(4)]
    learned_once(interrupted, ids)
    resumed = json.loads((interrupted / "results.json").read_text())
    assert [t["task"] for t in resumed["tasks"]] == ids
    assert sum(t["resumed_from_store"] for t in resumed["tasks"]) >= 2
    # Every mask is bit for bit the one an uninterrupted search learns (here in this process, as a
    # worker does: one task per block, one thread), however its run was cut.
    stored_masks = {}
    for path in (interrupted / "store").glob("shard-*.h5"):
        with MaskFile(path) as shard:
            stored_masks.update({tid: shard.get(tid) for tid in shard.list()})
    bench = Workbench(Recipe.from_spec(load_spec(SYNTHETIC, extra[1::2])))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t, tid in enumerate(ids):
            whole = learn_block(bench, [t], evaluate=False).records[0]
            assert np.array_equal(whole.packed, stored_masks[tid].packed), tid
    finally:
        torch.set_num_threads(threads)
