"""Where tasks run: `LocalBackend` (this process) or `RayBackend` (a Ray cluster).

Both take tasks with ``submit`` and hand them back with ``next_done`` as they finish. Ray is imported
only when a `RayBackend` is made.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from .tasks import generate_motion, render_stimulus


class LocalBackend:
    """Runs tasks in this process, one at a time, in submission order."""

    name = "local"

    def __init__(self, device: str | None = None):
        self.motion_device = device  # None: cuda when available (`EmageGenerator`'s default)
        self._queue: "OrderedDict[int, tuple]" = OrderedDict()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def share(self, data: bytes) -> bytes:
        """Data that many tasks take (speech): here simply the bytes themselves."""
        return data

    def submit(self, ticket: int, kind: str, fn: Callable, *args) -> None:
        self._queue[ticket] = (fn, args)

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> tuple[int, Any, BaseException | None]:
        ticket, (fn, args) = self._queue.popitem(last=False)
        try:
            return ticket, fn(*args), None
        except Exception as e:  # one failed item must not stop the others
            return ticket, None, e


class RayBackend:
    """Runs tasks on a Ray cluster: motions on GPUs where the cluster has them, renders on CPUs.

    Connects to ``address`` (or ``$RAY_ADDRESS``), else starts a local instance (stopped at the end).
    If Ray is already initialised in this process, that instance is used as it is.
    """

    name = "ray"

    def __init__(self, address: str | None = None, device: str | None = None, num_cpus: int | None = None,
                 threads: int = 1):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--backend ray needs Ray: pip install 'ray>=2.9'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                # The nodes need emage_core importable and local checkpoint folders at the same paths.
                ray.init(address=address, log_to_driver=False)
            else:
                # Workers start in their own folder: make this copy of emage_core importable there.
                code = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
            self.started = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self.motion_device = device or ("cuda" if gpus >= 1 else "cpu")
        # a CPU motion task reserves the CPUs its torch threads use (each task pins that count itself)
        cpus = max(1, min(threads, int(ray.cluster_resources().get("CPU", 1))))
        motion_options = {"num_gpus": 1} if gpus >= 1 and self.motion_device != "cpu" else {"num_cpus": cpus}
        self._remote = {"motion": ray.remote(generate_motion).options(**motion_options, max_retries=1),
                        "stimulus": ray.remote(render_stimulus).options(num_cpus=1, max_retries=1)}
        self._refs: dict[Any, int] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for ref in self._refs:  # interrupted: don't leave tasks running
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()

    def share(self, data: bytes):
        """Data that many tasks take (speech): stored once in the object store, passed by reference."""
        return self.ray.put(data)

    def submit(self, ticket: int, kind: str, fn: Callable, *args) -> None:
        self._refs[self._remote[kind].remote(*args)] = ticket

    def pending(self) -> int:
        return len(self._refs)

    def next_done(self) -> tuple[int, Any, BaseException | None]:
        (ref,), _ = self.ray.wait(list(self._refs), num_returns=1)
        ticket = self._refs.pop(ref)
        try:
            return ticket, self.ray.get(ref), None
        except self.ray.exceptions.RayTaskError as e:
            return ticket, None, e.cause if isinstance(e.cause, BaseException) else e
        except self.ray.exceptions.RayError as e:  # a worker died, a task was cancelled
            return ticket, None, e
