"""`supermask tune`: sweep-spec validation, tuning/quick.yaml end to end with ASHA, its best.yaml run,
and a sweep whose driver is killed with SIGKILL, resumed by running the same command again."""

import json
import os
import signal
import time

import pytest
import torch

from conftest import TUNING, cli_process
from supermask.config.schema import SpecError
from supermask.config.spec import load_spec
from supermask.config.sweep import load_sweep, sweep_from_dict
from supermask.core.evaluate import evaluate_mask
from supermask.interface.cli import main
from supermask.interface.sweep_report import best_trial, pareto_front
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.sweep_trial import advance_one_epoch, epoch_metrics, trial_probes, trial_stacks
from supermask.runtime.events import read_events
from supermask.runtime.tune_state import StateBackup, repair_experiment

QUICK = TUNING / "quick.yaml"

BASE = {
    "name": "t",
    "base_spec": "tasks/synthetic.yaml",
    "set": {"search.epochs": 6},
    "num_tasks": 2,
    "validation_fraction": 0.25,
    "search_space": {"mask.density": {"grid": [0.3, 0.6]}},
    "algorithm": "random",
}


# ---- validation, no Ray ----


@pytest.mark.parametrize("path", sorted(TUNING.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_is_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem
    assert sweep.num_trials >= 1 and sweep.spec.validation_fraction > 0
    assert load_sweep(path).fingerprint() == sweep.fingerprint()


def test_shipped_sweeps_search_what_they_say():
    density = load_sweep(TUNING / "density_sweep.yaml")
    points = density.space["mask.density"].points()
    assert (min(points), max(points), density.num_trials) == (0.05, 0.9, len(points))
    assert (density.base["stream"]["name"], density.base["base"]["arch"]) == ("permuted_mnist", "fc1024")
    assert density.base["mask"]["method"] == "topk"
    thresholds = load_sweep(TUNING / "learned_threshold_sweep.yaml")
    assert thresholds.base["mask"]["method"] == "learned_threshold"
    assert {"mask.options.init_threshold", "search.weight_decay"} <= set(thresholds.space)
    quick = load_sweep(QUICK)
    assert quick.num_trials >= 4 and quick.spec.scheduler.name == "asha"


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"num_samples": 0}, "num_samples", "[1,"),
        ({"num_sample": 3}, "num_sample", "did you mean 'num_samples'"),
        ({"algorithm": "bayes"}, "algorithm", "random, grid, optuna, hyperopt"),
        ({"scheduler": {"name": "hyperband"}}, "scheduler.name", "asha, none"),
        ({"scheduler": {"grace_period": 10}}, "scheduler.grace_period", "at most max_t (6 epochs)"),
        ({"validation_fraction": 0}, "validation_fraction", "(0.0, 1.0]"),
        ({"validation_fraction": 1.0}, "validation_fraction", "(0, 1)"),
        ({"metric": "val_accuracy_at_density"}, "density_budget", "needs a density_budget"),
        ({"base_spec": "tasks/nope.yaml"}, "base_spec", "no such task spec"),
        ({"set": {"mask.density": 3}}, "base_spec", "mask.density: got 3.0; must be in (0.0, 1.0]"),
        ({"search_space": {}}, "search_space", "empty"),
        ({"search_space": {"mask.density": {"grid": [0.1, 1.5]}}}, "search_space.mask.density", "(0.0, 1.0]"),
        (
            {"search_space": {"mask.densty": {"grid": [0.1]}}},
            "search_space.mask.densty",
            "did you mean 'density'",
        ),
        ({"search_space": {"search.lr": [0.1, 0.2]}}, "search_space.search.lr", "{choice: [...]}"),
        (
            {"search_space": {"search.lr": {"loguniform": [0, 1]}}},
            "search_space.search.lr.loguniform",
            "0 < lo",
        ),
        ({"search_space": {"search.lr": {"uniform": [1, 0.1]}}}, "search_space.search.lr.uniform", "lo < hi"),
        (
            {"search_space": {"search.epochs": {"randint": [3, 1]}}},
            "search_space.search.epochs.randint",
            "lo <= hi",
        ),
        (
            {"search_space": {"search.epochs": {"uniform": [1, 3]}}},
            "search_space.search.epochs",
            "an integer",
        ),
        (
            {"search_space": {"search.optimizer": {"choice": ["sgd", "lion"]}}},
            "search_space.search.optimizer",
            "'lion' is not allowed: search.optimizer: got 'lion'; allowed: sgd, adam, rmsprop",
        ),
        (
            {"search_space": {"stream.num_tasks": {"grid": [1, 2]}}},
            "search_space.stream.num_tasks",
            "fixed in a sweep",
        ),
        (
            {"search_space": {"mask.options.init_threshold": {"uniform": [0.1, 0.5]}}},
            "search_space.mask.options.init_threshold",
            "not an option of mask method 'topk'; allowed: none",
        ),
        (
            {"algorithm": "grid", "search_space": {"search.lr": {"uniform": [0.1, 1.0]}}},
            "search_space.search.lr",
            "cannot enumerate uniform",
        ),
        (
            {"algorithm": "optuna", "search_space": {"search.lr": {"grid": [0.1, 1.0]}}},
            "search_space.search.lr",
            "with optuna use choice",
        ),
        # a run field a trial does not read, and a kind a sweep cannot score
        (
            {"set": {"search.epochs": 6, "run.tasks_per_worker": 2}},
            "base_spec",
            "run.tasks_per_worker: got 2, but a sweep trial does not read it",
        ),
        (
            {"set": {"search.epochs": 6, "learn": "fine_tune", "mask": None}},
            "base_spec",
            "learn fine_tune trains one network through the whole stream",
        ),
        ({"metric": "val_hausdorff"}, "metric", "has learn 'masks', whose trials are scored by val_accuracy"),
    ],
)
def test_validation_errors_name_field_value_and_allowed(change, field, words, monkeypatch):
    monkeypatch.setattr("supermask.config.sweep.installed", lambda name: True)  # optuna "installed"
    with pytest.raises(SpecError) as e:
        sweep_from_dict({**BASE, **change}, origin=TUNING)
    message = str(e.value)
    assert message.startswith(field), message
    assert words in message, message


def test_missing_optional_algorithm_says_how_to_install(monkeypatch):
    monkeypatch.setattr("supermask.config.sweep.installed", lambda name: False)
    for algorithm in ("optuna", "hyperopt"):
        with pytest.raises(SpecError, match=rf"pip install 'supermask\[{algorithm}\]'"):
            sweep_from_dict({**BASE, "algorithm": algorithm}, origin=TUNING)


def test_set_overrides_reach_the_sweep_its_base_and_its_search_space():
    sweep = load_sweep(
        QUICK,
        [
            "num_samples=3",
            "set.search.epochs=2",
            "search_space.mask.density={grid: [0.2]}",
            "search_space.search.lr=null",
        ],
    )
    assert sweep.spec.num_samples == 3 and sweep.base["search"]["epochs"] == 2
    assert {p: d.to_dict() for p, d in sweep.space.items()} == {"mask.density": {"grid": [0.2]}}
    assert sweep.num_trials == 3 and sweep.max_t == 2


def test_trial_specs_hold_out_validation_and_best_spec_restores_the_stream():
    sweep = load_sweep(QUICK)
    config = {"search.lr": 0.5, "mask.density": 0.3}
    trial = sweep.trial_spec(config)
    assert (trial.stream.num_tasks, trial.data.validation_fraction) == (2, 0.25)
    assert (trial.mask.density, trial.search.lr, trial.search.epochs) == (0.3, 0.5, 6)
    task = Workbench(Recipe.from_spec(trial)).task(0)
    assert (len(task.train_y), len(task.val_y), len(task.test_y)) == (384, 128, 256)
    best = sweep.best_spec(config)
    assert (best.stream.num_tasks, best.data.validation_fraction, best.name) == (4, 0.0, "quick_best")
    assert (best.mask.density, best.search.lr) == (0.3, 0.5)


def test_density_budget_scores_trials_over_it_as_infeasible():
    sweep = sweep_from_dict(
        {**BASE, "metric": "val_accuracy_at_density", "density_budget": 0.3}, origin=TUNING
    )
    assert sweep.objective(0.8, 0.25) == 0.8
    assert sweep.objective(0.8, 0.3005) == 0.8  # within one weight's rounding
    assert sweep.objective(0.99, 0.5) == pytest.approx(-0.2)
    assert sweep.objective(0.99, 0.5) < sweep.objective(0.1, 0.3) and not sweep.feasible(0.5)


def test_pareto_front_and_best_trial():
    points = [(0.1, 0.80), (0.3, 0.90), (0.5, 0.85), (0.5, 0.95), (0.9, 0.95), (0.05, 0.5)]
    assert pareto_front(points) == [5, 0, 1, 3]

    class T:
        def __init__(self, trial_id, status, objective, density):
            self.trial_id, self.status = trial_id, status
            self.metrics = {"objective": objective, "density": density}

    trials = [
        T("a", "stopped_early", 0.99, 0.1),
        T("b", "completed", 0.9, 0.5),
        T("c", "completed", 0.9, 0.3),
    ]
    assert best_trial(trials).trial_id == "c"  # full-budget trials only; ties go to the sparser
    assert best_trial([T("a", "error", 1.0, 0.1)]) is None


def test_trial_metrics_use_the_validation_split_and_leave_learned_thresholds_untouched():
    torch.manual_seed(0)
    sweep = sweep_from_dict(
        {**BASE, "set": {"search.epochs": 2, "mask.method": "learned_threshold", "mask.density": 0.3}},
        origin=TUNING,
    )
    bench = Workbench(Recipe.from_spec(sweep.trial_spec({"mask.density": 0.3})))
    stacks = trial_stacks(bench)
    assert [ts for ts, _ in stacks] == [[0, 1]]  # equal training sizes: one stack
    probes = trial_probes(bench, stacks)
    advance_one_epoch(stacks, 1, probes)
    ((_, search),) = stacks
    assert search.step == search.steps_per_epoch == 6
    thresholds = search.method.s.detach().clone()
    metrics = epoch_metrics(sweep, bench, stacks, 1, 2, probes)
    assert {"probe_norm", "probe_saturation_cosine"} <= set(metrics)  # the tasks' latest probes, for Tune
    assert torch.equal(search.method.s, thresholds)  # the final calibration ran on a copy
    assert metrics["density"] == pytest.approx(0.3, abs=2e-3)
    expected = [
        evaluate_mask(bench.base, mask, bench.task(t).val_x, bench.task(t).val_y, num_classes=4).real_classes
        for t, mask in enumerate(search.current_masks())
    ]
    assert metrics["task_val_accuracy"] == expected
    assert metrics["val_accuracy"] == pytest.approx(sum(expected) / 2)
    assert set(metrics["layer_density"]) == set(bench.base.masked_names)


# ---- on Ray ----


@pytest.fixture(scope="module")
def quick_sweep(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    assert main(["tune", str(QUICK), "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_sweep_runs_every_trial_and_asha_stops_some_early(quick_sweep):
    record = json.loads((quick_sweep / "sweep.json").read_text())
    trials = record["trials"]
    assert record["finished"] and len(trials) == record["expected_trials"] == 4
    configs = sorted((t["config"]["search.lr"], t["config"]["mask.density"]) for t in trials)
    assert configs == [(0.001, 0.3), (0.001, 0.6), (0.5, 0.3), (0.5, 0.6)]
    stopped = [t for t in trials if t["status"] == "stopped_early"]
    completed = [t for t in trials if t["status"] == "completed"]
    assert len(stopped) >= 1 and len(completed) >= 1 and len(stopped) + len(completed) == 4
    for t in trials:
        epochs = [h["epoch"] for h in t["history"]]
        assert epochs == list(range(1, t["epochs"] + 1))
        assert t["planned_epochs"] == 6
        assert (t["epochs"] < 6) == (t["status"] == "stopped_early")
        assert abs(t["metrics"]["density"] - t["config"]["mask.density"]) < 2e-3
        assert 0.0 <= t["metrics"]["val_accuracy"] <= 1.0
        assert t["metrics"]["probe_norm"] > 0  # probes are on in sweeps too, reported with every epoch
    best = record["best"]
    assert best["config"]["search.lr"] == 0.5  # lr 0.001 barely moves the scores
    assert best["metrics"]["val_accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert best["metrics"]["objective"] == max(t["metrics"]["objective"] for t in completed)
    assert record["pareto_front"] and set(record["pareto_front"]) <= {t["trial_id"] for t in completed}
    # Checkpoints only serve resumes: a finished sweep deletes those of its ended trials.
    assert not list((quick_sweep / "tune" / "quick").glob("*/checkpoint_*"))


def test_report_has_the_table_and_plots(quick_sweep):
    report = (quick_sweep / "report.md").read_text()
    record = json.loads((quick_sweep / "sweep.json").read_text())
    for t in record["trials"]:
        assert t["trial_id"] in report
    for png in ("accuracy_vs_density.png", "layer_density.png", "curves.png"):
        assert png in report
        assert (quick_sweep / png).read_bytes()[:4] == b"\x89PNG"


def test_best_yaml_is_a_task_spec_that_supermask_run_learns(quick_sweep, tmp_path):
    record = json.loads((quick_sweep / "sweep.json").read_text())
    spec = load_spec(quick_sweep / "best.yaml")
    assert spec.mask.density == record["best"]["config"]["mask.density"]
    assert spec.search.lr == record["best"]["config"]["search.lr"]
    assert (spec.stream.num_tasks, spec.data.validation_fraction) == (4, 0.0)  # the base spec's own stream
    assert main(["run", str(quick_sweep / "best.yaml"), "--out", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_tasks"] == 4 and not results["failed_tasks"]
    assert results["avg_accuracy"] > 0.5


def test_rerunning_a_finished_sweep_trains_nothing(quick_sweep):
    before = json.loads((quick_sweep / "sweep.json").read_text())
    epochs_before = [e for e in read_events(quick_sweep / "events.jsonl") if e["event"] == "epoch_done"]
    assert main(["tune", str(QUICK), "--out", str(quick_sweep), "--no-progress"]) == 0
    after = json.loads((quick_sweep / "sweep.json").read_text())
    epochs_after = [e for e in read_events(quick_sweep / "events.jsonl") if e["event"] == "epoch_done"]
    assert after["resumed"] and len(epochs_after) == len(epochs_before)
    assert [(t["trial_id"], t["metrics"]["val_accuracy"]) for t in after["trials"]] == [
        (t["trial_id"], t["metrics"]["val_accuracy"]) for t in before["trials"]
    ]


def test_another_sweep_over_the_same_folder_is_refused(quick_sweep, capsys):
    code = main(["tune", str(QUICK), "--out", str(quick_sweep), "--no-progress", "--set", "num_samples=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds another sweep" in err and "sweep.num_samples" in err


def test_bad_sweep_exits_2_naming_the_field(tmp_path, capsys):
    code = main(
        ["tune", str(QUICK), "--out", str(tmp_path), "--set", "search_space.mask.density={grid: [2]}"]
    )
    assert code == 2
    assert "search_space.mask.density" in capsys.readouterr().err
    assert not (tmp_path / "sweep.json").exists()


def _tune_cli(out, *extra):
    return cli_process("tune", str(QUICK), "--out", str(out), "--no-progress", *extra)


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_rerunning_finished_trials(tmp_path):
    # Four trials one after another, 20 epochs each, no early stopping: kill the driver after two.
    extra = ["--set", "scheduler.name=none", "--set", "set.search.epochs=20", "--set", "max_concurrent=1"]
    out = tmp_path / "sweep"
    driver = _tune_cli(out, *extra)
    records: dict = {}
    deadline = time.time() + 240
    while time.time() < deadline and len(records) < 2 and driver.poll() is None:
        for path in (out / "trials").glob("*.json") if (out / "trials").exists() else []:
            try:
                records[path.stem] = json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` would
    killed_at = time.time()
    log = driver.communicate()[0]
    assert len(records) >= 2, log[-3000:]
    done_before = {e["trial"] for e in read_events(out / "events.jsonl") if e["event"] == "trial_finished"}
    assert len(done_before | set(records)) < 4, "the sweep finished before the kill: nothing was resumed"

    again = _tune_cli(out, *extra)
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    record = json.loads((out / "sweep.json").read_text())
    trials = {t["trial_id"]: t for t in record["trials"]}
    assert record["resumed"] and record["finished"] and len(trials) == 4
    assert all(t["status"] == "completed" and t["epochs"] == 20 for t in trials.values())
    events = read_events(out / "events.jsonl")
    for trial_id, finished in records.items():
        # Finished trials keep their ids and results ...
        assert trials[trial_id]["metrics"]["val_accuracy"] == finished["metrics"]["val_accuracy"]
        assert trials[trial_id]["config"] == finished["config"]
        # ... and were not learned again: each epoch ran once, and any restart only replayed the record.
        epochs = [e["epoch"] for e in events if e["event"] == "epoch_done" and e["trial"] == trial_id]
        assert sorted(epochs) == list(range(1, 21)), epochs
        restarts = [
            e
            for e in events
            if e["event"] == "trial_started" and e["trial"] == trial_id and e["time"] > killed_at
        ]
        assert all(e.get("replayed") for e in restarts), restarts
    for trial_id in trials:
        epochs = [e["epoch"] for e in events if e["event"] == "epoch_done" and e["trial"] == trial_id]
        assert set(epochs) == set(range(1, 21)), (trial_id, epochs)


def test_torn_tune_state_is_repaired_from_its_last_whole_copy(tmp_path):
    experiment, backup = tmp_path / "exp", tmp_path / "backup"
    experiment.mkdir()
    state = experiment / "experiment_state-2026-01-01_00-00-00.json"
    searcher = experiment / "basic-variant-state-2026-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": [1, 2, 3]}))
    searcher.write_text(json.dumps({"generated": 4}))
    keeper = StateBackup(str(experiment), str(backup))
    keeper.sync()
    state.write_text('{"trial_data": [1, 2, 3, 4')  # a driver killed mid-write
    keeper.sync()  # a torn file is never copied over a whole one
    assert json.loads((backup / state.name).read_text()) == {"trial_data": [1, 2, 3]}
    orphan = experiment / "experiment_state-2026-01-02_00-00-00.json"
    orphan.write_text('{"trial_da')  # torn before any whole copy was taken
    assert sorted(repair_experiment(experiment, backup)) == sorted([state.name, orphan.name])
    assert json.loads(state.read_text()) == {"trial_data": [1, 2, 3]}
    assert not orphan.exists() and json.loads(searcher.read_text()) == {"generated": 4}
    assert repair_experiment(experiment, backup) == []


@pytest.mark.parametrize("algorithm", ["optuna", "hyperopt"])
def test_optional_searchers_suggest_configs_in_the_space(algorithm):
    pytest.importorskip(algorithm)  # optional extras: pip install 'supermask[optuna]' / '[hyperopt]'
    from supermask.runtime.tune_job import param_space, search_algorithm

    space = {
        "search.lr": {"loguniform": [0.01, 1.0]},
        "mask.density": {"choice": [0.2, 0.4]},
        "search.epochs": {"randint": [1, 3]},
    }
    sweep = sweep_from_dict({**BASE, "algorithm": algorithm, "search_space": space}, origin=TUNING)
    searcher = search_algorithm(sweep)
    assert searcher.set_search_properties("objective", "max", param_space(sweep))
    for i in range(5):
        config = searcher.suggest(f"t{i}")
        assert set(config) == {"search.lr", "mask.density", "search.epochs"}
        assert 0.01 <= config["search.lr"] <= 1.0 and config["mask.density"] in (0.2, 0.4)
        assert config["search.epochs"] in (1, 2, 3)
        spec = sweep.trial_spec(config)  # whatever the searcher returns, a trial can build its spec
        assert spec.search.epochs == config["search.epochs"]


def test_a_sweep_recorded_before_specs_said_their_kind_in_learn_resumes(tmp_path):
    """sweep_spec.json of an earlier version (learn: masks for a translation stream, weights.mode) is the
    same sweep; a record that differs in what decides the trials is still another sweep."""
    from supermask.runtime.tune_job import SPEC_FILE, check_same_sweep

    sweep = load_sweep(TUNING / "toy_shapes_quick.yaml")
    old = json.loads(json.dumps({"fingerprint": "0" * 16, **sweep.to_dict()}, default=str))
    old["base"]["learn"] = "masks"
    old["base"]["weights"]["mode"] = "per_task"
    (tmp_path / SPEC_FILE).write_text(json.dumps(old))
    assert check_same_sweep(sweep, tmp_path)
    old["base"]["translation"]["lr"] = 0.5
    (tmp_path / SPEC_FILE).write_text(json.dumps(old))
    with pytest.raises(SpecError, match="holds another sweep .changed: base.translation.lr"):
        check_same_sweep(sweep, tmp_path)
