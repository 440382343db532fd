"""A script's main with clean errors: `run_main` turns an expected failure (bad input, a full or
read-only disk, a numeric blow-up, Ctrl-C) into one 'error: ...' line naming the fix, never a traceback."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import sys

import torch

from safehil.core.utils import InputError, get_rank, is_distributed


def interrupt_hint(cfg) -> str:
    """How to continue a run stopped by Ctrl-C: a resumable run continues, a grid keeps its
    finished tasks, anything else starts again."""
    names = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    if "resume" in names:
        return "continue it with the same flags and --resume True"
    if "shard" in names:
        return "rerun the same command to continue: finished tasks are kept"
    if "overwrite" in names:
        return "rerun the same command to start it again (with --overwrite True if it wrote results)"
    return "rerun the same command to start it again"


_OS_ERROR_FIXES = {
    errno.EACCES: "not writable or readable by you: fix its permissions or pass another --out_dir",
    errno.EPERM: "not permitted: fix its permissions or pass another --out_dir",
    errno.EROFS: "on a read-only file system: pass an --out_dir on a writable disk",
    errno.ENOSPC: "the disk is full: free space or pass an --out_dir on another disk (files written before are "
                  "intact)",
    errno.EDQUOT: "the disk quota is used up: free space or pass an --out_dir on another disk",
    errno.ENOTDIR: "a file is in the way of a folder: pass another --out_dir",
    errno.EEXIST: "a file is in the way of a folder: pass another --out_dir",
    errno.EISDIR: "a folder is in the way of a file: pass another path",
    errno.ENAMETOOLONG: "a name in the path is longer than the file system allows (255 bytes) or the path is too "
                        "long: shorten the file name it names, or use a shorter --out_dir or --run_name",
}


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the path it names, what went wrong and the fix."""
    path = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = e.strerror or str(e)
    fix = _OS_ERROR_FIXES.get(e.errno, "")
    return f"{path or 'a file operation'}: {what}" + (f"; {fix}" if fix else "")


def run_main(main_fn, cfg):
    """Call `main_fn(cfg)`; an expected failure exits with one 'error: ...' line and code 1, no
    traceback: bad input (InputError, a missing file) and a numeric blow-up (FloatingPointError,
    a NaN/inf loss), an OSError (a read-only or full disk: `os_error_line` names the path and the
    fix) and a path with a NUL byte. Ctrl-C exits with code 130 and says how to continue. A config
    with `cpu_threads` (> 0) sets torch's CPU threads first; one with a `run_context()` method runs
    `main_fn` inside it (config.DataRoot: the image-size limit).
    Programming errors still show their traceback."""
    try:
        if getattr(cfg, "cpu_threads", 0):
            torch.set_num_threads(cfg.cpu_threads)
        context = getattr(cfg, "run_context", None)  # e.g. config.DataRoot: the image-size limit
        with context() if context else contextlib.nullcontext():
            return main_fn(cfg)
    except (InputError, FileNotFoundError, FloatingPointError) as e:
        prefix = f"[rank {get_rank()}] " if is_distributed() else ""
        print(f"error: {prefix}{e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except OSError as e:  # a read-only or full disk, a file where a folder belongs: the path and the fix
        prefix = f"[rank {get_rank()}] " if is_distributed() else ""
        print(f"error: {prefix}{os_error_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except ValueError as e:
        if "null byte" not in str(e):  # a path with a NUL byte (from a CSV or JSON): bad input, not a bug
            raise
        print(f"error: a path contains a NUL byte ({e}); fix the file that lists it", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"\nerror: interrupted (Ctrl-C); {interrupt_hint(cfg)}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


