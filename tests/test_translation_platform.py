"""Translation as a task kind of the platform: supermasks over frozen networks, records and their
store (its own tests: tests/test_translation_store.py), streams, spec validation, a resumable recipe,
data-parallel steps, the driver and worker paths of `supermask run` without Ray Train (reruns,
refusals), and one task through Ray Train."""

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from supermask.config.schema import SpecError
from supermask.config.spec import spec_from_dict
from supermask.core.masks import MaskSpec
from supermask.core.translation import TranslationSettings, TranslationTrainer, UnpairedImages
from supermask.core.translation.evaluation import evaluate_translation, hausdorff_score
from supermask.core.translation.masked import MaskedNetwork, fan_in
from supermask.core.translation.records import RecordMismatch, generators_from_record, record_from_trainer
from supermask.core.translation.trainer import base_fingerprint
from supermask.data import stream_of
from supermask.recipes.checkpoints import load_checkpoint
from supermask.recipes.translation import TranslationBench, TranslationRecipe, train_translation_task
from supermask.runtime.translation_store import TranslationStore


def tiny(**kw) -> TranslationSettings:
    base = dict(resolution=32, width=2, disc_width=2, blocks=1, batch_size=2, normalize_every=2)
    return TranslationSettings(**{**base, **kw})


def noise_data(n=8, resolution=32):
    g = torch.Generator().manual_seed(1)
    return UnpairedImages(
        torch.rand(n, 3, resolution, resolution, generator=g),
        torch.rand(n, 3, resolution, resolution, generator=g),
    )


def spec_dict(**translation) -> dict:
    return {
        "name": "tiny_translation",
        "learn": "translation",
        "stream": {
            "name": "toy_shapes",
            "num_tasks": 1,
            "options": {"resolution": 32, "train_size": 8, "test_size": 4},
        },
        "translation": {
            "width": 2,
            "disc_width": 2,
            "blocks": 1,
            "batch_size": 2,
            "steps": 4,
            "eval_size": 4,
            "samples": 2,
            "eval_every": 2,
            **translation,
        },
    }


def test_supermask_tasks_train_masks_over_one_shared_frozen_base():
    a = TranslationTrainer(tiny(method="supermask", seed=1), mask=MaskSpec("topk", 0.5))
    b = TranslationTrainer(tiny(method="supermask", seed=2), mask=MaskSpec("topk", 0.5))
    assert isinstance(a.g_xy, MaskedNetwork) and isinstance(a.d_x, MaskedNetwork)
    frozen = {k: v.clone() for k, v in a.g_xy.net.state_dict().items() if k in a.g_xy.masked_names}
    assert all(torch.equal(frozen[k], b.g_xy.net.state_dict()[k]) for k in frozen)  # one base for both tasks
    scores = [s.detach().clone() for s in a.g_xy.method.scores]
    a.run(noise_data(), 2)
    assert all(torch.equal(frozen[k], a.g_xy.net.state_dict()[k]) for k in frozen)  # weights never train
    assert any(not torch.equal(s, t) for s, t in zip(scores, a.g_xy.method.scores))  # the scores do
    masks = a.g_xy.hard_masks()
    assert 0.49 < sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values()) < 0.51
    # trainable: scores and the free (norm, bias) parameters; no masked weight
    trainable = {id(p) for p in a.gen_params}
    assert not any(id(p) in trainable for n, p in a.g_xy.net.named_parameters() if n in a.g_xy.masked_names)
    assert (
        base_fingerprint(a.settings)
        == base_fingerprint(b.settings)
        != base_fingerprint(tiny(method="supermask", base_seed=1))
    )


def test_transposed_conv_init_uses_its_real_fan_in():
    up = nn.ConvTranspose2d(8, 4, 4, 2, 1)
    assert fan_in(up) == 8 * 16 // 4  # each output pixel sums in * k * k / stride^2 inputs
    assert fan_in(nn.Conv2d(8, 4, 3)) == 8 * 9


@pytest.mark.parametrize("method", ["trained", "supermask"])
def test_a_record_rebuilds_the_generators_exactly_and_supermasks_cost_bits(method):
    trainer = TranslationTrainer(tiny(method=method), mask=MaskSpec("topk", 0.5))
    trainer.run(noise_data(), 2)
    record = record_from_trainer(trainer, "toy-0")
    gens = generators_from_record(record)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(gens["g_xy"](x), trainer.g_xy(x)) and torch.equal(gens["g_yx"](x), trainer.g_yx(x))
    weights = sum(p.numel() for n, p in trainer.g_xy.named_parameters() if n.endswith("weight")) * 2
    if method == "supermask":
        assert record.nbytes < weights  # about one bit per weight, plus the float32 free parameters
        assert record.arrays["g_xy/bits"].dtype == np.uint8
        other = dataclasses.replace(record, base_fingerprint="0" * 32)
        with pytest.raises(RecordMismatch, match="learned on base"):
            generators_from_record(other)
    else:
        assert record.nbytes >= 4 * weights // 2


def test_data_parallel_ranks_stay_identical():
    """Two ranks, each on half of every batch, with gradients and loss values averaged, stay equal."""
    world, barrier, shared = 2, threading.Barrier(2), {}

    def reduce(rank, tensors):
        shared[rank] = [t.clone() for t in tensors]
        barrier.wait()
        mean = [(a + b) / world for a, b in zip(shared[0], shared[1])]
        barrier.wait()
        return mean

    def rank_trainer(rank):
        def grads(params):
            for p, m in zip(params, reduce(rank, [p.grad for p in params])):
                p.grad.copy_(m)

        def values(v):
            names = sorted(v)
            return dict(zip(names, [float(t) for t in reduce(rank, [torch.tensor(v[n]) for n in names])]))

        return TranslationTrainer(tiny(batch_size=4), shard=(rank, world), grad_sync=grads, value_sync=values)

    trainers = [rank_trainer(r) for r in range(world)]
    threads = [threading.Thread(target=t.run, args=(noise_data(), 2)) for t in trainers]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for (name, a), b in zip(trainers[0].g_xy.state_dict().items(), trainers[1].g_xy.state_dict().values()):
        assert torch.equal(a, b), name
    assert trainers[0].normalizer.state_dict() == trainers[1].normalizer.state_dict()


def test_toy_stream_tasks_are_domain_pairs_with_polygons_for_evaluation():
    spec = spec_from_dict(
        spec_dict()
        | {
            "stream": {
                "name": "toy_shapes",
                "num_tasks": 2,
                "options": {
                    "resolution": 32,
                    "train_size": 6,
                    "test_size": 4,
                    "variants": [{}, {"max_deform": 0.5}],
                },
            }
        }
    )
    stream = stream_of(spec.stream, spec.data)
    t0, t1 = stream.translation_task(0), stream.translation_task(1)
    assert t0.train.x.shape == (6, 3, 32, 32) and t0.test.x.shape == (4, 3, 32, 32)
    assert t0.task_id == "toy_shapes-0000" and stream.config(1).max_deform == 0.5
    assert not torch.equal(t0.train.x, t1.train.x)  # each task draws its own images
    assert torch.equal(stream.translation_task(0).test.y, t0.test.y)  # a pure function of (spec, t)
    assert t0.test.paired and len(t0.test.polygons_y) == 4
    # The truth scores near zero; returning the input does not: the benchmark needs shape change.
    scores = evaluate_translation(lambda x: t0.test.y, lambda y: t0.test.x, t0.test)
    identity = evaluate_translation(lambda x: x, lambda y: y, t0.test)
    assert scores["x_to_y"]["symmetric_mean"] < 0.04 < identity["x_to_y"]["symmetric_mean"]
    assert hausdorff_score(scores) < hausdorff_score(identity)
    blank = evaluate_translation(lambda x: torch.ones_like(x), lambda y: torch.ones_like(y), t0.test)
    assert blank["x_to_y"]["detected_fraction"] == 0.0 and hausdorff_score(blank) == 0.5


def test_unpaired_folder_stream_reads_one_folder_per_task(tmp_path):
    from PIL import Image

    for split in ("trainA", "trainB", "testA", "testB"):
        (tmp_path / split).mkdir()
        for k in range(2):
            Image.fromarray(np.full((20, 20, 3), 40 * k, dtype=np.uint8)).save(tmp_path / split / f"{k}.png")
    spec = spec_from_dict(
        spec_dict()
        | {
            "stream": {
                "name": "unpaired_folders",
                "num_tasks": 1,
                "options": {"roots": [str(tmp_path)], "resolution": 16},
            }
        }
        | {"translation": {"width": 2, "disc_width": 2, "blocks": 1, "discriminator": "patch"}}
    )
    task = stream_of(spec.stream, spec.data).translation_task(0)
    assert task.train.x.shape == (2, 3, 16, 16) and not task.test.has_outlines
    scores = evaluate_translation(lambda x: x, lambda y: y, task.test)
    assert scores["cycle_l1_x"] == 0.0 and "x_to_y" not in scores  # no polygons: cycle errors only


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["translation.resolution=64"], "translation.resolution: is filled in from the stream"),
        (["translation.discriminator=pix2pix"], "allowed: dilated, patch, global"),
        (["mask.density=0.3"], "translation.method is 'trained'"),
        (["translation.method=supermask", "mask.method=learned_threshold"], "take topk, threshold"),
        (["search.lr=0.5"], "search: stream 'toy_shapes' is a translation stream"),
        (["stream.options.resolution=36"], "must be a multiple of 2\\*\\*3"),
        (["stream.options.resolution=48", "translation.discriminator=patch"], "power of two"),
        (["stream.options.variants=[{sides: 3}]"], "unknown toy-shape setting"),
        (["translation.eval_size=50"], "holds 4 test pairs"),
        (["translation.eval_every=9"], "more than translation.steps"),
        (["run.scenario=GNu"], "use GG"),
    ],
)
def test_translation_specs_are_validated_up_front(overrides, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(spec_dict(), overrides)


def test_a_translation_section_on_a_classification_stream_is_refused():
    with pytest.raises(SpecError, match="not a translation stream"):
        spec_from_dict(
            {"stream": {"name": "synthetic"}, "search": {"epochs": 1}, "translation": {"width": 2}}
        )


class Interrupt(Exception):
    pass


def test_an_interrupted_task_resumes_from_its_checkpoint_bit_for_bit(tmp_path):
    """Supermask tasks here; trained networks resume bit for bit in tests/test_translation.py."""
    spec = spec_from_dict(spec_dict(steps=4, eval_every=2, method="supermask"))
    recipe = TranslationRecipe.from_spec(spec)
    bench = TranslationBench(recipe)
    whole = train_translation_task(bench, 0)

    class EveryStep:  # a checkpoint after every step
        write_seconds, writes = 0.0, 0

        def due(self, _):
            return True

        def wrote(self, seconds):
            self.writes += 1

    def stop_at_3(trainer, metrics):
        if trainer.step == 3:
            raise Interrupt

    ckpt = tmp_path / "toy.pt"
    with pytest.raises(Interrupt):
        train_translation_task(bench, 0, checkpoint=ckpt, policy=EveryStep(), hooks=[stop_at_3])
    assert load_checkpoint(ckpt)["trainer"]["step"] == 2  # the checkpoint of step 2 (step 3 never finished)
    resumed = train_translation_task(
        bench, 0, checkpoint=ckpt, policy=EveryStep(), samples_dir=tmp_path / "s"
    )
    assert resumed.resumed_from_step == 2
    a, b = whole.record, resumed.record
    assert sorted(a.arrays) == sorted(b.arrays)
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert a.metrics["losses"] == b.metrics["losses"] and a.metrics["evals"] == b.metrics["evals"]
    assert [e["step"] for e in b.metrics["evals"]] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "step-0000004.png"
    ]  # drawn after the resume


def test_translation_sweeps_search_loss_weights_and_are_scored_by_hausdorff(tmp_path):
    from supermask.config.sweep import load_sweep

    sweep = load_sweep("tuning/toy_shapes_loss_weights.yaml")
    assert sweep.learn == "translation" and sweep.max_epochs == 4  # 1000 steps measured every 250
    assert set(sweep.space) == {
        "translation.gan_weight",
        "translation.fm_weight",
        "translation.cycle_weight",
        "translation.ssim_share",
    }
    trial = sweep.trial_spec({"translation.gan_weight": 0.3})
    assert trial.translation.gan_weight == 0.3 and trial.data.validation_fraction == 0.5
    with pytest.raises(SpecError, match="scored by val_hausdorff"):
        load_sweep("tuning/toy_shapes_loss_weights.yaml", ["metric=val_accuracy"])
    with pytest.raises(SpecError, match="search_space.translation.lr: uniform value"):
        load_sweep("tuning/toy_shapes_loss_weights.yaml", ["search_space.translation.lr={uniform: [-1, 1]}"])


def test_a_run_stores_each_task_once_with_its_probes_and_refuses_changed_settings(ray_cluster, tmp_path):
    """The driver and worker paths of `supermask run` without Ray Train: the worker loop's lead path trains,
    measures, probes and stores a task; the job then skips it (starting no Train workers), reports it, and refuses
    a spec with other settings before anything trains."""
    from supermask.interface.report import write_report
    from supermask.recipes.learners import learner_for
    from supermask.recipes.recipe import ProvenanceError
    from supermask.runtime.events import read_events
    from supermask.runtime.job import run_job
    from supermask.runtime.train_plan import Plan
    from supermask.runtime.train_workers import learn_and_store

    spec = spec_from_dict(spec_dict(steps=2, eval_every=2) | {"probes": {"every": 2, "batch": 2}})
    learner = learner_for(spec)
    out = tmp_path / "run"
    out.mkdir()
    store = TranslationStore.open(out / "store", spec.run.shards)  # as the job opens it
    plan, bench = Plan(learner, store, [[0]], str(out)), learner.bench("cpu")
    assert learn_and_store(plan, bench, [0])[0] == 1
    assert learn_and_store(plan, bench, [0])[0] == 0  # stored: skipped
    events = [e["event"] for e in read_events(out / "events.jsonl") if e["event"] != "block_progress"]
    assert events == ["task_started", "translation_eval", "task_stored", "block_stored"]
    result = run_job(learner, out, progress=False)
    assert [t.skipped for t in result.tasks] == [True] and result.workers == 0
    results = write_report(spec, result, out)
    assert results["skipped"] == ["toy_shapes-0000"]
    probes = results["probes"]
    assert sorted(probes["tasks"]) == [f"toy_shapes-0000/{n}" for n in ("d_x", "d_y", "g_xy", "g_yx")]
    assert probes["tasks"]["toy_shapes-0000/g_xy"]["last_step"] == 2 and probes["overhead"] > 0
    assert (
        results["tasks"][0]["steps"] == 2 and results["tasks"][0]["x_to_y"]["detected_fraction"] is not None
    )
    report = (out / "report.md").read_text()
    assert "## Probes" in report and (out / "norm.png").exists() and (out / "saturation.png").exists()
    other = learner_for(spec_from_dict(spec_dict(steps=2, eval_every=2, lr=0.01)))
    with pytest.raises(ProvenanceError, match="translation.lr: 0.0002 -> 0.01"):
        run_job(other, out, progress=False)
    with TranslationStore.open(out / "store") as store:
        assert not store.missing(["toy_shapes-0000"])  # nothing was deleted


def test_supermask_run_trains_a_translation_task_on_ray_train(ray_cluster, tmp_path, capsys):
    """`supermask run` of a translation spec through Ray Train: a worker process trains, probes and stores
    the task; the driver reports it (reruns and refusals: the driver-path test above)."""
    import os

    import yaml

    from supermask.interface.cli import main
    from supermask.runtime.events import read_events

    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(steps=2, eval_every=2) | {"probes": {"every": 2, "batch": 2}}))
    out = tmp_path / "run"
    assert (
        main(["run", str(spec), "--out", str(out), "--no-progress", "--set", "run.checkpoint_seconds=0"]) == 0
    )
    printed = capsys.readouterr().out
    assert "X->Y Hausdorff" in printed and "probes: 4 networks" in printed
    task = json.loads((out / "results.json").read_text())["tasks"][0]
    assert (
        task["task"] == "toy_shapes-0000" and task["steps"] == 2 and [e["step"] for e in task["evals"]] == [2]
    )
    with TranslationStore.open(out / "store") as store:
        assert store.get("toy_shapes-0000").kind == "translation"
    stored = [e for e in read_events(out / "events.jsonl") if e["event"] == "task_stored"]
    assert len(stored) == 1 and stored[0]["pid"] != os.getpid()  # learned by a Train worker
    probed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in probed} == {f"toy_shapes-0000/{n}" for n in ("d_x", "d_y", "g_xy", "g_yx")}
    assert sorted({r["step"] for r in probed}) == [0, 2]
