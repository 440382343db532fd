"""Every script's --help: its example commands stay on their own lines, every flag shows its
default, and review.py's actions each have their own help (run in one subprocess, through
each script's real `if __name__ == "__main__"` path)."""
import ast
import json

from conftest import ROOT, run_script


def scripts() -> list[str]:
    """Every runnable script of the repository: a top-level file whose main block runs a Config
    (library modules have none)."""
    found = []
    for path in sorted(ROOT.glob("*.py")):
        text = path.read_text()
        main_block = text.split('\nif __name__ == "__main__":', 1)[1] if '\nif __name__ == "__main__":' in text else ""
        if "run_main(" in main_block or "cli(" in main_block:
            found.append(path.name)
    return found


def example_lines(script: str) -> list[str]:
    """The command lines of a script's docstring (as --help should print them)."""
    doc = ast.get_docstring(ast.parse((ROOT / script).read_text()), clean=False) or ""
    return [line for line in doc.splitlines() if line.lstrip().startswith(("python ", "torchrun "))]


HELP_RUNNER = """
import contextlib, io, json, runpy, sys
out = {}
for name, argv in json.loads(sys.argv[1]):
    sys.argv = [name] + argv
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            runpy.run_path(name, run_name="__main__")
            code = None
        except SystemExit as stop:
            code = stop.code
    out[" ".join([name] + argv)] = {"code": code, "text": buffer.getvalue()}
print(json.dumps(out))
"""


def test_every_scripts_help_keeps_its_example_commands_on_their_own_lines():
    names = scripts()
    assert {"train_model.py", "predict.py", "review.py", "evaluate_safety.py", "reproduce.py"} <= set(names)
    calls = [(name, ["--help"]) for name in names] + [("review.py", [a, "--help"]) for a in ("export", "import",
                                                                                          "loop")]
    helps = json.loads(run_script("-c", HELP_RUNNER, json.dumps(calls)).stdout.splitlines()[-1])
    for name in names:
        shown = helps[f"{name} --help"]
        assert shown["code"] == 0, name
        printed = shown["text"].splitlines()
        examples = example_lines(name)
        assert examples, f"{name}: its docstring shows no example command"
        for line in examples:  # each example intact on a line of its own, not reflowed into a paragraph
            assert line in printed, f"{name} --help lost the example line {line!r}"
        assert "(default: " in shown["text"] or name == "review.py", name  # review.py's flags: per action
    export = helps["review.py export --help"]["text"]
    assert export.startswith("usage: review.py export") and "--only_referred" in export and "(default: " in export
    assert "    python review.py export --checkpoints A.pt --images_dir /data/new_batch --only_referred False" \
        in export.splitlines()
    loop = helps["review.py loop --help"]["text"]
    assert "flags (passed on)" in loop and "--initial_samples" in loop and "--answer" in loop
