"""The learner protocol: every kind has one learner, spec rules and report sections, found by name; and a
learner of the test's own runs through the generic job (Ray Train workers, store, events, evaluation)
without any change elsewhere."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import ray.cloudpickle

from conftest import learned_once
from supermask.config.kinds import SPEC_KINDS
from supermask.config.schema import SpecError
from supermask.config.spec import RunSpec, spec_from_dict
from supermask.core.registry import UnknownNameError
from supermask.data import StreamSpec
from supermask.interface.learner_sections import run_section
from supermask.interface.sections import RUN_SECTIONS, SWEEP_SECTIONS
from supermask.recipes.learn import BlockOutcome
from supermask.recipes.learners import LEARNERS, BlockContext, Evaluation, Learner
from supermask.runtime.events import read_events
from supermask.runtime.job import run_job


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(
        UnknownNameError, match="unknown learner 'lottery'; known: fine_tune, masks, translation"
    ):
        LEARNERS.get("lottery")
    with pytest.raises(
        SpecError, match="learn: got 'lottery'; allowed: fine_tune, masks, translation, weights"
    ):
        spec_from_dict({"learn": "lottery"})


def test_every_kind_has_its_learner_spec_rules_and_report_sections():
    assert LEARNERS.names() == SPEC_KINDS.names() == RUN_SECTIONS.names()
    assert all(LEARNERS.get(name).name == name for name in LEARNERS.names())
    sweepable = [name for name in SPEC_KINDS.names() if SPEC_KINDS.get(name).sweep_refusal is None]
    assert SWEEP_SECTIONS.names() == sweepable == ["masks", "translation", "weights"]
    assert type(run_section("fine_tune")).__name__ == "FineTuneSection"


# ---- a learner of this test's own: task t's record is 0 + 1 + ... + t, counted one step at a time ----


@dataclasses.dataclass(frozen=True)
class CountingRecipe:
    name: str = "counting"
    run: RunSpec = dataclasses.field(default_factory=lambda: RunSpec(num_workers=2, checkpoint_seconds=0))
    stream: StreamSpec = StreamSpec(name="count", num_tasks=3)
    provenance: dict = dataclasses.field(default_factory=lambda: {"hash": "count-v1", "fields": {"by": 1}})
    base_fingerprint: str = ""
    data_source: str = "counted"
    num_weights: int = 0

    def task_ids(self) -> list[str]:
        return [f"count-{t}" for t in range(self.stream.num_tasks)]


@dataclasses.dataclass
class Count:
    task_id: str
    value: int


class CountingStream:
    data_source = "counted"

    def task_id(self, t: int) -> str:
        return f"count-{t}"


@dataclasses.dataclass
class CountingBench:
    device: str
    stream: CountingStream = dataclasses.field(default_factory=CountingStream)


class JsonStore:
    """One JSON file per record: enough of a store for the generic job (picklable, shared by path)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, task_id: str) -> Path:
        return self.root / f"{task_id}.json"

    def missing(self, ids) -> list[str]:
        return [t for t in ids if not self._path(t).exists()]

    def describe(self, ids) -> dict:
        return {t: {"provenance": json.loads(self._path(t).read_text())["provenance"]} for t in ids}

    def put_many(self, records, overwrite: bool = False) -> list[bool]:
        written = []
        for r in records:
            new = overwrite or not self._path(r.task_id).exists()
            if new:
                self._path(r.task_id).write_text(
                    json.dumps({"value": r.value, "provenance": {"hash": "count-v1"}})
                )
            written.append(new)
        return written

    def get_many(self, ids) -> list[Count]:
        return [Count(t, json.loads(self._path(t).read_text())["value"]) for t in ids]

    def delete(self, task_id: str) -> None:
        self._path(task_id).unlink(missing_ok=True)

    def close(self) -> None:
        pass


class CountingLearner(Learner):
    name = "counting"

    def open_store(self, root, open_client, create=True):
        return JsonStore(root)

    def store_shards(self, store) -> int:
        return 0

    def bench(self, device: str) -> CountingBench:
        return CountingBench(device)

    def learn_block(self, bench: CountingBench, block: list[int], ctx: BlockContext) -> BlockOutcome:
        ctx.on_start(0)
        records = []
        for t in block:
            total = 0
            for step in range(t + 1):
                total += step
                ctx.progress(step + 1, t + 1)
            records.append(Count(bench.stream.task_id(t), total))
        return BlockOutcome(records)

    def stored_fields(self, record: Count) -> dict:
        return {"summary": f"counted {record.value}"}

    def evaluate(self, ev: Evaluation) -> None:
        for outcome, record in zip(ev.outcomes.values(), ev.store.get_many(ev.ids), strict=True):
            outcome.accuracy = record.value / 10


@pytest.fixture
def by_value():
    """Ray's workers cannot import this test module: send its classes along with the objects."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_new_learner_runs_through_the_generic_job(ray_cluster, by_value, tmp_path):
    learner = CountingLearner(CountingRecipe())
    result = run_job(learner, tmp_path, progress=False)
    assert [(t.task_id, t.accuracy, t.skipped) for t in result.tasks] == [
        ("count-0", 0.0, False),
        ("count-1", 0.1, False),
        ("count-2", 0.3, False),
    ]
    assert result.workers == 2 and result.stack_size == 1 and result.strategy == "task_parallel"
    learned_once(tmp_path, ["count-0", "count-1", "count-2"])  # each by a Train worker, exactly once
    events = read_events(tmp_path / "events.jsonl")
    assert {e["rank"] for e in events if e["event"] == "task_stored"} == {0, 1}
    assert [e["summary"] for e in events if e["event"] == "task_stored" and e["task"] == "count-2"] == [
        "counted 3"
    ]
    again = run_job(learner, tmp_path, progress=False)  # everything stored: nothing learned, no Train run
    assert all(t.skipped for t in again.tasks) and again.workers == 0
    assert [t.accuracy for t in again.tasks] == [t.accuracy for t in result.tasks]
