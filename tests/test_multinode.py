"""A simulated 3-node cluster: shard actors spread over nodes, a node removed mid-run, the run completes;
and the shards of every store kind revived on a live node after theirs is removed mid-writes."""

import time
from collections import Counter

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import SYNTHETIC, KillWhen, wait_for
from store_helpers import KINDS, AckedWriter, kind_case
from supermask.config.spec import load_spec
from supermask.recipes.learners import learner_for
from supermask.runtime.events import read_events
from supermask.runtime.job import run_job
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.session import job_runtime_env
from supermask.store.errors import MaskFileError


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 100 * 1024**2},
    )
    workers = [c.add_node(num_cpus=1, object_store_memory=100 * 1024**2) for _ in range(2)]
    ray.init(address=c.address, runtime_env=job_runtime_env(), log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.mark.slow
def test_node_removed_mid_run_every_mask_present_once_and_verified(cluster, tmp_path):
    c, workers = cluster
    spec = load_spec(
        SYNTHETIC,
        [
            "stream.num_tasks=6",
            "search.epochs=40",
            "run.checkpoint_seconds=0.5",
            "run.tasks_per_worker=1",
            "run.num_workers=2",
            "run.shards=3",
            "run.max_failures=5",
        ],
    )
    events = tmp_path / "events.jsonl"

    def first_stored():
        return [e for e in read_events(events) if e["event"] == "task_stored"]

    def remove_a_node(stored):
        store = MaskStore.open(tmp_path / "store")
        shard_nodes = ray.get([a.node_id.remote() for a in store.shard_actors])
        c.remove_node(workers[0])
        return {"shard_nodes": shard_nodes, "stored_before": len(stored)}

    remover = KillWhen(first_stored, remove_a_node, timeout=240)
    remover.start()
    result = run_job(learner_for(spec), tmp_path, progress=False)
    remover.join()

    removed = remover.done
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
        reports = store.verify()
        assert all(report["ok"] for report in reports) and sum(report["checked"] for report in reports) == 6
    finally:
        store.close()
    assert all(t.accuracy is not None and t.accuracy > 0.5 for t in result.tasks)


def alive_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_shards_of_every_kind_revived_after_their_node_is_removed_mid_writes(cluster, tmp_path, kind):
    """A worker node holding a shard is removed while a writer puts records: the client starts a new actor
    for that shard on a live node, which reads the same file; every acknowledged put is there once."""
    c, workers = cluster
    while len(alive_nodes()) < 3:  # a node removed by an earlier test is replaced
        workers.append(c.add_node(num_cpus=1, object_store_memory=100 * 1024**2))
        c.wait_for_nodes()
    case = kind_case(kind)
    store = case.open(tmp_path, 3, None)
    try:
        shard_nodes = ray.get([a.node_id.remote() for a in store.shard_actors])
        assert len(set(shard_nodes)) == 3, f"shards were not spread over the 3 nodes: {shard_nodes}"
        head = ray.get_runtime_context().get_node_id()
        victim = next(w for w in workers if w.node_id in shard_nodes and w.node_id != head)
        lost = shard_nodes.index(victim.node_id)
        retry_on = (ray.exceptions.RayActorError, MaskFileError)
        with AckedWriter(lambda tid: case.put(store, tid), "node-", retry_on) as writer:
            assert wait_for(lambda: len(writer.acked) >= 10, timeout=60)
            c.remove_node(victim)
            workers.remove(victim)
            before = len(writer.acked)
            # Puts go on: those to the lost shard wait for its new actor, the others never stop.
            assert wait_for(
                lambda: any(store.layout.shard_of(t) == lost for t in writer.acked[before:]), timeout=120
            ), "no put reached the lost shard's new actor"
            time.sleep(0.2)
        acked = writer.acked
        now = ray.get([a.node_id.remote() for a in store.shard_actors])
        assert now[lost] != victim.node_id and now[lost] in alive_nodes()
        assert store.missing(acked) == []
        reports = store.verify()
        assert all(r["ok"] for r in reports), reports
        for t in (acked[0], acked[-1]):
            case.read(store, t)
    finally:
        store.close()
    contents = case.files(tmp_path, 3)
    held = [t for ids in contents.values() for t in ids]
    assert len(held) == len(set(held)) and set(acked) <= set(held) <= writer.attempted_ids()
    case.check(tmp_path, 3)
