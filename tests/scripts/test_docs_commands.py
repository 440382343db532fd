"""The example commands of README.md and docs/*.md stay true: every `python ...` command line in
an indented or fenced block that finishes in seconds runs without error (`--help` as written;
`--plan` and `--smoke` ones as a plan: with `--plan True`, so they check every flag and setting
but train nothing). Commands that need data the test does not have (a path under /data, a
placeholder) or that run for minutes are skipped. All of them run in one Python process."""
import json
import re
import shlex

from conftest import ROOT, run_script

PLACEHOLDER = re.compile(r"/data/|/path/|PATH|<[^>]*>|\.\.\.|RUN/|A\.pt|B\.pt|results/")


def code_lines(text: str) -> list[str]:
    """Lines of indented (4 spaces) or fenced code blocks, continuation lines joined."""
    lines, fenced, out = text.splitlines(), False, []
    for line in lines:
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") or line.startswith("\t"):
            stripped = line.strip()
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1].rstrip() + " " + stripped
            else:
                out.append(stripped)
    return out


def doc_commands() -> list[str]:
    """Every `python X.py ...` / `make ...` command of README.md and docs/*.md (comments removed)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.is_file():
            for line in code_lines(path.read_text()):
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith(("python ", "make ")):
                    found.append(line)
    return found


def quick_argv(command: str) -> list[str] | None:
    """[script, flags...] to run for a command that finishes in seconds, or None to skip it."""
    if not command.startswith("python ") or PLACEHOLDER.search(command):
        return None
    try:
        words = shlex.split(command)[1:]
    except ValueError:
        return None
    if not words or not words[0].endswith(".py") or not (ROOT / words[0]).is_file():
        return None
    if "--help" in words or "-h" in words:
        return words
    if "--plan" in words:
        return words
    if "--smoke" in words:
        return words + ["--plan", "True"]
    return None


RUNNER = """
import contextlib, io, json, runpy, sys
out = {}
for argv in json.loads(sys.argv[1]):
    sys.argv = list(argv)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out[" ".join(argv)] = {"code": code, "text": buffer.getvalue()[-2000:]}
print(json.dumps(out))
"""


def test_code_blocks_and_commands_are_found_in_markdown():
    text = "Run\n\n    python a.py --help   # shows flags\n    python b.py --x 1 \\\n      --y 2\n\n```\nmake run\n```\n"
    assert code_lines(text) == ["python a.py --help   # shows flags", "python b.py --x 1 --y 2", "make run"]
    assert quick_argv("python reproduce.py --smoke True") == ["reproduce.py", "--smoke", "True", "--plan", "True"]
    assert quick_argv("python train_model.py --data_dir /data/NEU --help") is None
    assert quick_argv("python reproduce.py") is None               # minutes: not run here


def test_the_docs_quick_commands_run(tmp_path):
    runs = [argv for argv in map(quick_argv, doc_commands()) if argv]
    assert runs, "no --help / --plan / --smoke command found in README.md or docs/*.md"
    results = json.loads(run_script("-c", RUNNER, json.dumps(runs), cwd=ROOT, timeout=600).stdout.splitlines()[-1])
    failed = {command: r["text"] for command, r in results.items() if r["code"] != 0}
    assert not failed, "doc commands that fail:\n" + "\n".join(f"{c}\n{t}" for c, t in failed.items())
