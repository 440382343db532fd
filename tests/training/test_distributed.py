"""DistributedDataParallel on CPU: 2 gloo processes under torchrun against one process.

The equivalence run uses the tiny CNN without batch norm, dropout 0 and no augmentation
(see tests/training/ddp_worker.py): with batch norm each rank normalises with its own half batch
(SyncBatchNorm only runs on CUDA), so those weights legitimately differ.
"""
import json
import re
from pathlib import Path

import torch

import ddp_worker
from conftest import ROOT, run_script
from safehil.training.training import fit


def torchrun(*args, nproc=2, timeout=240):
    """`torchrun --standalone --nproc_per_node nproc *args` on CPU (one thread per process)."""
    return run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", nproc, *args,
                      timeout=timeout, env={"OMP_NUM_THREADS": "1"})


def test_two_gloo_ranks_match_one_process(tmp_path):
    torchrun(Path(__file__).resolve().parent / "ddp_worker.py", tmp_path / "ddp.pt")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["world_size"] == 2

    model = ddp_worker.make_model(batch_norm=False)  # the same run in this one process
    result = fit(model, ddp_worker.toy_set(96, 0), ddp_worker.toy_set(32, 1), epochs=3, patience=3,
                 batch_size=16, lr=3e-3, mean=0.3, std=0.25, device=torch.device("cpu"), seed=5)
    single = model.state_dict()
    diff = max((single[k] - ddp["model"][k]).abs().max().item() for k in single)
    assert diff < 1e-4, f"max weight difference {diff}"
    # not trivially equal: training moved the weights far more than the tolerance
    start = ddp_worker.make_model(batch_norm=False).state_dict()
    assert max((single[k] - start[k]).abs().max().item() for k in single) > 1e-2
    for a, b in zip(result.history, ddp["history"]):  # losses are averaged over both ranks
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4


def test_train_model_under_torchrun_writes_once_and_shares_the_cache(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    proc = torchrun(ROOT / "train_model.py", "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv,
                    "--image_size", 24, "--epochs", 2, "--batch_size", 16, "--out_dir", tmp_path / "runs",
                    "--run_name", "ddp", "--mmap_cache", "True", "--cache_dir", tmp_path / "cache")
    run = tmp_path / "runs" / "ddp"
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt", "test_metrics.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp"))
    assert proc.stdout.count("ddp epoch 1:") == 1  # only rank 0 logs
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["rank_states"]) == 2
    # the ranks drew different dropout streams (rank-specific seeds)
    assert not torch.equal(last["rank_states"][0]["rng"]["torch"], last["rank_states"][1]["rng"]["torch"])
    # one cache file per split, built by rank 0 and reused by rank 1
    built = sorted(re.split(r"_\d+x\d+c\d_", p.name)[0] for p in (tmp_path / "cache").glob("*.u8"))
    assert built == ["test", "test_shifted", "train", "valid"]
    assert proc.stdout.count("built the image cache") == 4  # rank 0 built each split once (rank 1 is silent)
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["test"]["n"] == 24


def test_resumed_two_rank_run_equals_uninterrupted_run(tmp_path):
    """Dropout and augmentation draw per-rank streams: a resume restores each rank's own state
    (last.pt's rank_states), so 2 + 2 epochs give the weights of 4 uninterrupted ones bitwise."""
    worker = Path(__file__).resolve().parent / "ddp_worker.py"
    torchrun(worker, tmp_path / "full.pt", "--random", "--epochs", 4, "--run_dir", tmp_path / "full")
    torchrun(worker, tmp_path / "part.pt", "--random", "--epochs", 2, "--run_dir", tmp_path / "part")
    proc = torchrun(worker, tmp_path / "resumed.pt", "--random", "--epochs", 4, "--run_dir", tmp_path / "part",
                    "--resume")
    assert "resumed from" in proc.stdout and "will not match" not in proc.stderr
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert len(resumed["rank_states"]) == 2 and resumed["epoch"] == 4
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert [r["train_loss"] for r in full["history"]] == [r["train_loss"] for r in resumed["history"]]
    # the ranks' dropout streams differ, so restoring one state on both ranks could not pass this test
    assert not torch.equal(full["rank_states"][0]["rng"]["torch"], full["rank_states"][1]["rng"]["torch"])
