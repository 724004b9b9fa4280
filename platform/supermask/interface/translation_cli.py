"""`supermask run` of a translation spec: resolve it, train its tasks on Ray, print and write the report."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from supermask.config.spec import Spec

_SECTIONS = ("name", "stream", "data", "run", "translation")


def translation_spec_yaml(spec: Spec) -> str:
    """The sections of a translation spec that mean something to it, as YAML."""
    d = spec.to_dict()
    keep = {k: d[k] for k in _SECTIONS}
    if spec.translation.method == "supermask":
        keep["mask"] = d["mask"]
    return yaml.safe_dump(keep, sort_keys=False)


def _describe(recipe) -> str:
    s = recipe.settings
    return "\n".join(
        [
            f"# resolved: data {recipe.data_source}",
            f"# resolved: translation.resolution {s.resolution}, channels {s.channels}; "
            f"{recipe.num_weights:,} generator weights per task (both directions)",
            f"# resolved: base fingerprint {recipe.base_fingerprint or 'none (trained networks)'}, "
            f"provenance {recipe.provenance['hash']}",
        ]
    )


def run_translation_command(args, spec: Spec) -> int:
    """What `supermask run SPEC` does when SPEC's stream is a translation stream."""
    from supermask.interface.translation_report import write_translation_report
    from supermask.recipes.translation import TranslationRecipe
    from supermask.runtime.session import ray_session
    from supermask.runtime.translation_job import run_translation_job

    recipe = TranslationRecipe.from_spec(spec)
    if args.check:
        print(translation_spec_yaml(spec) + _describe(recipe))
        return 0
    started = time.perf_counter()
    out_dir = args.out or Path(spec.run.out or Path("runs") / spec.name)
    s = recipe.settings
    print(
        f"supermask run: {spec.name}: {spec.stream.num_tasks} translation task(s) of {spec.stream.name} at "
        f"{s.resolution} px, {s.method} ({s.discriminator} discriminator, {s.steps} steps); output in {out_dir}",
        flush=True,
    )
    with ray_session(args.address, log_file=out_dir / "ray.log", quiet=not args.verbose):
        result = run_translation_job(recipe, out_dir, progress=not args.no_progress, relearn=args.relearn)
    results = write_translation_report(spec, recipe, result, out_dir)
    for t in results["tasks"]:
        for d, arrow in (("x_to_y", "X->Y"), ("y_to_x", "Y->X")):
            r, i = t[d], t[f"identity_{d}"]
            if r["detected_fraction"] is None:
                continue
            sym = "n/a" if r["symmetric_mean"] is None else f"{r['symmetric_mean']:.3f}"
            one = "n/a" if r["truth_to_output_mean"] is None else f"{r['truth_to_output_mean']:.3f}"
            print(
                f"  {t['task']:<20} {arrow} Hausdorff {sym} (one-sided truth->output {one}), polygon found in "
                f"{r['detected_fraction']:.0%}; identity {i['symmetric_mean']:.3f}"
            )
        print(
            f"  {t['task']:<20} cycle L1 X {t['cycle_l1_x']:.4f}, Y {t['cycle_l1_y']:.4f}; stored {t['array_bytes']:,} bytes"
        )
    probes = results.get("probes")
    if probes:
        share = "n/a" if probes["overhead"] is None else f"{100 * probes['overhead']:.1f}% of training"
        print(f"probes: {len(probes['tasks'])} networks in {out_dir / probes['file']} ({share})")
    print(f"time: {time.perf_counter() - started:.1f} s in all (training {results['learn_seconds']:.1f} s)")
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0
