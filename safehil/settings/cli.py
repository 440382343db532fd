"""The configuration layer: frozen dataclass configs <-> the command line (`flag`, `parse_config`),
`--config` replay, setting sources and config.json. A script's flags are its `Config`'s fields,
inherited ones included (the bases are in config.py); `--help` lists them in groups."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from pathlib import Path

from safehil.core.utils import atomic_write_json, json_default


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


def config_parser(config_cls, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--flag` per dataclass field (see `add_config_flags`) and `--config`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                     allow_abbrev=False)  # one spelling per flag: --checkpoint is not --checkpoints
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
        values = vars(args)
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
