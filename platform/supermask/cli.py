"""The `supermask` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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

    store = sub.add_parser("store", help="inspect, verify and export a mask store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    for name, help_text in (
        ("ls", "list the stored masks"),
        ("info", "summary of the store"),
        ("verify", "re-read every mask and check its checksum; exit 1 on any problem"),
    ):
        p = store_sub.add_parser(name, help=help_text)
        p.add_argument("path", type=Path, help="an HDF5 store file, or a run folder holding store/")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    export = store_sub.add_parser("export", help="write the store's masks into one standalone HDF5 file")
    export.add_argument("path", type=Path)
    export.add_argument("dest", type=Path)
    reshard = store_sub.add_parser(
        "reshard", help="move whole partitions between shard files so a store has N shards (store closed)"
    )
    reshard.add_argument("path", type=Path, help="the store folder (holding store.json)")
    reshard.add_argument("num_shards", type=int, help="the new number of shards")
    return parser


def _store_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = (
            sorted((path / "store").glob("*.h5")) if (path / "store").is_dir() else sorted(path.glob("*.h5"))
        )
        if not files:
            raise FileNotFoundError(f"no store files (*.h5) under {path}; pass a run folder or a store file")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder or a store file")
    return [path]


def _cmd_run(args) -> int:
    from supermask.report import write_report
    from supermask.runtime.job import run_job
    from supermask.runtime.session import ray_session
    from supermask.spec import dump_spec, load_spec

    spec = load_spec(args.spec, args.overrides)
    if args.check:
        print(dump_spec(spec), end="")
        return 0
    out_dir = args.out or Path(spec.run.out or Path("runs") / spec.name)
    print(
        f"supermask run: {spec.name}: {spec.stream.num_tasks} tasks of {spec.stream.name} "
        f"on {spec.base.arch}, mask {spec.mask.method}; output in {out_dir}",
        flush=True,
    )
    with ray_session(args.address):
        result = run_job(spec, out_dir, progress=not args.no_progress)
    results = write_report(spec, result, out_dir)
    for t in results["tasks"]:
        acc = "failed: " + t["error"] if t["error"] else f"{t['accuracy']:.4f}"
        print(f"  {t['task']:<24} accuracy {acc}")
    avg = results["avg_accuracy"]
    print(
        f"average accuracy ({spec.run.scenario}): {avg:.4f}" if avg is not None else "no task was evaluated"
    )
    _print_inference(results)
    print(f"data: {results['data_source']}; {results['seconds']:.1f} s")
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    if results["failed_tasks"]:
        print(
            f"{len(results['failed_tasks'])} task(s) failed; run the same command again to retry them "
            "(learned masks are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_inference(results: dict) -> None:
    """The task-inference lines of a GNs/GNu/NNs result."""
    if results.get("task_inference_accuracy") is not None:
        inf = results["inference"]
        print(
            f"task-inference accuracy: {results['task_inference_accuracy']:.4f} ({inf['inferences']} inferences "
            f"among {inf['among_masks']} masks, {inf['method']} {inf['objective']} {inf['mode']}; {inf['seconds']:.1f} s)"
        )
    if results.get("nns"):
        nns = results["nns"]
        print(f"masks allocated without task ids: {nns['num_masks']} for {nns['num_tasks']} tasks")


def _cmd_infer(args) -> int:
    from supermask.report import write_report
    from supermask.runtime.inference_job import run_inference, store_root
    from supermask.runtime.session import ray_session
    from supermask.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    root = store_root(args.store)
    if spec.run.scenario not in ("GNs", "GNu"):
        print(
            f"scenario {spec.run.scenario} in the spec: evaluating GNu (--set run.scenario=GNs for shared labels)"
        )
        spec.run.scenario = "GNu"
    out_dir = args.out or (root.parent if root.name == "store" else root) / f"infer-{spec.run.scenario}"
    print(
        f"supermask infer: {spec.stream.num_tasks} tasks of {spec.stream.name}, scenario {spec.run.scenario}, "
        f"masks from {root}; output in {out_dir}",
        flush=True,
    )
    with ray_session(args.address):
        result = run_inference(spec, root, progress=not args.no_progress)
    results = write_report(spec, result, out_dir)
    for t in results["tasks"]:
        print(
            f"  {t['task']:<24} accuracy {t['accuracy']:.4f}  task inference {t['task_inference_accuracy']:.4f}"
        )
    print(f"average accuracy ({spec.run.scenario}): {results['avg_accuracy']:.4f}")
    _print_inference(results)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


def _cmd_tune(args) -> int:
    from supermask.runtime.session import ray_session
    from supermask.runtime.tune_job import run_sweep
    from supermask.sweep import dump_sweep, load_sweep
    from supermask.sweep_report import write_sweep_report

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
        with ray_session(args.address):
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
        settings = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        print(
            f"best: {best['trial_id']} ({settings}): val accuracy {best['metrics']['val_accuracy']:.4f} "
            f"at density {best['metrics']['density']:.4f}"
        )
        print(f"wrote {out_dir / 'sweep.json'}, {out_dir / 'best.yaml'} and {out_dir / 'report.md'}")
    if not record["finished"] or counts["error"]:
        print(
            "the sweep did not finish every trial; run the same command again to resume it "
            "(finished trials are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_store(args) -> int:
    from supermask.store.maskfile import MaskFile

    if args.store_command == "reshard":
        from supermask.runtime.mask_store import MaskStore

        done = MaskStore.reshard(args.path, args.num_shards)
        print(
            f"resharded {done['root']} from {done['from']} to {done['to']} shards: "
            f"{done['moved_partitions']} partitions, {done['moved_masks']} masks moved"
        )
        return 0
    if args.store_command == "export":
        files = _store_files(args.path)
        if len(files) != 1:
            raise ValueError(f"{args.path} holds {len(files)} store files; export one at a time")
        with MaskFile(files[0]) as store:
            store.export(args.dest)
            print(f"exported {len(store)} masks to {args.dest}")
        return 0
    status = 0
    report = []
    for path in _store_files(args.path):
        with MaskFile(path) as store:
            if args.store_command == "ls":
                for task_id in store.list():
                    m = store.get(task_id)
                    report.append(
                        {
                            "file": str(path),
                            "task": task_id,
                            "density": m.density,
                            "mask_bytes": m.mask_bytes,
                            "base_fingerprint": m.base_fingerprint,
                            "created": m.created,
                        }
                    )
            elif args.store_command == "info":
                report.append({"file": str(path), **store.stats()})
            else:
                v = store.verify()
                report.append(
                    {
                        "file": str(path),
                        "checked": v.checked,
                        "ok": v.ok,
                        "problems": list(map(str, v.problems)),
                    }
                )
                status |= 0 if v.ok else 1
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for row in report:
            if args.store_command == "ls":
                print(
                    f"{row['task']:<28} density {row['density']:.4f}  {row['mask_bytes']:>9,} B  base {row['base_fingerprint'][:12]}"
                )
            elif args.store_command == "verify":
                print(
                    f"{row['file']}: {row['checked']} masks checked, "
                    + ("OK" if row["ok"] else f"{len(row['problems'])} problem(s)")
                )
                for p in row["problems"]:
                    print(f"  - {p}")
            else:
                print("\n".join(f"{k}: {v}" for k, v in row.items()))
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from supermask.data import DatasetUnavailable
    from supermask.runtime.job import JobFailed
    from supermask.spec import SpecError
    from supermask.store.errors import MaskFileError

    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "tune":
            return _cmd_tune(args)
        if args.command == "infer":
            return _cmd_infer(args)
        return _cmd_store(args)
    except (SpecError, FileNotFoundError, MaskFileError, DatasetUnavailable) as e:
        print(f"supermask: error: {e}", file=sys.stderr)
        return 2
    except JobFailed as e:
        print(f"supermask: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "supermask: interrupted; learned masks are kept in the store, run again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
