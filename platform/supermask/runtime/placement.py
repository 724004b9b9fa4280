"""Where work runs: worker counts, the resources each Ray process asks for, and its torch device.

The one place that turns `run.use_gpu`, `run.num_workers` and `run.threads_per_worker` into Ray
resource requests and devices. A GPU asked for and not there is an error that names the machine,
never a silent CPU run holding a GPU reservation.
"""

from __future__ import annotations

import ray
import torch

from supermask.config.spec import RunSpec
from supermask.core.devices import DeviceUnavailable, pick_device


def check_cluster(run: RunSpec) -> None:
    """On the driver: refuse `use_gpu` on a Ray cluster with no GPU (unless num_workers asks an autoscaler)."""
    if not run.use_gpu or ray.cluster_resources().get("GPU", 0) > 0:
        return
    if run.num_workers is not None:
        return  # an autoscaling cluster adds GPU nodes for the workers it is asked for
    hosts = sorted({n.get("NodeManagerHostname", "?") for n in ray.nodes() if n.get("Alive")})
    raise DeviceUnavailable(
        f"run.use_gpu is true but the Ray cluster (nodes: {', '.join(hosts)}) has no GPU: set "
        "run.use_gpu=false, connect to a cluster with GPUs (--address), or on an autoscaling cluster set "
        "run.num_workers so that Ray starts GPU nodes for them"
    )


def num_workers(run: RunSpec, num_todo: int, parallel_tasks: bool = True) -> int:
    """Workers for a run: the spec's number, else one per GPU (use_gpu) or per CPU slot; at most one per task."""
    if run.num_workers:
        wanted = run.num_workers
    elif run.use_gpu:
        wanted = max(1, int(ray.cluster_resources().get("GPU", 0)))
    else:
        wanted = max(1, int(ray.cluster_resources().get("CPU", 1)) // run.threads_per_worker)
    if parallel_tasks:
        wanted = min(wanted, max(num_todo, 1))
    return wanted


def worker_resources(run: RunSpec) -> dict[str, float]:
    """Resources one worker or actor holds (Ray Train's resources_per_worker spelling)."""
    return {"CPU": run.threads_per_worker, **({"GPU": 1} if run.use_gpu else {})}


def actor_options(run: RunSpec) -> dict:
    """`.options(...)` for a Ray actor or task that computes with the base."""
    return {"num_cpus": run.threads_per_worker, **({"num_gpus": 1} if run.use_gpu else {})}


def process_device(run: RunSpec) -> str:
    """Set this process's threads and return its device; DeviceUnavailable (naming the host) if a GPU is missing."""
    torch.set_num_threads(run.threads_per_worker)
    return pick_device(run.use_gpu)


def train_worker_device(run: RunSpec) -> str:
    """The device of a Ray Train worker: the GPU Train gave it, checked to exist."""
    device = process_device(run)
    if device == "cpu":
        return device
    import ray.train.torch

    return str(ray.train.torch.get_device())


CPU_STACK_CAP = 16  # on a CPU a stack saves Python overhead, not arithmetic: keep blocks small
GPU_STACK_CAP = 256
MEMORY_SHARE = 0.5  # of the free memory a stack may plan to use


def stack_size(run: RunSpec, task_bytes: int, num_tasks: int, workers: int, free_bytes: int) -> int:
    """Most tasks per stacked block: `run.tasks_per_worker`, else what fits in half a worker's free device
    memory (`free_bytes`, as the workers report it) at `task_bytes` per task, no more than an even share of
    the tasks per worker."""
    if run.tasks_per_worker:
        return run.tasks_per_worker
    even = -(-num_tasks // max(workers, 1))
    if not run.use_gpu:  # the host's memory is shared by its CPU workers
        free_bytes //= max(1, min(workers, int(ray.cluster_resources().get("CPU", 1))))
    cap = GPU_STACK_CAP if run.use_gpu else CPU_STACK_CAP
    fits = max(1, int(MEMORY_SHARE * free_bytes) // task_bytes)
    return max(1, min(even, cap, fits))
