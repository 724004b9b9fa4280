"""What a run's method needs to keep per task, and forgetting: the numbers that set SupSup beside its baselines.

- masks: one packed mask per task (1 bit per weight); the base is rebuilt from its seed, never stored.
- weights: one trained network per task, each in its smallest format (dense, bitmap or CSR; fp32 or
  fp16).
- fine-tuning: ONE network serves every task, so its bytes are shared by all of them; the store also
  keeps the network as it stood after each task (to resume, and to measure forgetting), reported
  apart as `snapshot_bytes`.
"""

from __future__ import annotations

from supermask.recipes.results import JobResult


def memory_summary(
    result: JobResult, learn: str, mode: str | None, kept: str, shared: bool = False
) -> dict | None:
    """Bytes a run's method keeps for all its tasks and per task (None if no task has a stored size).

    `kept` says what is kept, in words; `shared`: one record (the last) serves every task.
    """
    sizes = [t.stored_bytes for t in result.tasks if t.stored_bytes is not None]
    if not sizes:
        return None
    total = sizes[-1] if shared else sum(sizes)
    summary = {
        "learn": learn,
        "mode": mode,
        "total_bytes": int(total),
        "bytes_per_task": total / len(result.tasks),
        "dense_network_bytes": 4 * result.num_weights,  # float32 values of every masked weight
        "kept": kept,
    }
    if shared:
        summary["snapshot_bytes"] = int(
            sum(sizes)
        )  # the network after every task, for resuming and forgetting
    return summary


def bytes_text(n: float) -> str:
    """A byte count for people: 1,234 B, 12.3 KB, 4.56 MB."""
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:,.0f} B"


def memory_line(memory: dict | None) -> str:
    if memory is None:
        return "memory: n/a"
    return (
        f"memory: {bytes_text(memory['bytes_per_task'])} per task, {bytes_text(memory['total_bytes'])} in all "
        f"({memory['kept']}; a dense float32 network is {bytes_text(memory['dense_network_bytes'])})"
    )


def forgetting_line(forgetting: dict | None) -> str | None:
    if not forgetting:
        return None
    return (
        f"fine-tuning forgets: average accuracy right after each task {forgetting['average_accuracy_after_own_task']:.4f}, "
        f"after the last task {forgetting['average_final_accuracy']:.4f}; average forgetting "
        f"{forgetting['average_forgetting']:.4f} (most {forgetting['max_forgetting']:.4f})"
    )


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def weights_table(result: JobResult, forgetting: bool) -> list[str]:
    """report.md rows for a run that trained weights: accuracy, sparsity, bytes (and forgetting)."""
    head = "| task | accuracy | sparsity | stored bytes | train acc | search s |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if forgetting:
        head += " right after own task | forgetting |"
        rule += " --- | --- |"
    rows = [head + " note |", rule + " --- |"]
    for t in result.tasks:
        note = f"failed: {t.error}" if t.error else ("from store" if t.skipped else "")
        row = (
            f"| {t.task_id} | {_fmt(t.accuracy)} | {_fmt(t.sparsity)} | {t.stored_bytes or ''} | "
            f"{_fmt(t.train_accuracy)} | {_fmt(t.search_seconds, 1)} |"
        )
        if forgetting:
            row += f" {_fmt(t.accuracy_after_own_task)} | {_fmt(t.forgetting)} |"
        rows.append(row + f" {note} |")
    return rows
