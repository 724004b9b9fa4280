"""A simulated 3-node cluster: shard actors spread over nodes, a node removed mid-run, the run completes."""

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from supermask.runtime.events import read_events
from supermask.runtime.job import run_job
from supermask.runtime.mask_store import MaskStore
from supermask.spec import load_spec

SYNTHETIC = Path(__file__).resolve().parent.parent / "tasks" / "synthetic.yaml"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 100 * 1024**2},
    )
    workers = [c.add_node(num_cpus=1, object_store_memory=100 * 1024**2) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_node_removed_mid_run_every_mask_present_once_and_verified(cluster, tmp_path):
    c, workers = cluster
    spec = load_spec(
        SYNTHETIC,
        [
            "stream.num_tasks=6",
            "search.epochs=40",
            "run.checkpoint_every=10",
            "run.num_workers=2",
            "run.shards=3",
            "run.max_failures=5",
        ],
    )
    events = tmp_path / "events.jsonl"
    removed = {}

    def remove_a_node_mid_run():
        deadline = time.time() + 240
        while time.time() < deadline:
            stored = [e for e in read_events(events) if e["event"] == "task_stored"]
            if stored:
                store = MaskStore.open(tmp_path / "store")
                removed["shard_nodes"] = ray.get([a.node_id.remote() for a in store.shard_actors])
                victim = workers[0]
                removed["node"] = victim.node_id
                removed["stored_before"] = len(stored)
                c.remove_node(victim)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=remove_a_node_mid_run)
    thread.start()
    result = run_job(spec, tmp_path, progress=False)
    thread.join()

    assert removed, "the node was never removed"
    assert len(set(removed["shard_nodes"])) == 3, (
        f"shards were not spread over the 3 nodes: {removed['shard_nodes']}"
    )
    assert removed["stored_before"] < 6, "the node was removed after the run had finished learning"
    ids = [f"synthetic-{t:04d}" for t in range(6)]
    written = Counter(e["task"] for e in read_events(events) if e["event"] == "task_stored" and e["written"])
    assert written == dict.fromkeys(ids, 1)
    store = MaskStore.open(tmp_path / "store")
    try:
        assert store.list() == ids
        assert all(report["ok"] for report in store.verify())
        assert sum(report["checked"] for report in store.verify()) == 6
    finally:
        store.close()
    assert all(t.accuracy is not None and t.accuracy > 0.5 for t in result.tasks)
    assert len(set(removed["shard_nodes"])) == 3, (
        f"shards were not spread over the 3 nodes: {removed['shard_nodes']}"
    )
