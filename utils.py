"""Shared plumbing: seeding, device choice, config <-> command line, atomic writes,
checkpoint I/O, distributed helpers and a rank-aware logger. Nothing domain-specific.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import types
import typing
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


def setup_distributed() -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.

    A no-op for a plain single-process run. Returns True when distributed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    return True


def cleanup_distributed() -> None:
    if is_distributed():
        torch.distributed.destroy_process_group()


def log(*args, **kwargs) -> None:
    """print() on rank 0 only, flushed, so logs stay readable under torchrun."""
    if is_main_process():
        print(*args, **kwargs, flush=True)


# ----------------------------------------------------------------------------- atomic writing

def _atomic_write(path: str | Path, write_fn, mode: str) -> Path:
    """Write through a temp file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), "w")


def _json_default(obj):
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
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


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


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """torch.save to a temp file, then rename. `checkpoint` holds only tensors and plain data."""
    return _atomic_write(path, lambda f: torch.save(checkpoint, f), "wb")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; refuse one that needs arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{path}: refused to load this checkpoint: it is corrupt or needs arbitrary code to "
            f"unpickle (only weights_only=True checkpoints are accepted). Detail: {msg}"
        ) from None


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


# ----------------------------------------------------------------------------- config <-> CLI

def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _list_parser(item_type):
    def parse(text: str):
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got an empty value")
        try:
            return tuple(item_type(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {item_type.__name__}, got {text!r}") from None
    return parse


def _field_parser(tp):
    """argparse `type=` for a dataclass field annotation (bool, int, float, str, tuple[...], Optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] / X | None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _field_parser(args[0])

        def optional(text):
            return None if str(text).lower() in ("none", "") else inner(text)
        return optional
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return _list_parser(args[0] if args else str)
    if tp is bool:
        return _parse_bool
    return tp


def config_parser(config_cls, description: str | None = None) -> argparse.ArgumentParser:
    """One `--flag` per dataclass field; help text from `field(metadata={'help': ...})`."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = dict(type=_field_parser(hints[f.name]), default=default,
                      help=f.metadata.get("help", " "))
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_config(config_cls, argv=None, description: str | None = None):
    """Build a `config_cls` from the command line; validation errors exit with a message, not a traceback."""
    parser = config_parser(config_cls, description)
    args = parser.parse_args(argv)
    try:
        return config_cls(**vars(args))
    except (ValueError, TypeError) as e:
        parser.error(str(e))


def config_to_dict(cfg) -> dict:
    """A dataclass config as a plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=_json_default))


def save_config(cfg, out_dir: str | Path) -> Path:
    """Write the resolved config as config.json next to the results it produced."""
    return atomic_write_json(Path(out_dir) / "config.json", config_to_dict(cfg))


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition: used by Config.__post_init__ checks."""
    if not condition:
        raise ValueError(message)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def format_mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} +- {s * scale:.{digits}f}"


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
    return Path(__file__).resolve().parent


if __name__ == "__main__":
    sys.exit("utils.py is a library module; run one of the scripts instead.")
