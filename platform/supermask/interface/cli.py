"""The `supermask` command: learn task streams, infer tasks, sweep settings, inspect stores."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from supermask.interface.store_commands import add_store_parser, run_store_command

log = logging.getLogger("supermask")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set mask.density=0.1 (repeatable)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: run.out in the spec, else runs/<name>)")
    p.add_argument("--address", help="Ray cluster address (default: start an embedded local Ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supermask", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="learn a task stream and evaluate it")
    run.add_argument("spec", type=Path, help="task-stream spec (YAML), e.g. tasks/permuted_mnist.yaml")
    _add_common(run)
    run.add_argument("--check", action="store_true", help="validate the spec, print it resolved, and exit")
    run.add_argument(
        "--relearn",
        action="store_true",
        help="delete stored masks and checkpoints made with other settings than this spec, and learn them again",
    )

    infer = sub.add_parser("infer", help="evaluate task inference (GNs/GNu) on the masks of a stored run")
    infer.add_argument(
        "--store", type=Path, required=True, help="a run folder (holding store/) or a store folder"
    )
    infer.add_argument(
        "--spec", type=Path, required=True, help="the task-stream spec the masks were learned with"
    )
    _add_common(infer)

    tune = sub.add_parser("tune", help="run (or resume) a Ray Tune sweep of a task spec's settings")
    tune.add_argument("sweep", type=Path, help="sweep spec (YAML), e.g. tuning/density_sweep.yaml")
    _add_common(tune)
    tune.add_argument("--check", action="store_true", help="validate the sweep, print it resolved, and exit")

    add_store_parser(sub)
    return parser


def _check(spec) -> int:
    """`--check`: the spec as its learner kind reads it, and what resolving it decided."""
    from supermask.config.spec import dump_spec
    from supermask.data import DatasetUnavailable
    from supermask.recipes.learners import learner_for

    try:
        resolved = "\n".join(learner_for(spec).resolved_lines())
    except DatasetUnavailable as e:
        resolved = f"# not resolved (the data is not here): {e}"
    print(dump_spec(spec) + resolved)
    return 0


def _cmd_run(args) -> int:
    from supermask.config.spec import load_spec
    from supermask.interface.learner_sections import run_section
    from supermask.interface.report import write_report
    from supermask.recipes.learners import learner_for
    from supermask.runtime.job import run_job
    from supermask.runtime.session import ray_session

    spec = load_spec(args.spec, args.overrides)
    if args.check:
        return _check(spec)
    section = run_section(spec.learn)
    started = time.perf_counter()
    out_dir = args.out or Path(spec.run.out or Path("runs") / spec.name)
    print(f"supermask run: {spec.name}: {section.headline(spec)}; output in {out_dir}", flush=True)
    with ThreadPoolExecutor(1) as pool:
        resolving = pool.submit(learner_for, spec)  # loads the data's metadata while Ray starts
        with ray_session(args.address, log_file=out_dir / "ray.log", quiet=not args.verbose) as session:
            learner = resolving.result()
            result = run_job(learner, out_dir, progress=not args.no_progress, relearn=args.relearn)
    result.timing["ray_start_seconds"] = session.start_seconds
    result.timing["command_seconds"] = time.perf_counter() - started
    results = write_report(spec, result, out_dir)
    for line in section.console(spec, learner, results, out_dir):
        print(line)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    if results.get("failed_tasks"):
        print(
            f"{len(results['failed_tasks'])} task(s) failed; run the same command again to retry them "
            "(learned masks are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_infer(args) -> int:
    from supermask.config.spec import load_spec
    from supermask.interface.learner_sections import run_section
    from supermask.interface.report import write_report
    from supermask.recipes.learners import learner_for
    from supermask.runtime.job import run_inference, store_root
    from supermask.runtime.session import ray_session

    spec = load_spec(args.spec, args.overrides)
    root = store_root(args.store)
    if spec.run.scenario not in ("GNs", "GNu"):
        print(
            f"scenario {spec.run.scenario} in the spec: evaluating GNu (--set run.scenario=GNs for shared labels)"
        )
        spec = load_spec(
            args.spec, [*args.overrides, "run.scenario=GNu"]
        )  # validated as the scenario it runs
    learner = learner_for(spec)
    out_dir = args.out or (root.parent if root.name == "store" else root) / f"infer-{spec.run.scenario}"
    print(
        f"supermask infer: {spec.stream.num_tasks} tasks of {spec.stream.name}, scenario {spec.run.scenario}, "
        f"masks from {root}; output in {out_dir}",
        flush=True,
    )
    with ray_session(args.address, log_file=out_dir / "ray.log", quiet=not args.verbose):
        result = run_inference(learner, root, progress=not args.no_progress)
    results = write_report(spec, result, out_dir)
    for line in run_section(spec.learn).infer_console(spec, results):
        print(line)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


def _cmd_tune(args) -> int:
    from supermask.config.sweep import dump_sweep, load_sweep
    from supermask.interface.learner_sections import sweep_section
    from supermask.interface.sweep_report import write_sweep_report
    from supermask.runtime.session import ray_session
    from supermask.runtime.tune_job import run_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    if args.check:
        print(dump_sweep(sweep), end="")
        return 0
    out_dir = args.out or Path(sweep.spec.out or Path("runs") / "sweeps" / sweep.name)
    print(
        f"supermask tune: {sweep.name}: {sweep.num_trials} trials ({sweep.spec.algorithm}, scheduler "
        f"{sweep.spec.scheduler.name}) over {', '.join(sweep.space)}; {sweep.spec.num_tasks} tasks each; "
        f"output in {out_dir}",
        flush=True,
    )
    try:
        with ray_session(args.address, log_file=out_dir / "ray.log", quiet=not args.verbose):
            outcome = run_sweep(sweep, out_dir, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("supermask: interrupted; run the same command again to resume the sweep", file=sys.stderr)
        return 130
    record = write_sweep_report(sweep, outcome, out_dir)
    counts = record["status_counts"]
    print(
        f"{record['num_trials']} trials: {counts['completed']} completed, {counts['stopped_early']} stopped "
        f"early, {counts['error']} failed, {counts['unfinished']} unfinished; {outcome.seconds:.1f} s"
    )
    best = record["best"]
    if best is not None:
        from supermask.recipes.results import TrialRecord

        settings = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        trial = TrialRecord(best["trial_id"], best["config"], "completed", 0, None, metrics=best["metrics"])
        print(f"best: {best['trial_id']} ({settings}): {sweep_section(sweep.learn).score(trial)}")
        print(f"wrote {out_dir / 'sweep.json'}, {out_dir / 'best.yaml'} and {out_dir / 'report.md'}")
    if not record["finished"] or counts["error"]:
        print(
            "the sweep did not finish every trial; run the same command again to resume it "
            "(finished trials are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


class _ConsoleFormat(logging.Formatter):
    """Our own progress lines as they are; warnings and errors with their level and source."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"{record.levelname} {record.name}: {record.getMessage()}"
        return record.getMessage()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setFormatter(_ConsoleFormat())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[console])
    from supermask.config.schema import SpecError
    from supermask.core.devices import DeviceUnavailable
    from supermask.data import DatasetUnavailable
    from supermask.recipes.checkpoints import CheckpointError
    from supermask.recipes.recipe import BaseFingerprintError, ProvenanceError
    from supermask.store.errors import MaskFileError

    commands = {"run": _cmd_run, "tune": _cmd_tune, "infer": _cmd_infer, "store": run_store_command}
    try:
        return commands[args.command](args)
    except (
        SpecError,
        FileNotFoundError,
        MaskFileError,
        DatasetUnavailable,
        DeviceUnavailable,
        ProvenanceError,
        CheckpointError,
        BaseFingerprintError,
    ) as e:
        print(f"supermask: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "supermask: interrupted; learned masks are kept in the store, run again to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        from supermask.runtime.job import JobFailed

        if isinstance(e, JobFailed):
            print(f"supermask: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
