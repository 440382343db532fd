"""runner.py on a trivial task function (no training): finished tasks are skipped, a run with
other settings is refused naming the field, shards partition the tasks and merge into the
result of an unsharded run, config.json is written only after the check."""
import json
import shutil
from dataclasses import dataclass, replace

import pytest

from safehil.training import runner
from safehil.core.utils import InputError


@dataclass(frozen=True)
class ToyConfig:
    """A grid config: `scale` defines the experiment, the rest may differ between invocations."""
    scale: int = 3
    offset: int = 0
    values: tuple[int, ...] = (1, 2, 3, 4, 5)
    cpu_threads: int = 0
    shard: str = "0/1"
    merge: bool = False


NON_EXPERIMENT = ("values", "cpu_threads", "shard", "merge")


def tasks_of(cfg):
    return [f"v{v}" for v in cfg.values]


def run(cfg, out, calls=None, die_at=None):
    """run_grid with a task that multiplies its value by `scale`; records the tasks it ran in `calls`."""
    calls = [] if calls is None else calls

    def task_fn(task, shared):
        assert shared == {"prepared": True}
        if task == die_at:
            raise KeyboardInterrupt
        calls.append(task)
        return {"value": int(task[1:]) * cfg.scale + cfg.offset}
    return runner.run_grid(cfg, out, tasks_of(cfg), task_fn, non_experiment_fields=NON_EXPERIMENT, folder="tasks",
                           prepare=lambda todo: {"prepared": True})


def test_each_finished_task_leaves_one_file_with_its_fingerprint(tmp_path):
    finished = run(ToyConfig(), tmp_path)
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == [f"v{v}.json" for v in range(1, 6)]
    saved = json.loads((tmp_path / "tasks" / "v4.json").read_text())
    assert saved == {"task": "v4", "fingerprint": {"scale": 3, "offset": 0}, "value": 12}
    assert finished["v4"] == saved and len(finished) == 5
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["shard"] == "0/1" and config["merge"] is False and config["scale"] == 3


def test_runner_skips_finished_tasks(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run(ToyConfig(), tmp_path, calls, die_at="v3")
    assert calls == ["v1", "v2"] and not (tmp_path / "tasks" / "v3.json").exists()
    before = (tmp_path / "tasks" / "v1.json").stat().st_mtime_ns
    calls.clear()
    finished = run(ToyConfig(), tmp_path, calls)
    assert calls == ["v3", "v4", "v5"]                       # the interrupted task restarts, finished ones do not
    assert (tmp_path / "tasks" / "v1.json").stat().st_mtime_ns == before
    assert [finished[t]["value"] for t in tasks_of(ToyConfig())] == [3, 6, 9, 12, 15]
    calls.clear()
    run(ToyConfig(), tmp_path, calls)
    assert calls == []


def test_more_values_later_only_run_the_new_tasks(tmp_path):
    run(ToyConfig(values=(1, 2)), tmp_path)
    calls = []
    finished = run(ToyConfig(values=(1, 2, 7)), tmp_path, calls)  # `values` is not part of the experiment
    assert calls == ["v7"] and sorted(finished) == ["v1", "v2", "v7"]


def test_fingerprint_mismatch_names_the_differing_field(tmp_path):
    run(ToyConfig(values=(1,)), tmp_path)
    config_before = (tmp_path / "config.json").read_text()
    with pytest.raises(InputError) as error:
        run(ToyConfig(values=(1,), scale=4), tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'tasks' / 'v1.json'}: was produced with other settings (scale differ")
    assert "scale: 3 in the file, 4 now" in message and "offset" not in message
    assert "--run_name" in message and "\n" not in message
    assert (tmp_path / "config.json").read_text() == config_before   # checked before config.json is written


def test_merge_mode_checks_too_and_runs_nothing(tmp_path):
    run(ToyConfig(values=(1, 2)), tmp_path)
    calls = []
    finished = run(ToyConfig(values=(1, 2, 3), merge=True), tmp_path, calls)
    assert calls == [] and sorted(finished) == ["v1", "v2"]
    assert runner.missing_tasks(["v1", "v2", "v3"], finished) == ["v3"]
    with pytest.raises(InputError, match="offset differ"):
        run(ToyConfig(offset=1, merge=True), tmp_path)


def test_foreign_and_broken_files_are_refused(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "v1.json").write_text('{"value": 3}')
    with pytest.raises(InputError, match=r"v1\.json: not a task file .*lacks 'fingerprint'"):
        run(ToyConfig(), tmp_path)
    (tmp_path / "tasks" / "v1.json").write_text('{"fingerprint": ')
    with pytest.raises(InputError, match=r"v1\.json: not valid JSON"):
        run(ToyConfig(), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_shards_partition_the_tasks():
    tasks = [f"t{i}" for i in range(7)]
    shards = [runner.shard_tasks(tasks, f"{i}/3") for i in range(3)]
    assert shards == [["t0", "t3", "t6"], ["t1", "t4"], ["t2", "t5"]]
    assert sorted(t for s in shards for t in s) == sorted(tasks)
    with pytest.raises(ValueError, match="shard"):
        runner.shard_tasks(tasks, "3/3")


def test_merged_shards_equal_an_unsharded_run(tmp_path):
    reference = run(ToyConfig(), tmp_path / "whole")
    for i in range(2):                                      # two "machines", two folders
        run(ToyConfig(shard=f"{i}/2"), tmp_path / f"shard{i}")
    shutil.copytree(tmp_path / "shard1" / "tasks", tmp_path / "shard0" / "tasks", dirs_exist_ok=True)
    merged = run(ToyConfig(merge=True), tmp_path / "shard0")
    assert merged == reference
    configs = [(tmp_path / d / "config.json").read_text() for d in ("whole", "shard0", "shard1")]
    assert configs[0] == configs[1] == configs[2]


def test_cpu_threads_apply_while_tasks_run_and_are_restored(tmp_path):
    import torch
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    seen = []
    runner.run_grid(ToyConfig(values=(1,), cpu_threads=wanted), tmp_path, ["v1"],
                    lambda task, shared: seen.append(torch.get_num_threads()) or {},
                    non_experiment_fields=NON_EXPERIMENT, folder="tasks")
    assert seen == [wanted] and torch.get_num_threads() == before
