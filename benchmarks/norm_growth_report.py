"""The Markdown report and PNG plots of benchmarks/norm_growth.py (results dict -> docs/norm_growth/)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FITS = ("t", "sqrt_t", "t^1/4")
GROWS = 1.05  # a norm "grows" when it ends at least 5% above where it started


def save(fig, path: Path) -> None:
    """Write a figure as a small PNG: 80 dpi, quantized to a 96-colour palette."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(96).save(path, optimize=True)


def series(run: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(h["step"], h[key]) for h in run["history"] if h.get(key) is not None]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float64)


def best_fit(run: dict) -> str:
    return max(FITS, key=lambda k: run["fits"][k]["r2"] if run["fits"][k]["r2"] is not None else -1)


def factor(run: dict) -> str:
    r = run["run"]
    if r["d_model"] != 32:
        return f"width {r['d_model']}"
    if r["language"] != "dyck1":
        return f"language {r['language']}"
    return f"label noise {r['label_noise']:g}"


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def plot_norms(runs: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run in enumerate(runs):
        color = plt.cm.tab20(i % 20)
        steps, norms = series(run, "norm")
        ax.plot(steps, norms / norms[0], color=color, label=run["name"])
        fit = run["fits"]["sqrt_t"]
        ax.plot(
            steps, (fit["intercept"] + fit["slope"] * np.sqrt(steps)) / norms[0], "--", color=color, lw=0.8
        )
    ax.set(xlabel="step", ylabel="norm / initial norm", title=title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save(fig, path)


OPTIMIZERS = ("sgd", "adam", "adamw")


def by_optimizer(runs: list[dict]) -> dict[str, list[dict]]:
    return {o: [r for r in runs if r["run"]["optimizer"] == o] for o in OPTIMIZERS}


def grid_values(runs: list[dict], key: str) -> list:
    return sorted({r["run"][key] for r in runs})


def plot_grid(runs: list[dict], path: Path, keys: tuple[str, ...], ylabels: tuple[str, ...]) -> None:
    """One column per optimizer, one row per key: colour is the learning rate, line style the weight decay."""
    groups = by_optimizer(runs)
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 3.4 * len(keys)), squeeze=False)
    styles = ("-", "--", ":", "-.")
    for col, (opt, group) in enumerate(groups.items()):
        lrs, wds = grid_values(group, "lr"), grid_values(group, "weight_decay")
        for run in group:
            color = plt.cm.viridis(lrs.index(run["run"]["lr"]) / max(len(lrs) - 1, 1) * 0.85)
            style = styles[wds.index(run["run"]["weight_decay"]) % len(styles)]
            label = f"lr {run['run']['lr']:g}, wd {run['run']['weight_decay']:g}"
            for row, key in enumerate(keys):
                steps, values = series(run, key)
                if key == "norm" and len(values):
                    values = values / values[0]
                axes[row][col].plot(steps, values, style, color=color, label=label, lw=1.2)
        for row, ylabel in enumerate(ylabels):
            axes[row][col].set(xlabel="step", ylabel=ylabel, title=opt if row == 0 else None)
        if group:
            axes[0][col].legend(fontsize=6, ncol=1)
    fig.tight_layout()
    save(fig, path)


def representatives(runs: list[dict]) -> list[dict]:
    """One run per optimizer: its middle learning rate with its smallest weight decay."""
    out = []
    for group in by_optimizer(runs).values():
        if group:
            lrs, wds = grid_values(group, "lr"), grid_values(group, "weight_decay")
            lr, wd = lrs[len(lrs) // 2], wds[0]
            out += [r for r in group if r["run"]["lr"] == lr and r["run"]["weight_decay"] == wd][:1]
    return out


def grid_table(runs: list[dict]) -> list[str]:
    """Per optimizer, a learning rate x weight decay table: norm ratio (best fit), saturation cosine end."""
    lines = []
    for opt, group in by_optimizer(runs).items():
        if not group:
            continue
        lrs, wds = grid_values(group, "lr"), grid_values(group, "weight_decay")
        lines += [
            f"**{opt}**: end/initial norm (best fit), saturation cosine at c = 1000 start -> end, "
            "train accuracy",
            "",
            "| lr \\ weight decay | " + " | ".join(f"{wd:g}" for wd in wds) + " |",
            "| --- |" + " --- |" * len(wds),
        ]
        for lr in lrs:
            cells = []
            for wd in wds:
                run = next(
                    (r for r in group if r["run"]["lr"] == lr and r["run"]["weight_decay"] == wd), None
                )
                cells.append(cell(run))
            lines.append(f"| {lr:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def cell(run: dict | None) -> str:
    """One grid cell: norm ratio (best fit), saturation start -> end, train accuracy; or where it diverged."""
    if run is None:
        return ""
    if run.get("diverged"):
        return f"diverged after step {run['diverged']['last_finite_step']}"
    return (
        f"{fmt(run['levelling']['growth_ratio'])}x ({best_fit(run)}), {saturation_text(run, 'start')} -> "
        f"{saturation_text(run, 'end')}, {fmt(run['train_accuracy'], 2)}"
    )


def saturation_text(run: dict, end: str) -> str:
    """The saturation cosine at one end of a run, or 'overflow' where even float64 overflowed."""
    sat = run[f"saturation_{end}"]
    if sat.get("saturation_overflow"):
        return "overflow"
    return fmt(sat.get("saturation_cosine"))


def plot_claim(runs: list[dict], correlation: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {"sgd": "o", "adam": "s", "adamw": "^"}
    kinds = sorted({factor(r).split()[0] + " " + factor(r).split()[1] for r in runs})
    colors = {k: plt.cm.tab10(i) for i, k in enumerate(kinds)}
    for run in runs:
        f = factor(run)
        kind = " ".join(f.split()[:2])
        for ax, key in zip(axes, ("growth_ratio", "plateau_norm"), strict=True):
            ax.scatter(
                run["train_accuracy"],
                run["levelling"][key],
                color=colors[kind],
                marker=markers[run["run"]["optimizer"]],
            )
            ax.annotate(
                f"{f.split()[-1]} {run['run']['optimizer']}",
                (run["train_accuracy"], run["levelling"][key]),
                fontsize=6,
            )
    rho = correlation["growth_ratio"]["spearman"]
    axes[0].set(
        xlabel="training accuracy reached",
        ylabel="norm at the end / initial norm",
        title=f"Spearman rho = {fmt(rho, 2)}",
    )
    axes[1].set(xlabel="training accuracy reached", ylabel="norm at the end (mean of last 10% of probes)")
    for kind, color in colors.items():
        axes[1].scatter([], [], color=color, label=kind)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def plot_sweep(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        color = plt.cm.tab20(i % 20)
        for key, style in (("sweep_start", ":"), ("sweep_end", "-")):
            cs = sorted(float(k.split("@")[1]) for k in run[key] if k.startswith("sweep_cosine@"))
            ax.plot(
                cs,
                [run[key][f"sweep_cosine@{c:g}"] for c in cs],
                style,
                color=color,
                label=f"{run['name']} ({key[6:]})",
            )
    ax.set(xlabel="c", ylabel="hidden-state cosine with the unscaled network", title="saturation sweep")
    ax.legend(fontsize=5)
    fig.tight_layout()
    save(fig, path)


def plot_census(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    bars = (
        ("census_start_unscaled", "start, c = 1"),
        ("census_end_unscaled", "end, c = 1"),
        ("census_end", "end, c = 1000"),
    )
    labels = [
        f"{run['name'][:30]} L{li}H{hi}"
        for run in runs
        for li, layer in enumerate(run["census_end"]["mean_count"])
        for hi in range(len(layer))
    ]
    pos = np.arange(len(labels))
    for i, (key, label) in enumerate(bars):
        values = [c for run in runs for layer in run[key]["mean_count"] for c in layer]
        ax.bar(pos + (i - 1) * 0.27, values, 0.27, label=label)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks(pos, labels, rotation=90, fontsize=5)
    ax.set(ylabel="keys with weight > 1e-5 per real query", title="attention census per head")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def plot_masks(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for i, run in enumerate(runs):
        color = plt.cm.tab10(i)
        for ax, key in zip(axes, ("norm", "churn", "saturation_cosine"), strict=True):
            steps, values = series(run, key)
            ax.plot(steps, values, color=color, label=run["name"])
    axes[0].set(xlabel="step", ylabel="score norm")
    axes[1].set(xlabel="step", ylabel="mask churn since the last probe", yscale="log")
    axes[2].set(xlabel="step", ylabel="saturation cosine of W*M, c = 1000")
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    save(fig, path)


def label(run: dict) -> str:
    """The run's name, with where it diverged if it did."""
    d = run.get("diverged")
    return run["name"] + (f" (diverged after step {d['last_finite_step']})" if d else "")


def finite(runs: list[dict]) -> list[dict]:
    """The runs that did not diverge (a diverged run's end state is not a trained network)."""
    return [r for r in runs if not r.get("diverged")]


def run_row(run: dict) -> str:
    lv, fits = run["levelling"], run["fits"]
    sat0, sat1 = run["saturation_start"], run["saturation_end"]
    return (
        f"| {label(run)} | {fmt(lv['initial_norm'], 2)} -> {fmt(lv['plateau_norm'], 2)} ({fmt(lv['growth_ratio'])}x) "
        f"| {best_fit(run)} | {' / '.join(fmt(fits[k]['r2']) for k in FITS)} "
        f"| {saturation_text(run, 'start')} -> {saturation_text(run, 'end')} "
        f"| {fmt(sat0.get('saturation_agreement'))} -> {fmt(sat1.get('saturation_agreement'))} "
        f"| {fmt(run['train_accuracy'])} | {fmt(run['test_accuracy_in_length'])} / {fmt(run['test_accuracy_longer'])} |"
    )


RUN_HEADER = (
    "| run | norm start -> end (mean of last 10% of probes; ratio) | best fit | R^2 t / sqrt(t) / t^(1/4) | saturation cosine start -> end "
    "| argmax agreement start -> end | train acc | test acc (<= 16 / longer) |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def census_summary(census: dict) -> str:
    counts = [c for layer in census["mean_count"] for c in layer]
    hard = sum(c <= 1.5 for c in counts)
    spread = sum(c >= 0.5 * census["mean_allowed"] for c in counts)
    return f"{hard}/{len(counts)} argmax-like, {spread}/{len(counts)} mean-like; per head {', '.join(fmt(c, 1) for c in counts)} (of {fmt(census['mean_allowed'], 1)} allowed)"


def names(runs: list[dict], most: int = 6) -> str:
    """The runs' names, or their count where there are many."""
    if not runs:
        return "none"
    return ", ".join(r["name"] for r in runs) if len(runs) <= most else "see the tables"


def norm_verdict(runs: list[dict]) -> tuple[str, str]:
    """(held / did not hold, the evidence) for 'the norm grows, roughly as sqrt(t)'."""
    grew = [r for r in runs if r["levelling"]["growth_ratio"] >= GROWS]
    sqrt_best = [r for r in grew if best_fit(r) == "sqrt_t"]
    shrank = [r for r in runs if r["levelling"]["growth_ratio"] < 1.0]
    largest = max(runs, key=lambda r: r["levelling"]["growth_ratio"])
    held = bool(grew) and len(grew) >= len(runs) / 2 and len(sqrt_best) >= len(grew) / 2
    per_opt = "; ".join(
        f"{opt}: grew in {sum(r in grew for r in group)} of {len(group)}, shrank in {sum(r in shrank for r in group)}"
        for opt, group in by_optimizer(runs).items()
        if group
    )
    return (
        "held" if held else "did not hold",
        f"the norm grew by at least {round(100 * (GROWS - 1))}% in {len(grew)} of {len(runs)} runs "
        f"({names(grew)}); sqrt(t) was the best of the three fits in "
        f"{len(sqrt_best)} of those; the largest growth was {fmt(largest['levelling']['growth_ratio'])}x "
        f"({largest['name']}); the norm shrank in {len(shrank)} run(s) ({names(shrank)}); by optimizer: {per_opt}",
    )


def saturation_verdict(runs: list[dict], what: str) -> tuple[str, str]:
    """(held / did not hold, the evidence) for '`what` move toward saturated networks'."""
    measured = [
        r for r in runs
        if r["saturation_end"].get("saturation_cosine") is not None
        and r["saturation_start"].get("saturation_cosine") is not None
    ]  # fmt: skip
    rise = [
        r["saturation_end"]["saturation_cosine"] - r["saturation_start"]["saturation_cosine"]
        for r in measured
    ]
    up, down = sum(d > 0.01 for d in rise), sum(d < -0.01 for d in rise)
    overflow = len(runs) - len(measured)
    return (
        "held" if up > len(runs) / 2 else "did not hold",
        f"the saturation cosine at c = 1000 rose by more than 0.01 in {up} of {len(runs)} {what} and fell in "
        f"{down} (median change {fmt(float(np.median(rise)) if rise else None)})"
        + (f"; {overflow} overflowed float64 at c = 1000 (no cosine)" if overflow else ""),
    )


def claim_verdict(claim: list[dict], corr: dict) -> tuple[str, str]:
    """(held / did not hold, the evidence) for the first-version claim."""
    levelled = sum(r["levelling"]["levelled_off"] for r in claim)
    rho = corr["growth_ratio"]["spearman"]
    supported = rho is not None and rho > 0.5 and levelled >= corr["n"] / 2
    return (
        "held" if supported else "did not hold",
        f"Spearman rho between the training accuracy reached and the end/initial norm ratio is {fmt(rho, 2)} "
        f"(Pearson {fmt(corr['growth_ratio']['pearson'], 2)}; with the absolute end norm rho = "
        f"{fmt(corr['plateau_norm']['spearman'], 2)}) over {corr['n']} runs, but the norm had levelled off "
        f"(moved > 1%, under 5% of that in the last quarter of the steps) in only {levelled} of them: "
        + (
            "the claim needs a plateau, and where there is none the end norm is not the threshold it speaks of"
            if levelled < corr["n"] / 2
            else "most runs reached a plateau"
        )
        + " (held: rho > 0.5 and most runs levelled off)",
    )


def write_report(results: dict, docs: Path) -> None:
    """Write report.md and its PNGs under `docs`."""
    docs.mkdir(parents=True, exist_ok=True)
    opt, claim, masks = results["optimizers"], results["claim"], results["masks"]
    plot_grid(opt, docs / "norm_vs_step.png", ("norm",), ("norm / initial norm",))
    plot_grid(
        opt,
        docs / "saturation_vs_step.png",
        ("saturation_cosine", "saturation_agreement"),
        ("hidden-state cosine, c = 1000", "output argmax agreement, c = 1000"),
    )
    plot_claim(claim, results["claim_correlation"], docs / "claim.png")
    plot_norms(claim, docs / "claim_norms.png", "claim runs: norm (dashed: sqrt(t) fit)")
    shown = representatives(opt) + masks[:2]
    plot_sweep(shown, docs / "sweep.png")
    plot_census(shown, docs / "census.png")
    plot_masks(masks, docs / "masks.png")
    recomputed = [
        (r["name"], sum(bool(h.get("saturation_float64")) for h in r["history"]),
         sum(bool(h.get("saturation_overflow")) for h in r["history"]))
        for r in opt + claim + masks
    ]  # fmt: skip
    recomputed = [x for x in recomputed if x[1]]
    corr = results["claim_correlation"]
    cfg = results["config"]
    machine = results["machine"]
    gone = [r for r in opt + claim if r.get("diverged")]
    gone_note = f": {', '.join(dict.fromkeys(label(r) for r in gone))}" if gone else ""
    verdicts = [
        (
            "GD grows the parameter norm, roughly as sqrt(t) (trained; SGD, Adam, AdamW)",
            norm_verdict(finite(opt)),
        ),
        (
            "First version: the norm levels off at a threshold that rises with the training accuracy reached",
            claim_verdict(finite(claim), corr),
        ),
        (
            "Training moves transformers toward saturated networks",
            saturation_verdict(finite(opt), "trained runs"),
        ),
        (
            "(not in the sources) Mask search over a frozen random transformer moves the masked network toward saturation",
            saturation_verdict(masks, "mask searches"),
        ),
    ]
    gpu = (
        f"on {machine['device_name']}"
        if machine.get("device", "cpu") != "cpu"
        else "CPU only; no GPU row: no GPU was available to this run (`--device cuda` runs every model on a GPU)"
    )
    lines = [
        "# Norm growth and saturation of tiny transformers on formal languages",
        "",
        f"Command: `PYTHONPATH=platform nice -n 15 .venv/bin/python {results['command']}` ({results['setting']} "
        f"setting, {results['seconds'] / 60:.1f} min wall on this 2-core {machine['cpu']} machine shared with other "
        f"work, {results['workers']} process(es) of one torch thread, Python {machine['python']}, torch "
        f"{machine['torch']}; {gpu}).",
        "",
        f"Every run: a causal transformer (2 layers, 2 heads, d_model 32 unless stated, last-token pooling), "
        f"{cfg['steps']} steps of batch {cfg['batch_size']} on {cfg['train_size']} training strings of length 2-16 "
        f"(membership: is the string in the language), tested on {cfg['test_size']} strings of length 2-32. "
        f"Probes every {cfg['probe_every']} steps on a fixed batch of {cfg['probe_batch']} training strings: the norm of "
        "every trained non-scalar tensor (weights, embeddings, LayerNorm gains and biases; for masks the scores), and "
        "saturation: every trained tensor (for masks, the effective weights W * M) multiplied by c = 1000 under "
        "no-grad, the residual stream after each block compared with the unscaled network by per-token cosine over "
        "real tokens, and the outputs by argmax agreement. Trained transformers use the script's own loop "
        "(`LocalTrainedRun`: torch.optim over every parameter, from the base's kaiming_normal draw; SGD is plain, no "
        "momentum; learning rates are constant), since the platform's trained-weight methods are not part of it yet. "
        "Mask searches are the platform's own: one `StackedSearch` per method over a stack of languages, probed by "
        "`SearchProbe` as `supermask run` probes every search.",
        "",
        "## Verdicts",
        "",
        "| claim | verdict | evidence |",
        "| --- | --- | --- |",
        *[f"| {claim_text} | **{verdict}** | {evidence} |" for claim_text, (verdict, evidence) in verdicts],
        "",
        "Trained runs that diverged (a parameter became inf or NaN; the run stopped there) are left out of the "
        f"verdicts and the correlations{gone_note}." if gone else "No trained run diverged.",
        "",
        "## Norm against step: optimizers",
        "",
        "Learning rate x weight decay per optimizer (constant learning rates; SGD and Adam: L2 weight decay "
        "added to the gradient, AdamW: decoupled). Colour: learning rate; line style: weight decay.",
        "",
        "![norm](norm_vs_step.png)",
        "",
        *grid_table(opt),
        RUN_HEADER,
        *[run_row(r) for r in opt],
        "",
        "## Saturation against step",
        "",
        "![saturation](saturation_vs_step.png)",
        "",
        (
            "The scaled pass at c = 1000 overflowed float32 (inf or NaN) in "
            + "; ".join(f"{n}: {k} probe(s)" for n, k, _ in recomputed)
            + "; those probes were computed again in float64, where "
            + f"{sum(o for _, _, o in recomputed)} overflowed too (reported as overflow, not as a cosine)."
            if recomputed
            else "No scaled pass at c = 1000 overflowed float32."
        ),
        "",
        "Sweep of c from 1 to 10 at the start (dotted) and the end (solid):",
        "",
        "![sweep](sweep.png)",
        "",
        "## The first-version claim: norm against the training accuracy reached",
        "",
        "Achievable training accuracy varied by label noise on Dyck-1 (flipped training labels), by the language "
        "(a^n b^n, Dyck-1/2, a^n b^n c^n, counting, parity) and by the model width (Dyck-2). Training accuracy is "
        "measured on the training labels as given (noisy ones included).",
        "",
        "![claim](claim.png)",
        "",
        "![claim norms](claim_norms.png)",
        "",
        "| run | factor | train acc (clean labels) | initial norm | end norm | ratio | levelled off | best fit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {label(r)} | {factor(r)} | {fmt(r['train_accuracy'])} ({fmt(r['train_accuracy_clean'])}) "
            f"| {fmt(r['levelling']['initial_norm'], 2)} | {fmt(r['levelling']['plateau_norm'], 2)} "
            f"| {fmt(r['levelling']['growth_ratio'])} | {'yes' if r['levelling']['levelled_off'] else 'no'} | {best_fit(r)} |"
            for r in claim
        ],
        "",
        "| correlation with training accuracy | Pearson | Spearman |",
        "| --- | --- | --- |",
        *[f"| {k} | {fmt(corr[k]['pearson'], 2)} | {fmt(corr[k]['spearman'], 2)} |" for k in ("plateau_norm", "growth_ratio", "growth")],
        *[
            f"| growth_ratio, {name} only (n = {c['n']}) | {fmt(c['growth_ratio']['pearson'], 2)} | {fmt(c['growth_ratio']['spearman'], 2)} |"
            for name, c in results["claim_correlation_by_optimizer"].items()
        ],
        "",
        "## Attention census (keys with weight > 1e-5 per head, over real query tokens)",
        "",
        "One trained run per optimizer (its middle learning rate, smallest weight decay) and the first mask searches; "
        "every run's census is in the JSON.",
        "",
        "![census](census.png)",
        "",
        "| run | start, c = 1000 | end, c = 1000 | start, unscaled (c = 1) | end, unscaled (c = 1) |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {r['name']} | {census_summary(r['census_start'])} | {census_summary(r['census_end'])} "
            f"| {census_summary(r['census_start_unscaled'])} | {census_summary(r['census_end_unscaled'])} |"
            for r in shown
        ],
        "",
        "Argmax-like: at most 1.5 keys on average; mean-like: at least half of the keys a query may see. Under "
        "saturation a head can only be mean-like where keys tie exactly (identical key vectors); with learned "
        "positions no two keys are identical, so c = 1000 leaves argmax heads almost everywhere, trained or not. "
        "The unscaled column shows how far the network as it computes is from that.",
        "",
        "## Supermask search over the frozen random transformer",
        "",
        "Scores of every masked layer (embeddings, attention, MLP, head) searched with top-k (density 0.5, SGD with "
        "momentum 0.9, lr 0.1), constant learning rate, by the platform's "
        "`StackedSearch` over one stack of tasks (Dyck-1, Dyck-2, a^n b^n, parity) on a frozen random base "
        "(signed-constant init); the base's LayerNorms and zero biases stay frozen and unscaled. Sequences keep their "
        "padding (33 positions) and the key padding mask hides it. The norm is the scores' norm; churn the fraction "
        "of mask bits flipped between probes.",
        "",
        "![masks](masks.png)",
        "",
        RUN_HEADER,
        *[run_row(r) for r in masks],
        "",
        "## Probe overhead",
        "",
        "| kind | probe every | step (ms) | probe (ms) | overhead |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {o['kind']} | {o['every']:.0f} | {1e3 * o['step_seconds']:.1f} | {1e3 * o['probe_seconds']:.1f} | {100 * o['overhead']:.1f}% |"
            for o in results["overhead"]
        ],
        "",
        f"A probe (norms, direction, alignment, churn, and saturation: two no-grad forward passes on {cfg['probe_batch']} "
        f"strings per task) against a training step (forward and backward on {cfg['batch_size']} per task). The local "
        "loop's rows time both in one loop; the mask rows are the platform's own clock (SearchProbe time over the "
        "rest of the search's time). A tiny model's step is cheap, so a probe costs about as much as a step; "
        "`benchmarks/probe_overhead.py` measures the cost on the specs `supermask run` learns.",
        "",
    ]  # fmt: skip
    (docs / "report.md").write_text("\n".join(lines))
