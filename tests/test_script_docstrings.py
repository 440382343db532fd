"""Every script's opening docstring ends with the list of all its settings (inherited ones
included, grouped, each with its default and where that default comes from), so a user who
reads the file sees every knob without running --help. `--help` leaves the list out (it shows
the flags itself).

After an intended change of a flag, rewrite the lists on purpose and review the diff:

    python tests/test_script_docstrings.py --regenerate
"""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from test_flags import CONFIGS  # noqa: E402  (every script configuration, one place)
from safehil.settings.cli import SETTINGS_HEADING, settings_block  # noqa: E402

TITLES = {"review:ExportConfig": "review.py export", "review:ImportConfig": "review.py import",
          "review:LoopConfig": "review.py loop (+ the data-generation flags)"}


def expected_blocks(module: str) -> str:
    """The settings paragraph(s) the docstring of `module` must end with."""
    specs = [s for s in CONFIGS if s.split(":")[0] == module]
    mod = importlib.import_module(module)
    return "\n\n".join(settings_block(getattr(mod, s.split(":")[1]), TITLES.get(s, "")) for s in specs)


def modules() -> list[str]:
    return sorted({s.split(":")[0] for s in CONFIGS})


def test_every_scripts_docstring_lists_all_of_its_settings():
    for module in modules():
        doc = importlib.import_module(module).__doc__
        assert doc.rstrip().endswith(expected_blocks(module)), (
            f"{module}.py's docstring does not end with its current settings list: "
            "run python tests/test_script_docstrings.py --regenerate")


def test_the_settings_list_names_every_flag_with_its_source():
    import train_model
    block = settings_block(train_model.Config)
    for name in ("epochs", "lr", "passes", "data_dir", "seed", "out_dir"):  # own and inherited
        assert f"{name}=" in block
    assert "lr=0.001 [paper preset R4VR NEU]" in block
    assert block.splitlines()[0] == SETTINGS_HEADING


def test_help_leaves_the_settings_list_out_but_keeps_the_examples():
    out = subprocess.run([sys.executable, str(ROOT / "get_mc_scores.py"), "--help"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert SETTINGS_HEADING not in out and "python get_mc_scores.py --checkpoint" in out
    assert "--T T" in out


def regenerate() -> None:
    for module in modules():
        path = ROOT / f"{module}.py"
        source = path.read_text()
        doc_node = ast.parse(source).body[0]
        lines = source.splitlines(keepends=True)
        end = sum(len(line) for line in lines[:doc_node.end_lineno])  # just after the closing quotes
        close = source.rindex('"""', 0, end)
        cut = source.find(SETTINGS_HEADING, 0, close)
        head = source[:source.rfind("\n\n", 0, cut) if cut >= 0 else close].rstrip() + "\n\n"
        path.write_text(head + expected_blocks(module) + "\n" + source[close:])
        print(f"rewrote {path.name}")


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        regenerate()
    else:
        print(__doc__)
