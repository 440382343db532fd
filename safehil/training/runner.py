"""Resumable grids of independent tasks: one JSON file per finished task, a fingerprint check
that refuses to mix settings in one run folder, `--shard i/n` selection, skip finished, merge.

Scripts with many independent tasks (active learning: one per strategy and seed; data
generation: one per grid setting) hand `run_grid` their config, their task names, the config
fields that do not define the experiment, and a task function. The run folder then holds

    config.json            the experiment (shard and merge reset: the same for every shard)
    <folder>/<task>.json   {'task', 'fingerprint', **the task function's result}, one per
                           finished task, written atomically when (and only when) it finishes

A rerun skips finished tasks and restarts a half-done one; shards share one folder (or are
copied into one) and merge into what an unsharded run gives. Every invocation checks the
finished files first, before it writes anything, so a run with other settings fails with one
clear line naming the file, the differing fields and the fix.

The runner never imports a script: what a task is, and how finished tasks become tables, stays
in the script.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from safehil.settings.run_folders import INVOCATION_FIELDS, check_run_location, empty_run_folder
from safehil.core.utils import InputError, atomic_write_json, log, parse_shard, read_json
from safehil.settings.cli import config_to_dict, save_config

TaskFn = Callable[[str, Any], dict]  # (task name, what `prepare` returned) -> the task's result


def experiment_fingerprint(cfg, non_experiment_fields: tuple[str, ...]) -> dict:
    """The config fields that determine a task's numbers: every field not in `non_experiment_fields`
    nor in run_folders.INVOCATION_FIELDS (where and how a run is invoked: device, out_dir, overwrite, ...)."""
    ignore = set(non_experiment_fields) | set(INVOCATION_FIELDS)
    return {k: v for k, v in config_to_dict(cfg).items() if k not in ignore}


def task_path(out: Path, folder: str, task: str) -> Path:
    """out/folder/task.json: where the finished task's result lives."""
    return Path(out) / folder / f"{task}.json"


def shard_tasks(tasks: list[str], shard: str) -> list[str]:
    """The slice of `tasks` for shard 'i/n': tasks i, i+n, i+2n, ... (every task in exactly one shard)."""
    i, n = parse_shard(shard)
    return tasks[i::n]


def missing_tasks(tasks: list[str], finished: dict[str, dict]) -> list[str]:
    """The tasks (in their order) that have no finished file yet."""
    return [t for t in tasks if t not in finished]


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_fingerprint(path: Path, saved: dict, fingerprint: dict) -> None:
    """Refuse (InputError) a task file made with other experiment settings than `fingerprint`."""
    recorded = saved["fingerprint"]
    differs = sorted(k for k in set(fingerprint) | set(recorded) if fingerprint.get(k) != recorded.get(k))
    if differs:
        values = "; ".join(f"{k}: {_show(recorded.get(k, '<absent>'))} in the file, "
                           f"{_show(fingerprint.get(k, '<absent>'))} now" for k in differs)
        raise InputError(f"{path}: was produced with other settings ({', '.join(differs)} differ from this run: "
                         f"{values}); pass --run_name NAME for a new run folder, rerun with the settings of "
                         f"{Path(path).parent.parent / 'config.json'}, or pass --overwrite True to replace the run")


def load_finished(out: Path, folder: str, fingerprint: dict, required_keys: tuple[str, ...] = ()) -> dict[str, dict]:
    """{task: saved file} for every task file in out/folder, each checked against `fingerprint`
    and for `required_keys`. Refuses (InputError) unreadable, foreign or mismatched files."""
    finished = {}
    for path in sorted((Path(out) / folder).glob("*.json")):
        try:
            saved = read_json(path)
        except ValueError as e:
            raise InputError(f"{e}; delete the file to rerun its task") from None
        for key in ("fingerprint", *required_keys):
            if not isinstance(saved, dict) or key not in saved:
                raise InputError(f"{path}: not a task file of this kind of run (lacks {key!r}); "
                                 f"move it out of {path.parent}")
        check_fingerprint(path, saved, fingerprint)
        finished[path.stem] = saved
    return finished


def _refuse_torchrun() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("error: the tasks are parallelised with --shard i/n (one process per GPU, e.g. "
                         "CUDA_VISIBLE_DEVICES=i ... --shard i/n), not with torchrun")


def run_grid(cfg, out: Path, tasks: list[str], task_fn: TaskFn, *, non_experiment_fields: tuple[str, ...],
             folder: str, prepare: Callable[[list[str]], Any] = lambda todo: None,
             required_keys: tuple[str, ...] = ()) -> dict[str, dict]:
    """Run this shard's unfinished tasks, then return {task: saved file} of every finished one.

    cfg: a frozen config dataclass with the fields `shard` ('i/n'), `merge` (bool: run
    nothing, only collect) and `cpu_threads` (0 = torch's default), besides the experiment's.
    tasks: every task name of the run, in a fixed order (the shard slices it; names are file stems).
    task_fn(task, shared) -> the task's result (a JSON-able dict), stored as
    out/folder/task.json = {'task', 'fingerprint', **result}.
    prepare(todo) -> shared: loads what the tasks share (data, device, caches), once, and only
    when there is something to run.
    non_experiment_fields: config fields that may differ between shards and resumed
    invocations (grid lists, paths, device, threads, shard, merge); every other field must match.
    required_keys: keys a task file must hold besides 'fingerprint' (else InputError).

    Order: refuse torchrun; check the run folder's place (`run_folders.check_run_location`, for a
    config with out_dir); with `overwrite` (--overwrite True) empty the folder, else check every
    finished file (before anything is written); write config.json; run the shard's tasks that
    have no file; collect every finished file (also those other shards wrote into the folder meanwhile).
    """
    _refuse_torchrun()
    out = Path(out)
    if hasattr(cfg, "out_dir"):
        check_run_location(cfg, out)
    if getattr(cfg, "overwrite", False) and out.is_dir():
        empty_run_folder(out)
    fingerprint = experiment_fingerprint(cfg, non_experiment_fields)
    finished = load_finished(out, folder, fingerprint, required_keys)
    same = {"shard": "0/1", "merge": False, **({"overwrite": False} if hasattr(cfg, "overwrite") else {})}
    save_config(replace(cfg, **same), out)  # the same for every shard and resumed invocation
    if cfg.merge:
        return finished
    todo = missing_tasks(shard_tasks(tasks, cfg.shard), finished)
    if finished:
        log(f"{out}: {len(finished)} task(s) finished before, skipped")
    if not todo:
        return finished
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.cpu_threads or threads)
    try:
        shared = prepare(todo)
        for task in todo:
            t0 = time.perf_counter()
            saved = {"task": task, "fingerprint": fingerprint, **task_fn(task, shared)}
            path = atomic_write_json(task_path(out, folder, task), saved)
            log(f"{task}: done in {time.perf_counter() - t0:.0f} s -> {path}")
    finally:
        torch.set_num_threads(threads)
    return load_finished(out, folder, fingerprint, required_keys)
