"""Starting, placing and reviving the shard actors of a store (of any kind).

Shard i is pinned to alive node i mod N, so shards spread over a cluster. Ray restarts a
crashed shard actor by itself; what it cannot do is move a pinned actor off a node that is
gone. `shard_action` is the policy for that, a plain function of what a shard's ping returned
or raised, so it is tested without a cluster; `revive_lost_shards` applies it.
"""

from __future__ import annotations

import enum
import logging
import time
from pathlib import Path

import ray
from ray.exceptions import (
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
    RayError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supermask.runtime.shard_actor import (
    NAMESPACE,
    ShardActor,
    ShardFiles,
    ShardUnavailableError,
    wait_shards,
)

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = 60.0  # how long revive_lost_shards waits for each shard to answer
START_WAIT_S = (
    60.0  # how long to keep starting a store's actors (a closed store's names take a moment to free)
)


class ShardAction(enum.Enum):
    """What to do about one shard, given how its ping ended."""

    REVIVE = "revive"  # gone for good with its node: start a new actor for its file on a live node
    WAIT = "wait"  # alive, restarting or slow: leave it to Ray, which restarts crashed actors
    RAISE = "raise"  # ended on purpose (its store was closed) or failing in itself: never bring it back


def shard_action(outcome: object) -> ShardAction:
    """The policy: a shard's ping result (its pid) or the exception the ping raised -> what to do.

    Ray reports a lost node either as "unschedulable" or as an actor death whose message is not
    ray.kill's. An actor ended with ray.kill (closing its store) stays ended, so a copy of a closed
    store held elsewhere cannot bring its shards back behind the owner's back.
    """
    if not isinstance(outcome, BaseException):
        return ShardAction.WAIT
    if isinstance(outcome, ActorUnschedulableError):
        return ShardAction.REVIVE
    if isinstance(outcome, ActorUnavailableError | GetTimeoutError):
        return ShardAction.WAIT
    if isinstance(outcome, RayActorError):
        return ShardAction.RAISE if "ray.kill" in str(outcome) else ShardAction.REVIVE
    return ShardAction.RAISE


def default_actor_options(overrides: dict | None = None) -> dict:
    """Ray options of a shard actor: no CPU, restarted forever, its calls retried after a crash."""
    return {
        "num_cpus": 0,  # shards wait on disks, not CPUs
        "max_restarts": -1,
        # Safe because every shard method can be re-run after a crash (put is idempotent).
        "max_task_retries": -1,
        **(overrides or {}),
    }


def spread_over_nodes(shard: int):
    """Shard i goes to alive node i mod N (round robin over the nodes alive now).

    Ray's "SPREAD" (and soft node affinity) is best effort and often packs zero-CPU actors onto one
    node. Pinning is exact, but a pinned actor cannot restart on another node when its node is
    lost: `revive_lost_shards` then starts a fresh actor for that shard on a live node, which reads
    the same file (shared storage).
    """
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if not nodes:
        return "SPREAD"
    return NodeAffinitySchedulingStrategy(node_id=nodes[shard % len(nodes)], soft=False)


def start_shard_actors(
    root: Path, files: ShardFiles, num_shards: int, options: dict, only: list[int] | None = None
) -> list:
    """Start (or join) the shard actors (all, or those in `only`) and wait until each has its file open.

    The list has one slot per shard; slots not in `only` are None.
    """
    actors: list = [None] * num_shards
    wanted = list(range(num_shards)) if only is None else list(only)
    deadline = time.monotonic() + START_WAIT_S
    while True:
        todo = [i for i in wanted if actors[i] is None]
        if not todo:
            return actors
        if time.monotonic() > deadline:
            raise ShardUnavailableError(f"could not start the shard actors of {root}; is Ray healthy?")
        started = {
            i: ShardActor.options(
                name=files.actor_name(root, i),
                namespace=NAMESPACE,
                get_if_exists=True,
                **{"scheduling_strategy": spread_over_nodes(i), **options},
            ).remote(files, str(files.path_of(root, i)))
            for i in todo
        }
        pings = {i: a.ping.remote() for i, a in started.items()}
        try:
            wait_shards(list(pings.values()), f"opening the shard files of {root}")
        except ShardUnavailableError:  # a closed store's actor whose name is not released yet
            time.sleep(0.2)
        except Exception:
            # Leave no shard behind holding its file: the next open starts fresh ones.
            for a in [*started.values(), *(a for a in actors if a is not None)]:
                ray.kill(a, no_restart=True)
            raise
        for i, ref in pings.items():
            try:
                ray.get(ref)  # at once: every ping has finished
                actors[i] = started[i]
            except RayError:
                pass  # started afresh (or its error raised) on the next round


def ping_outcomes(actors: list, timeout_s: float = PING_TIMEOUT_S) -> list[object]:
    """Each shard's pid, or the exception its ping raised (GetTimeoutError if it did not answer in time)."""
    refs = [a.ping.remote() for a in actors]
    deadline = time.monotonic() + timeout_s
    out: list[object] = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
        except Exception as e:  # the outcome is what the policy judges
            out.append(e)
    return out


def revive_lost_shards(root: Path, files: ShardFiles, actors: list, options: dict) -> list[int]:
    """Replace, in `actors`, the shards whose actor is gone for good (see `shard_action`); their numbers."""
    lost = [i for i, o in enumerate(ping_outcomes(actors)) if shard_action(o) is ShardAction.REVIVE]
    if not lost:
        return []
    logger.warning("shard(s) %s of %s lost their actor (node gone?); starting new ones", lost, root)
    for i in lost:
        try:
            ray.kill(actors[i], no_restart=True)
        except Exception:  # already dead
            pass
    fresh = start_shard_actors(root, files, len(actors), options, only=lost)
    for i in lost:
        actors[i] = fresh[i]
    return lost


def end_actors(actors: list, names: list[str]) -> None:
    """Kill named actors for good, and wait (up to 10 s) until their names are free, so that the next
    open of the same store creates fresh actors rather than finding dying ones."""
    for a in actors:
        ray.kill(a, no_restart=True)
    names = list(names)
    deadline = time.monotonic() + 10.0
    while names and time.monotonic() < deadline:
        try:
            ray.get_actor(names[0], namespace=NAMESPACE)
            time.sleep(0.05)
        except ValueError:
            names.pop(0)
