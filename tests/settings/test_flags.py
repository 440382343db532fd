"""Golden test: every script's flags (name, default, choices, type) stay what tests/settings/flags_golden.json
records, so old run folders still resume and old command lines still work.

After an intended change of a flag, regenerate the file on purpose and review its diff:

    python tests/settings/test_flags.py --regenerate
"""
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from safehil.settings.cli import flag_fields  # noqa: E402  (after the repository is importable)

GOLDEN = Path(__file__).resolve().parent / "flags_golden.json"

# "module:Config class" of every script configuration
CONFIGS = (
    "train_model:Config", "train_model_data_generation:Config", "active_learning:Config",
    "get_mc_scores:Config", "saliency_map_uncertainties:Config", "evaluate_safety:Config",
    "review:ExportConfig", "review:ImportConfig", "review:LoopConfig", "make_splits:Config",
    "reproduce:Config", "plot_results:Config", "predict:Config", "export:Config",
)


def load_config_class(spec: str):
    import importlib
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _plain(value):
    """A default as JSON would store it (tuples -> lists)."""
    return json.loads(json.dumps(value, default=list))


def describe(config_cls) -> dict:
    """{flag: {default, choices, type}} of one Config class."""
    out = {}
    for f in flag_fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        out[f.name] = {"default": _plain(default), "choices": None if choices is None else _plain(list(choices)),
                       "type": str(f.type).replace(" ", "")}
    return out


def live_flags() -> dict:
    return {spec: describe(load_config_class(spec)) for spec in CONFIGS}


def test_every_flag_name_default_and_choice_is_unchanged():
    golden = json.loads(GOLDEN.read_text())
    live = live_flags()
    assert sorted(live) == sorted(golden)
    for spec in CONFIGS:
        want, have = golden[spec], live[spec]
        assert sorted(have) == sorted(want), (
            f"{spec}: flags added {sorted(set(have) - set(want))}, removed {sorted(set(want) - set(have))}")
        for name in want:
            assert have[name] == want[name], f"{spec} --{name}: was {want[name]}, now {have[name]}"


def test_every_flag_has_help_text():
    for spec in CONFIGS:
        config_cls = load_config_class(spec)
        from safehil.settings.cli import config_parser
        parser = config_parser(config_cls)
        import argparse
        helps = {a.dest: a.help for a in parser._actions
                 if a.dest not in ("help", "config") and a.help != argparse.SUPPRESS}
        assert sorted(helps) == sorted(f.name for f in flag_fields(config_cls))
        assert all(h and h.strip() for h in helps.values()), spec


def regenerate() -> None:
    """One line per flag, so a review of the diff shows exactly which flag changed."""
    blocks = []
    for spec, flags in sorted(live_flags().items()):
        lines = [f"  {json.dumps(name)}: {json.dumps(flags[name], sort_keys=True)}" for name in sorted(flags)]
        blocks.append(f" {json.dumps(spec)}: {{\n" + ",\n".join(lines) + "\n }")
    GOLDEN.write_text("{\n" + ",\n".join(blocks) + "\n}\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/settings/test_flags.py --regenerate   (rewrites the golden file; run pytest to test)")
    regenerate()
