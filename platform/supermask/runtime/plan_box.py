"""The actor a starting Ray Train run's workers wait in for their plan (it imports nothing heavy)."""

from __future__ import annotations

import asyncio

import ray


@ray.remote(num_cpus=0)
class PlanBox:
    """Where the workers of a Train run that is starting report their free memory and wait for their plan.

    Ray Train takes seconds to start its workers; the driver opens the store and plans the blocks
    meanwhile, and sizes the blocks from the memory the workers report. The box keeps the plan as an
    object reference it never opens: unpickling a plan imports torch and the package, seconds of a
    small machine's time in a process that needs neither.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.free: dict[int, int] = {}
        self._reported = asyncio.Event()
        self._planned = asyncio.Event()
        self._plan: list[ray.ObjectRef] = []  # [plan] or [] (nothing to do), never resolved here

    async def report(self, rank: int, free_bytes: int) -> None:
        self.free[rank] = free_bytes
        if len(self.free) >= self.workers:
            self._reported.set()

    async def free_bytes(self) -> list[int]:
        await self._reported.wait()
        return [self.free[r] for r in sorted(self.free)]

    async def set_plan(self, plan: list[ray.ObjectRef]) -> None:
        self._plan = plan
        self._planned.set()

    async def plan(self) -> list[ray.ObjectRef]:
        await self._planned.wait()
        return self._plan
