"""`pipeline/engine=ray`: LLM labelling as a Ray job over deterministic shards (pip install 'mtic[ray]').

Algorithm. The driver (this process) holds the records file's lock, recovers the records already there and plans
the shards (mtic/clara/shards.py: `shard_batches` x `batch_size` consecutive sessions each). If every session is
recorded, nothing starts (no Ray, no model). Otherwise `recipe.prepare()` runs here once (M_c is trained before any
worker exists), `num_workers` Ray actors are started, each building its labeller once from the recipe (its LLM
from the same `llm` config, on the worker's node and devices: `worker_gpus`), and the unfinished shards go to
whichever actor is free (ray.util.ActorPool). A worker labels a whole shard into the shard's file
(shards.label_shard). When every shard is done the driver merges them (shards.gather, in input order) and writes
the records, kept sessions and summary with pseudo_label.write_outputs; the shard folder is removed only after
that write (an atomic rename).

Guarantees. Deterministic: the shards depend only on (number of sessions, shard size), and each shard's batches
are the one-process run's batches, so the merged records file equals a one-process run's byte for byte, whatever
the number of workers or the order in which shards finish. Resumable and kill -9 safe: a shard file holds whole
lines only (a torn final line is cut on restart) and done sessions are skipped, so a dead actor (kill -9, lost
node) is restarted by Ray (`max_restarts`) and its shard retried (`max_task_retries`), resuming where it stopped;
a driver killed at any point resumes the same way on the next run, and sessions of a one-process run stopped
part-way are not labelled again.

Storage. Workers write the shard files and the LLM answer cache: on a multi-node cluster the pseudo-label
artifact directory must be one every node sees (a shared file system), and `llm.cache_file` a node-local path
(SQLite over NFS is not safe) or `llm.cache=false`. Secrets (the OpenAI-compatible server's key) are read from
each worker's environment, never shipped.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mtic.clara.engine import LabelerRecipe, LazyLabeler
from mtic.clara.pseudo_label import Outputs, check_inputs, records_lock, recover, run_figures, write_outputs
from mtic.clara.shards import Shard, gather, label_shard, plan_shards, remove_shards, shard_path, shard_size, shards_dir
from mtic.data.schema import Session

log = logging.getLogger("mtic")


@dataclass(frozen=True)
class ShardTask:
    """One shard's work as shipped to an actor: its sessions (input order), its file, what to skip."""

    shard: Shard
    sessions: tuple[Session, ...]
    path: Path
    batch_size: int
    skip: frozenset[str]


class ShardWorker:
    """A Ray actor: builds its labeller from the recipe on first use (the LLM loads here, once), labels shards."""

    def __init__(self, recipe: LabelerRecipe) -> None:
        self.labeler = LazyLabeler(recipe.build)

    def label(self, task: ShardTask) -> dict[str, Any]:
        return label_shard(task.sessions, self.labeler, task.path, task.batch_size, skip=task.skip)

    def llm_stats(self) -> dict[str, int] | None:
        return self.labeler.llm_stats()


class RayEngine:
    """Label over shards on a Ray cluster (see the module docstring).

    `address`: a running cluster (`ray://host:10001`, `host:6379`, `auto`); null = the cluster this process is
    already connected to, else the one named by RAY_ADDRESS, else a local one started here with `local_cpus` CPUs
    (null = all) and stopped at the end. `num_workers` actors, each reserving `worker_cpus` CPUs and `worker_gpus`
    GPUs; `shard_batches` labelling batches per shard (the unit of scheduling and retry); `max_restarts` restarts
    of a dead actor, each retrying its shard."""

    def __init__(self, address: str | None = None, num_workers: int = 2, worker_cpus: float = 1.0,
                 worker_gpus: float = 0.0, shard_batches: int = 16, max_restarts: int = 3,
                 local_cpus: int | None = None) -> None:
        if num_workers < 1 or shard_batches < 1 or max_restarts < 0:
            raise ValueError("pipeline.engine: num_workers and shard_batches must be >= 1, max_restarts >= 0")
        self.address, self.num_workers = address, int(num_workers)
        self.worker_cpus, self.worker_gpus = float(worker_cpus), float(worker_gpus)
        self.shard_batches, self.max_restarts, self.local_cpus = int(shard_batches), int(max_restarts), local_cpus

    def label(self, sessions: Sequence[Session], recipe: LabelerRecipe, out: str | Path, batch_size: int = 8,
              gold: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
              progress: bool = True, desc: str = "pseudo-labelling") -> dict[str, Any]:
        check_inputs(sessions, batch_size)
        paths = Outputs.of(out)
        paths.records.parent.mkdir(parents=True, exist_ok=True)
        size = shard_size(batch_size, self.shard_batches)
        folder = shards_dir(paths.records, size)
        started = time.time()
        with records_lock(paths.records):  # one driver per records file; workers lock their shard files
            done = recover(paths.records)
            shards = plan_shards(len(sessions), size)
            tasks = [ShardTask(s, tuple(sessions[s.start:s.stop]), shard_path(folder, s), batch_size,
                               frozenset(x.id for x in sessions[s.start:s.stop] if x.id in done)) for s in shards]
            tasks = [t for t in tasks if len(t.skip) < len(t.sessions)]
            have = set(done).union(*(recover(t.path) for t in tasks))  # before any worker: retries count as now
            resumed = sum(s.id in have for s in sessions)
            stats = None
            if tasks:
                recipe.prepare()
                stats = self._run(tasks, recipe, len(sessions), resumed, progress, desc)
            ordered = gather(sessions, [t.path for t in tasks], done)
            labelled = len(sessions) - resumed
            run = {**run_figures(labelled, len(sessions) - labelled, time.time() - started),
                   "engine": "ray", "shards": len(shards), "shard_size": size, "shards_run": len(tasks)}
            summary = write_outputs(paths, ordered, gold, settings, run=run)
            remove_shards(paths.records)
        summary["llm_stats"] = stats
        return summary

    def _run(self, tasks: Sequence[ShardTask], recipe: LabelerRecipe, total: int, initial: int, progress: bool,
             desc: str) -> dict[str, int] | None:
        """Label the shards on Ray actors; returns the workers' LLM counters, summed."""
        import ray
        from ray.util import ActorPool

        started_here = self._connect(ray)
        try:
            actor = ray.remote(ShardWorker).options(num_cpus=self.worker_cpus, num_gpus=self.worker_gpus,
                                                    max_restarts=self.max_restarts,
                                                    max_task_retries=self.max_restarts)
            actors = [actor.remote(recipe) for _ in range(min(self.num_workers, len(tasks)))]
            log.info("ray: %d shard(s) on %d worker(s)", len(tasks), len(actors))
            with tqdm(total=total, initial=initial, desc=f"{desc} (ray)", unit="session", disable=not progress,
                      dynamic_ncols=True) as bar:
                for run in ActorPool(actors).map_unordered(lambda a, task: a.label.remote(task), list(tasks)):
                    bar.update(run["labelled_now"])
            counts: Counter[str] = Counter()
            for snapshot in ray.get([a.llm_stats.remote() for a in actors]):
                counts.update(snapshot or {})
            for a in actors:
                ray.kill(a)
            return dict(sorted(counts.items())) or None
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Connect to (or start) the cluster; True when this call started the connection."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if self.address:
            options["address"] = self.address
        elif self.local_cpus and not os.environ.get("RAY_ADDRESS"):
            options["num_cpus"] = int(self.local_cpus)
        ray.init(**options)
        return True
