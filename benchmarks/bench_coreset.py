"""Time and peak memory of the k-center coreset (acquisition.coreset_select) at pool scale.

    python benchmarks/bench_coreset.py                     # 100,000 x 512 features, pick 1,000 (CPU or CUDA)
    python benchmarks/bench_coreset.py --labelled 10000 --device cuda
    python benchmarks/bench_coreset.py --n 20000 --ref_n 5000

Part 1: `coreset_select` on random features [n, dim] with `labelled` of them labelled,
picking `budget`. Prints the time and the peak memory the selection adds beyond the
features themselves: on CUDA `torch.cuda.max_memory_allocated`; on CPU the rise of the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs on Linux, else the
rise of ru_maxrss, which only shows a new high-water mark), next to the analytic working
set (a few float32 vectors of length n plus one [n, c] block of the start-up).
Part 2: the same selection against a textbook k-center greedy that builds the full
[ref_n, ref_n] distance matrix, on a smaller pool: both must pick the same indices; the
script prints the time and memory ratios. Goal: memory O(n) (part 1 adds a few n-vectors,
never n x n: 100,000^2 float32 would be 40 GB).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HIL_NO_PROGRESS", "1")
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    # glibc serves large blocks from mmap and unmaps them on free only below its (growing) dynamic
    # threshold; a fixed threshold makes every freed block leave the resident set, so the peak-RSS
    # rise measures this call's own allocations, not memory recycled from an earlier one
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

from safehil.active.acquisition import coreset_select  # noqa: E402
from safehil.core.utils import resolve_device  # noqa: E402

MB = 1024 ** 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _vm_hwm_bytes() is not None
    except OSError:
        return False


def measure(fn, device: torch.device) -> tuple[float, float, str]:
    """Run fn() once -> (seconds, extra peak bytes, how the memory was measured)."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        seconds = time.perf_counter() - t0
        return seconds, torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
    if _reset_peak_rss():
        base = _vm_hwm_bytes()
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        return seconds, _vm_hwm_bytes() - base, "peak RSS rise (VmHWM after clear_refs)"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return seconds, peak, "ru_maxrss rise (a lower bound: only a new high-water mark shows)"


def full_matrix_k_center(features: torch.Tensor, labelled: torch.Tensor, budget: int) -> torch.Tensor:
    """The textbook k-center greedy (as in the toolkits): the whole [N, N] distance matrix first."""
    sq = features.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * features @ features.T).clamp_min_(0)   # [N, N]
    min_dist = dist[:, labelled].min(1).values if labelled.any() else dist[:, 0].clone()
    min_dist[labelled] = -1
    picked = []
    for _ in range(budget):
        idx = int(min_dist.argmax())
        picked.append(idx)
        min_dist = torch.minimum(min_dist, dist[:, idx])
        min_dist[idx] = -1
    return torch.tensor(picked)


def random_problem(n: int, dim: int, labelled: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g).to(device)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:labelled]] = True
    return features, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="pool size (labelled + unlabelled)")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension (ResNet18 penultimate: 512)")
    parser.add_argument("--budget", type=int, default=1_000, help="points to pick")
    parser.add_argument("--labelled", type=int, default=1_000, help="points labelled before the query")
    parser.add_argument("--chunk_elements", type=int, default=1 << 22, help="start-up block size in entries")
    parser.add_argument("--ref_n", type=int, default=5_000, help="pool size of the full-matrix comparison (0: skip)")
    parser.add_argument("--ref_budget", type=int, default=200, help="points picked in the comparison")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    features, mask = random_problem(args.n, args.dim, args.labelled, device)
    coreset_select(features[:2000], mask[:2000], 5, device=device)  # warm-up (kernels, allocator)
    out = {}
    seconds, peak, how = measure(lambda: out.setdefault("picked", coreset_select(
        features, mask, args.budget, device=device, chunk_elements=args.chunk_elements)), device)
    block = max(1, args.chunk_elements // args.n)
    working_set = 4 * args.n * 4 + 4 * args.n * min(block, max(args.labelled, 1))
    t_start, _, _ = measure(lambda: coreset_select(features, mask, 1, device=device,
                                                   chunk_elements=args.chunk_elements), device)
    picked = out["picked"]
    assert len(set(picked.tolist())) == args.budget and not mask[picked].any()
    print(f"coreset_select: {args.n:,} x {args.dim} features ({features.numel() * 4 / MB:.0f} MB), "
          f"{args.labelled:,} labelled, pick {args.budget:,}")
    greedy = max(seconds - t_start, 0.0)
    print(f"  time {seconds:.2f} s: start-up (distances to the labelled set + 1 pick) {t_start:.2f} s, "
          f"then {1000 * greedy / max(args.budget - 1, 1):.2f} ms per pick")
    print(f"  peak memory beyond the features: {peak / MB:.1f} MB [{how}]")
    print(f"  analytic working set: {working_set / MB:.1f} MB (4 float32 n-vectors + one [n, {block}] block); "
          f"a full n x n matrix would be {args.n ** 2 * 4 / 1024 ** 3:.1f} GB")

    if args.ref_n:
        del features
        features, mask = random_problem(args.ref_n, args.dim, max(1, args.ref_n // 100), device, seed=1)
        ours, theirs = {}, {}
        t_ours, m_ours, _ = measure(lambda: ours.setdefault("p", coreset_select(
            features, mask, args.ref_budget, device=device)), device)
        t_full, m_full, _ = measure(lambda: theirs.setdefault("p", full_matrix_k_center(
            features, mask.to(device), args.ref_budget)), device)
        same = torch.equal(ours["p"].cpu(), theirs["p"].cpu())
        print(f"comparison at {args.ref_n:,} x {args.dim}, pick {args.ref_budget}: same picks: {same}")
        print(f"  time: ours {t_ours:.3f} s, full matrix {t_full:.3f} s -> ratio full/ours {t_full / t_ours:.2f}")
        note = " (ours is below the 1 MB resolution: smaller blocks reuse the heap)" if m_ours < MB else ""
        print(f"  peak memory: ours {m_ours / MB:.2f} MB, full matrix {m_full / MB:.1f} MB -> ratio full/ours "
              f"{m_full / max(m_ours, MB):.0f}{note}")


if __name__ == "__main__":
    main()
