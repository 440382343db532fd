"""The configuration layer: frozen dataclass configs <-> the command line (`flag`, `parse_config`),
`--config` replay, setting sources, config.json, and `run_main` (one error line, never a traceback)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import sys
import textwrap
import types
import typing
from pathlib import Path

import torch



from safehil.core.utils import InputError, atomic_write_json, get_rank, is_distributed, json_default


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


MAX_SEED = 2**31 - 1  # seeds are offset per rank and per generator; this keeps every offset within int64


def flag(default, help: str, **metadata):
    """A dataclass field that is a command-line flag: `flag(300, "images per class", choices=(...))`.

    metadata: choices=(...) limits the values; most=N is an upper bound (of the value, or of
    every item of a list), checked by `check_flag_values` and stated in --help; positional=True
    makes it an optional positional argument (`plot_results.py results/`) instead of a --flag;
    source="..." says where the default comes from (e.g. a paper preset, `presets.paper_default`),
    shown in --help and recorded in config.json.
    """
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


SOURCES_FIELD = "setting_sources"  # the one config field that is not a flag: where each value came from


def sources_field():
    """The `setting_sources` field of every config (config.Flags): ((flag, source), ...) for the
    values whose source is known (given as a flag, read from --config, set by reproduce.py ...);
    not a flag, not compared, not part of the settings."""
    return dataclasses.field(default=(), compare=False, repr=False, metadata={"internal": True})


def flag_fields(config) -> list[dataclasses.Field]:
    """The fields of a config class (or instance) that are flags (every field but `setting_sources`)."""
    return [f for f in dataclasses.fields(config) if not f.metadata.get("internal")]


def _field_default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def default_source(config_cls, name: str) -> str:
    """Where the default of flag `name` comes from: its `source` metadata (the most derived class
    that declares it), else the script's own default."""
    for cls in config_cls.__mro__:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and cls.__dict__.get("__annotations__", {}).get(name) is not None:
            return f.metadata.get("source") or "default"
    return "default"


def with_sources(cfg, sources: dict[str, str]):
    """`cfg` with `sources` ({flag: where its value came from}) added to its recorded sources."""
    if SOURCES_FIELD not in {f.name for f in dataclasses.fields(cfg)}:
        return cfg  # a config without the field (not built on config.Flags) records no sources
    merged = dict(getattr(cfg, SOURCES_FIELD, ()))
    merged.update(sources)
    return dataclasses.replace(cfg, **{SOURCES_FIELD: tuple(sorted(merged.items()))})


def setting_sources(cfg) -> dict[str, str]:
    """{flag: source} for every flag of `cfg`: the recorded source, else the default's source
    when the value is the default, else 'set by the caller' (a value given in Python code)."""
    recorded = dict(getattr(cfg, SOURCES_FIELD, ()))
    out = {}
    for f in flag_fields(cfg):
        if f.name in recorded:
            out[f.name] = recorded[f.name]
        elif _plain(getattr(cfg, f.name)) == _plain(_field_default(f)):
            out[f.name] = default_source(type(cfg), f.name)
        else:
            out[f.name] = "set by the caller"
    return out


def _plain(value):
    return json.loads(json.dumps(value, default=json_default))


def flag_bound(config_cls, name: str):
    """The `most` bound of field `name`: its own, else that of a base class that declares it (a
    subclass that only changes a default keeps the bound)."""
    for cls in config_cls.__mro__:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("most") is not None:
            return f.metadata["most"]
    return None


def check_flag_values(cfg) -> None:
    """Raise ValueError naming the flag when a number is not finite (inf, nan) or exceeds its
    `most` bound: size-like flags are bounded so a typo cannot allocate hundreds of GB."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ValueError(f"--{f.name} must be a finite number, got {value}")
        most = flag_bound(type(cfg), f.name)
        if most is not None and any(v > most for v in numbers):
            raise ValueError(f"--{f.name} must be <= {most}, got {value}")


def _declaring_class(config_cls, name: str) -> type:
    """The class that first declares field `name` of `config_cls` (a base keeps it when a subclass
    redeclares it with another default)."""
    for cls in reversed(config_cls.__mro__):
        if name in cls.__dict__.get("__annotations__", {}):
            return cls
    return config_cls


def _flag_help(config_cls, f: dataclasses.Field) -> str:
    """A field's help: the most derived class's `FLAG_HELP[name]`, else the field's metadata."""
    for cls in config_cls.__mro__:
        text = cls.__dict__.get("FLAG_HELP", {}).get(f.name)
        if text:
            return text
    return f.metadata.get("help", " ")


def add_config_flags(parser: argparse.ArgumentParser, config_cls, title: str | None = None) -> None:
    """Add one `--flag` per dataclass field of `config_cls` to `parser`.

    Help text comes from `field(metadata={'help': ...})` (or a subclass's FLAG_HELP), choices
    from metadata 'choices'. Fields a script declares itself are listed first; inherited ones
    under the title of the base that declares them (its GROUP attribute, e.g. 'data'), or all
    under `title` when given.
    """
    hints = typing.get_type_hints(config_cls)
    groups = {}
    for f in flag_fields(config_cls):
        owner = _declaring_class(config_cls, f.name)
        name = title or (None if owner is config_cls else getattr(owner, "GROUP", None))
        if name not in groups:
            groups[name] = parser if name is None else parser.add_argument_group(name)
        default = _field_default(f)
        text = _flag_help(config_cls, f).replace("%", "%%").replace("%%%%", "%%")
        if flag_bound(config_cls, f.name) is not None:
            text += f" (at most {flag_bound(config_cls, f.name)})"
        source = default_source(config_cls, f.name)
        text += " (default: %(default)s" + ("" if source == "default" else f"; {source}".replace("%", "%%")) + ")"
        kwargs = dict(type=_field_parser(hints[f.name]), default=Unset(default), help=text)
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("positional"):
            groups[name].add_argument(f.name, nargs="?", **kwargs)
        else:
            groups[name].add_argument(f"--{f.name}", **kwargs)
    for old, (new, _) in renamed_flags(config_cls).items():  # accepted, not listed in --help
        parser.add_argument(f"--{old}", dest=RENAMED_DEST + old, default=None, type=str, help=argparse.SUPPRESS)


RENAMED_DEST = "renamed_flag__"  # argparse dest of an old spelling (never a field name)


def renamed_flags(config_cls) -> dict[str, tuple[str, int | None]]:
    """{old spelling: (new flag, item index or None)} from the `RENAMED_FLAGS` of `config_cls` and
    its bases: `RENAMED_FLAGS = {"model_a": "checkpoints[0]", "mc_T": "T"}` keeps `--model_a X`
    working for one release as item 0 of `--checkpoints` (and `--mc_T` as `--T`), with a note."""
    out = {}
    for cls in reversed(config_cls.__mro__):
        for old, new in cls.__dict__.get("RENAMED_FLAGS", {}).items():
            name, _, item = new.partition("[")
            out[old] = (name, int(item.rstrip("]")) if item else None)
    return out


def apply_renamed_flags(config_cls, values: dict, parser: argparse.ArgumentParser | None = None) -> dict:
    """Parsed flags with every old spelling given moved onto its new flag (a deprecation note on
    stderr for each); an old spelling given together with its new flag is an error. An item
    rename sets one item of a list flag (missing items: the default's); empty items are dropped,
    so `--model_b ""` leaves a one-model list."""
    values, hints = dict(values), typing.get_type_hints(config_cls)
    defaults = {a.dest: a.default for a in (parser._actions if parser else [])}
    lists = {}
    for old, (new, item) in renamed_flags(config_cls).items():
        given = values.pop(RENAMED_DEST + old, None)
        if given is None:
            continue
        print(f"note: --{old} is deprecated and will be removed in the next release; use --{new}"
              + (f" (item {item + 1} of its comma list)" if item is not None else ""), file=sys.stderr)
        if new in defaults and values[new] != defaults[new] and new not in lists:
            raise ValueError(f"--{old} is the old spelling of --{new}; give only --{new}")
        if item is None:
            values[new] = _field_parser(hints[new])(given)
            continue
        current = values[new].value if isinstance(values[new], Unset) else values[new]
        items = lists.setdefault(new, list(current or ()))
        items += [""] * (item + 1 - len(items))
        items[item] = given.strip()
    for new, items in lists.items():
        values[new] = tuple(i for i in items if i)
    return values


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the script docstring's line breaks and shows every flag's default."""


class Unset:
    """The argparse default of every config flag: the field's default, marked as not given on the
    command line (argparse keeps a non-string default as it is), so `config_from_args` knows which
    flags were given. Shown in --help as the default itself."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    __repr__ = __str__


def add_replay_flag(parser: argparse.ArgumentParser) -> None:
    """The `--config RUN/config.json` flag of every script (see `config_from_args`)."""
    parser.add_argument("--config", default="", metavar="RUN/config.json",
                        help="replay a recorded run (every setting from that config.json, written by this script); "
                             "flags given beside it win")


SETTINGS_HEADING = "Settings (every flag, grouped; name=default [source of the default]):"


def _short_source(config_cls, name: str) -> str:
    """The label of a default's source (the text before its first ':'), '' for a script default."""
    source = default_source(config_cls, name)
    return "" if source == "default" else source.split(":")[0].strip()


def _short_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "''"
    return "''" if value == "" else str(value)


def settings_block(config_cls, title: str = "") -> str:
    """The docstring paragraph that lists every flag of `config_cls`, inherited ones included,
    grouped as `--help` groups them (the script's own first), each with its default and its
    source label. A script's opening docstring ends with it (tests/test_script_docstrings.py
    checks it is current; `python tests/test_script_docstrings.py --regenerate` rewrites it)."""
    groups: dict[str, list[str]] = {}
    for f in flag_fields(config_cls):
        owner = _declaring_class(config_cls, f.name)
        group = "own" if owner is config_cls else (getattr(owner, "GROUP", None) or "own")
        source = _short_source(config_cls, f.name)
        groups.setdefault(group, []).append(f"{f.name}={_short_value(_field_default(f))}"
                                            + (f" [{source}]" if source else ""))
    lines = [SETTINGS_HEADING if not title else f"{title}: {SETTINGS_HEADING}"]
    for group, items in groups.items():
        lines += textwrap.wrap(f"{group}: " + ", ".join(items), 96, initial_indent="  ",
                               subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)


def help_description(description: str | None) -> str | None:
    """A script's docstring for `--help`, without its settings paragraph (`--help` lists the flags)."""
    cut = -1 if description is None else description.find(SETTINGS_HEADING)
    if cut < 0:
        return description
    return description[:description.rfind("\n\n", 0, cut) + 1]


def config_parser(config_cls, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--flag` per dataclass field (see `add_config_flags`) and `--config`."""
    parser = argparse.ArgumentParser(description=help_description(description), formatter_class=HelpFormatter)
    add_replay_flag(parser)
    add_config_flags(parser, config_cls)
    return parser


def read_replay_config(path: str | Path, config_cls) -> dict:
    """{flag: value} of a config.json written by `config_cls`'s script (`save_config`), tuples
    restored; a missing or invalid file, or one written by another script, is a ValueError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: file not found (pass a run folder's config.json)")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"--config {path}: not a run's config.json (a JSON object expected)")
    fields = {f.name: f for f in flag_fields(config_cls)}
    writer = saved.get("config_class")
    unknown = sorted(k for k in saved if k not in fields and k not in CONFIG_KEYS)
    if writer and writer != config_class_name(config_cls):
        raise ValueError(f"--config {path}: a config of another script (written by {writer}); replay it with "
                         "that script")
    if unknown and writer:  # this script's config.json with settings added by hand (or by an older version)
        raise ValueError(f"--config {path}: {', '.join(map(repr, unknown[:5]))} "
                         f"{'is not a flag' if len(unknown) == 1 else 'are not flags'} of this script; remove "
                         f"{'it' if len(unknown) == 1 else 'them'} from the file (--help lists the flags)")
    if unknown:
        raise ValueError(f"--config {path}: a config of another script (its settings {unknown[:5]} are not flags "
                         "of this script); replay it with that script")
    hints = typing.get_type_hints(config_cls)
    values = {}
    for name, value in saved.items():
        if name in fields:
            try:
                values[name] = replay_value(hints[name], value, fields[name].metadata.get("choices"))
            except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
                raise ValueError(f"--config {path}: \"{name}\": {json.dumps(value)} is refused as --{name} would "
                                 f"be: {e}") from None
    return values


def replay_value(tp, value, choices=None):
    """A config.json value checked exactly as its flag's text is (`_field_parser`, then `choices`):
    a JSON value of the field's own type is taken as it is; text is parsed as the flag parses it
    ("False" -> False, "3" -> 3, "a,b" -> a tuple); any other type is refused (1.5 for an int,
    a number for a text flag). Raises ValueError / ArgumentTypeError with the reason."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] / X | None
        if value is None:
            return None
        return replay_value([a for a in typing.get_args(tp) if a is not type(None)][0], value, choices)
    if isinstance(value, str):
        parsed = _field_parser(tp)(value)
    elif origin in (tuple, list):
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item_type = ([a for a in typing.get_args(tp) if a is not Ellipsis] or [str])[0]
        parsed = tuple(replay_value(item_type, v) for v in value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {type(value).__name__}")
        parsed = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected a whole number, got {type(value).__name__}")
        parsed = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        parsed = float(value)
    else:
        raise TypeError(f"expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")
    if choices is not None and parsed not in choices and not (
            isinstance(parsed, tuple) and all(v in choices for v in parsed)):
        raise ValueError(f"invalid choice {parsed!r} (choose from {', '.join(map(str, choices))})")
    return parsed


def config_from_args(config_cls, args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Build `config_cls` from the parsed flags that are its fields, in this order of precedence:
    a flag given on the command line, then the `--config` file's value (when the parser has
    `--config`), then the field's default; each value's source is recorded (`setting_sources`).
    A validation error or a bad --config file exits through `parser.error` (usage + one line,
    code 2), never a traceback."""
    try:
        values = apply_renamed_flags(config_cls, vars(args), parser)
        replay_path = values.get("config") or ""
        replay = read_replay_config(replay_path, config_cls) if replay_path else {}
        kwargs, sources = {}, {}
        for f in flag_fields(config_cls):
            value = values[f.name]
            if not isinstance(value, Unset):
                kwargs[f.name], sources[f.name] = value, "flag"
            elif f.name in replay:
                kwargs[f.name], sources[f.name] = replay[f.name], f"--config {replay_path}"
            else:
                kwargs[f.name] = value.value
        return with_sources(config_cls(**kwargs), sources)
    except (ValueError, TypeError) as e:
        parser.error(str(e))


def parse_config(config_cls, argv=None, description: str | None = None):
    """Build a `config_cls` from the command line (see `config_from_args`); validation errors exit
    with a message, not a traceback."""
    parser = config_parser(config_cls, description)
    return config_from_args(config_cls, parser.parse_args(argv), parser)


def config_to_dict(cfg) -> dict:
    """A dataclass config's settings (every flag) as a plain JSON-able dict (tuples become lists)."""
    return _plain({f.name: getattr(cfg, f.name) for f in flag_fields(cfg)})


CONFIG_KEYS = ("config_class", SOURCES_FIELD)  # what config.json holds besides the settings


def config_class_name(config_cls) -> str:
    """'module:Class' of a config class, the module named after its file (also when run as __main__)."""
    module = sys.modules.get(config_cls.__module__)
    name = Path(getattr(module, "__file__", "") or config_cls.__module__).stem
    return f"{name if config_cls.__module__ == '__main__' else config_cls.__module__}:{config_cls.__qualname__}"


def save_config(cfg, out_dir: str | Path) -> Path:
    """Write the resolved config as config.json next to the results it produced: every setting,
    `setting_sources` (where each value came from) and `config_class` (module:Class, so that
    `--config` replays it only in the script that wrote it)."""
    record = {**config_to_dict(cfg), "config_class": config_class_name(type(cfg)),
              SOURCES_FIELD: setting_sources(cfg)}
    return atomic_write_json(Path(out_dir) / "config.json", record)


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


