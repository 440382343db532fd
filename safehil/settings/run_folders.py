"""Run folders: `run_folder` names one (a plain folder inside --out_dir) and `claim_run_folder`
takes it before anything is written. A folder that holds another run's results, or this run's
finished results, is refused with one line naming the differing settings, `--run_name` and
`--overwrite True`; `--resume True` continues only a run with the same settings."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from safehil.core.locks import FOLDER_LOCK, hold_folder
from safehil.core.utils import (InputError, is_main_process, read_json, remove_stale_temp_files, resolve_device,
                                seed_everything)
from safehil.settings.cli import config_to_dict, save_config
from safehil.settings.config import CheckpointRun, RunConfig, _plain_folder_name, resolve_data
from safehil.training.models import load_trained_model

# Fields that say where and how a run is invoked, never what it computes: they may differ between the
# invocations of one run folder (`claim_run_folder`, `runner.experiment_fingerprint`).
INVOCATION_FIELDS = ("device", "out_dir", "run_name", "overwrite", "resume", "max_image_pixels", "cpu_threads",
                     "shard", "merge")
# What a run writes before it has a result: a folder holding only these (or hidden files) holds no result.
BOOKKEEPING_FILES = ("config.json", "bad_inputs.csv", "skipped_inputs.csv", "split.csv")


def run_folder(cfg: RunConfig, default_name: str) -> Path:
    """out_dir/run_name (or out_dir/default_name): the run folder, refused (InputError) when the
    name would leave --out_dir (a default built from another path, e.g. a checkpoint's folder)."""
    name = cfg.run_name or default_name
    if not _plain_folder_name(name):
        raise InputError(f"the run folder name {name!r} is not a plain folder name inside --out_dir; "
                         "pass --run_name NAME")
    return Path(cfg.out_dir) / name


def holds_results(folder: Path) -> bool:
    """True when `folder` holds anything beyond the bookkeeping a run writes before its first result."""
    return folder.is_dir() and any(not p.name.startswith(".") and p.name not in BOOKKEEPING_FILES
                                   for p in folder.iterdir())


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _defaults(cfg) -> dict:
    """{field: default} of a config class, as config.json would store it."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def setting_differences(cfg, saved: dict, ignore: tuple[str, ...]) -> list[str]:
    """'field: saved there, value now' for each setting of `cfg` (but `ignore`) that differs from the
    saved config.json dict; a field the file lacks (written before the flag existed) counts as its default."""
    now, defaults = config_to_dict(cfg), _defaults(cfg)
    out = []
    for key in now:
        if key in ignore:
            continue
        before = saved.get(key, defaults.get(key, "<absent>"))
        if before != now[key]:
            out.append(f"{key}: {_show(before)} there, {_show(now[key])} now")
    return out


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an --out_dir that is (or lies under) a file."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"--out_dir {out_dir}: {folder} is a file, not a folder; pass a folder")
            return


def check_run_location(cfg: RunConfig, out: Path) -> None:
    """Refuse (InputError) a run folder `out` that is not a folder directly inside --out_dir, or an
    --out_dir that is a file."""
    out = Path(out)
    _check_out_dir(Path(cfg.out_dir))
    if os.path.normpath(os.path.abspath(out.parent)) != os.path.normpath(os.path.abspath(cfg.out_dir)):
        raise InputError(f"{out}: the run folder must lie directly inside --out_dir {cfg.out_dir}; "
                         "pass --run_name NAME")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a run folder; pass another --run_name")


def empty_run_folder(out: Path) -> None:
    """Delete everything in the run folder `out` (what --overwrite True replaces)."""
    for entry in Path(out).iterdir():
        if entry.name == FOLDER_LOCK:  # held by this run: deleting it would let another run in
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_run_folder(cfg: RunConfig, out: Path, *, resuming: bool = False, ignore: tuple[str, ...] = ()) -> None:
    """Refuse (InputError, one line) to run in `out` when that would overwrite results; writes nothing.

    Allowed: a new or result-less folder (`holds_results`); a run folder with --overwrite True;
    with `resuming` (--resume True, or a grid that continues), a folder whose config.json has
    the same settings. Refused: a folder holding another run's results (the differing settings
    are named), this run's results without `resuming`, and results without a config.json (not
    a run folder). `ignore`: the script's fields that may differ between invocations of one
    run, besides INVOCATION_FIELDS.
    """
    out = Path(out)
    check_run_location(cfg, out)
    if not holds_results(out):
        return
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise InputError(f"{out}: holds files but no config.json, so it is not a run folder of these scripts; "
                         "pass another --run_name or --out_dir, or move the folder away")
    if cfg.overwrite:
        return
    try:
        saved = read_json(saved_path)
    except ValueError as e:
        raise InputError(f"{e}; pass --overwrite True to replace the run, or another --run_name") from None
    if not isinstance(saved, dict):
        raise InputError(f"{saved_path}: not a run's config (a JSON object expected); pass --overwrite True to "
                         "replace the run, or another --run_name")
    differ = setting_differences(cfg, saved, INVOCATION_FIELDS + tuple(ignore))
    resumable = any(f.name == "resume" for f in dataclasses.fields(cfg))
    if differ and resuming:
        how = "--resume True continues" if resumable else "a rerun continues"
        raise InputError(f"{out}: {how} a run only with its own settings, and {'; '.join(differ)} (see "
                         f"{saved_path}); rerun with those, pass --run_name NAME for a new run, or --overwrite True "
                         "to replace it")
    if differ:
        raise InputError(f"{out}: holds another run ({'; '.join(differ)}); pass --run_name NAME for a new run "
                         "folder, or --overwrite True to replace it")
    if not resuming:
        again = "--resume True continues or reuses it, " if resumable else ""
        raise InputError(f"{out}: already holds this run's results; {again}--overwrite True replaces them, "
                         "--run_name NAME writes a new run")


def claim_run_folder(cfg: RunConfig, out: Path, *, resuming: bool = False, ignore: tuple[str, ...] = ()) -> Path:
    """`check_run_folder`, then (on the main process only) hold the folder's lock for the rest of the
    process (`locks.hold_folder`: another run into it is refused, naming it), check again, empty the
    folder when --overwrite True replaces results, delete temp files a killed writer left, and
    write config.json."""
    out = Path(out)
    check_run_folder(cfg, out, resuming=resuming, ignore=ignore)
    if is_main_process():
        hold_folder(out)  # one run per folder: a second one is refused, naming this one
        check_run_folder(cfg, out, resuming=resuming, ignore=ignore)  # again, now that no other run can write
        if cfg.overwrite and holds_results(out):
            empty_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(out)
        save_config(cfg, out)
    return out


def open_checkpoint_run(cfg: CheckpointRun, run_dir):
    """The start of a script that scores one checkpoint into one run folder: the device, the seed,
    the model and its checkpoint dict, the config with its empty data fields taken from the
    checkpoint (`resolve_data`), and the run folder `run_dir(cfg)`, claimed (`claim_run_folder`).
    Returns (cfg, model, meta, device, out)."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model, meta = load_trained_model(cfg.checkpoint, device)  # InputError / FileNotFoundError name the file
    cfg = resolve_data(cfg, meta)
    return cfg, model, meta, device, claim_run_folder(cfg, run_dir(cfg))
