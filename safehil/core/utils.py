"""Shared plumbing: seeding, device choice, distributed helpers, atomic writes, checkpoint I/O,
the input-error type and number formatting. Nothing domain-specific.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch



# ----------------------------------------------------------------------------- seeding / device

def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU `torch.Generator` seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available (cuda:LOCAL_RANK under torchrun), else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but CUDA is not available on this machine")
    return torch.device(name)


# ----------------------------------------------------------------------------- distributed

def is_distributed() -> bool:
    """True when launched by torchrun (WORLD_SIZE > 1) and the process group is up."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def setup_distributed(device: str = "auto") -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.

    `device` is the script's --device: 'cpu' asks for gloo even where CUDA is present.
    A no-op for a plain single-process run. Returns True when distributed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() and not str(device).startswith("cpu") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    return True


def cleanup_distributed() -> None:
    if is_distributed():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process run)."""
    if is_distributed():
        torch.distributed.barrier()


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (generating data, building a cache), the others wait and then run it.

    Without torchrun this is a plain block. If rank 0 fails inside, torchrun stops the waiting ranks.
    """
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (a picklable value), so every rank takes the same decision."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in a single-process run."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of a short list of numbers over all ranks (float64)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def log(*args, **kwargs) -> None:
    """print() on rank 0 only, flushed, so logs stay readable under torchrun."""
    if is_main_process():
        print(*args, **kwargs, flush=True)


# ----------------------------------------------------------------------------- atomic writing

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write_fn, mode: str) -> Path:
    """Write through a temp file in the same folder, then os.replace: readers never see half a file.

    A crash (even SIGKILL) leaves either the old file or the new one, plus at worst a stray
    `.<name>.*.tmp` that nothing reads. The file gets the usual permissions (0666 & ~umask),
    not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete `.<name>.*.tmp` files that a killed writer left in `folder`; returns what was removed."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks): an image's content or a checkpoint's
    identity, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data), "wb")


def json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def atomic_write_csv(path: str | Path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    return _atomic_write(path, lambda f: frame.to_csv(f, index=False), "w")


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deep to read (thousands of levels); not a file these "
                         "scripts write") from None


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """torch.save to a temp file, then rename. `checkpoint` holds only tensors and plain data."""
    return _atomic_write(path, lambda f: torch.save(checkpoint, f), "wb")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; refuse one that needs arbitrary code.

    Errors name the file and say which of the two it is: a checkpoint that pickles code
    (a class, a Namespace, a function: refused, never executed) or a corrupt/truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (zip), EOFError, KeyError ...
        text = str(e)
        # "Weights only load failed" wraps every unpickling error; only a GLOBAL means pickled code
        if "Unsupported global" in text or "GLOBAL" in text:
            found = [line.split("GLOBAL", 1)[1].split()[0] for line in text.splitlines() if "GLOBAL" in line]
            what = f" (it holds {found[0]})" if found else ""
            raise ValueError(
                f"{path}: refused to load this checkpoint: it needs arbitrary code to unpickle{what}. "
                "Only weights_only=True checkpoints (tensors and plain Python data) are accepted; "
                "re-save it as a dict of tensors, lists, numbers and strings.") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Unsupported operand")),
                      lines[0] if lines else type(e).__name__)
        raise ValueError(f"{path}: cannot read this checkpoint: the file is corrupt or truncated "
                         f"({type(e).__name__}: {detail})") from None


def check_checkpoint_matches(state: dict, path: str | Path, **expected) -> None:
    """Raise if what a checkpoint records differs from what the caller is about to load it into.

    `expected` are keys such as model_name='resnet18', class_names=[...], image_size=224;
    a key the checkpoint does not record, or an expected value of None, is not checked.
    """
    diffs = []
    for key, want in expected.items():
        if want is None or key not in state:
            continue
        have = state[key]
        if isinstance(have, (list, tuple)) or isinstance(want, (list, tuple)):
            same = list(have) == list(want)
        else:
            same = have == want
        if not same:
            diffs.append(f"{key}: checkpoint has {have!r}, this run has {want!r}")
    if diffs:
        raise InputError(f"{path}: checkpoint does not match this model/data: " + "; ".join(diffs))


def checkpoint_rng_state() -> dict:
    """Every RNG state a training run depends on, as plain tensors/lists (weights_only-safe)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state()[1].tolist()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import ast
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition: used by Config.__post_init__ checks."""
    if not condition:
        raise ValueError(message)


class InputError(ValueError):
    """Bad input data (a broken image, a missing file, an unknown label ...): the message names
    the file and the problem; scripts report it without a traceback (see `run_main`)."""

def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def format_mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} +- {s * scale:.{digits}f}"


def _missing(x) -> bool:
    """None, NaN or +-inf: a number a table shows as n/a."""
    return x is None or (isinstance(x, (int, float, np.number)) and not math.isfinite(float(x)))


def fmt_num(x, digits: int = 3) -> str:
    """`x` with `digits` decimals, or 'n/a' when it is missing (None, NaN, inf)."""
    return "n/a" if _missing(x) else f"{x:.{digits}f}"


def fmt_pct(x, digits: int = 1) -> str:
    """A share 0..1 as a percentage ('12.5 %'), or 'n/a' when it is missing."""
    return "n/a" if _missing(x) else f"{100 * x:.{digits}f} %"


def mean_or_nan(values) -> float:
    """The mean of a 1-D array or Series; NaN for an empty one (no warning)."""
    return float(np.mean(values)) if len(values) else math.nan


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def progress_enabled() -> bool:
    """tqdm bars on rank 0 only, and not when stderr is redirected to a non-terminal in tests."""
    return is_main_process() and os.environ.get("HIL_NO_PROGRESS", "0") != "1"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
