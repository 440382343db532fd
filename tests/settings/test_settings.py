"""One home per setting: each paper constant is declared once (presets.py) and read from there
everywhere else; each CPU-scale size once, beside them (presets.SCALES); the import graph of the project's
modules has no circle."""
import ast
import json
import re
from pathlib import Path

from safehil.settings import presets
from conftest import PACKAGE, ROOT, module_name, project_files

# code names under which a paper setting is written, -> the presets.Preset settings (by their one name)
NAMES = {"T": ("T",), "lr": ("model_a.lr", "model_b.lr"), "batch_size": ("model_a.batch_size", "model_b.batch_size"),
         "initial_samples": ("data_generation.initial_samples",), "step_sizes": ("data_generation.step_sizes",),
         "shares": ("saliency.shares",), "seeds": ("seeds", "active_learning.seeds"),
         "pool_per_class": ("data_generation.pool_per_class",),
         "epochs": ("model_a.epochs", "model_b.epochs", "data_generation.epochs"),
         "patience": ("model_a.patience", "model_b.patience", "data_generation.patience")}


def paper_values() -> dict[str, set]:
    """{code name: every value a preset row gives a setting of that name}."""
    out: dict[str, set] = {}
    for preset in presets.PRESETS.values():
        for name, settings in NAMES.items():
            out.setdefault(name, set()).update(v for s in settings if (v := preset.value(s)[0]) is not None)
    return out


def _literal(node):
    try:
        value = ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("tuple", "range") or (
                isinstance(node, ast.Call) and getattr(node.func, "id", "") == "tuple"):
            return None
        return None
    return tuple(value) if isinstance(value, list) else value


def declarations(path: Path):
    """(line, name, value) of every literal written to a setting name: a keyword argument, an
    assignment, a dataclass field or a parameter default."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "flag" and value.args:
                value = value.args[0]
            pairs.append((node.target.id, value))
        elif isinstance(node, ast.Assign):
            pairs += [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults \
                + node.args.kw_defaults
            pairs += [(a.arg, d) for a, d in zip(args, defaults) if d is not None]
        for name, value in pairs:
            if name in NAMES:
                literal = _literal(value)
                if literal is not None and not isinstance(literal, bool):
                    yield node.lineno if hasattr(node, "lineno") else value.lineno, name, literal


# inference batches (images per forward pass), not the paper's training batch
NOT_PAPER = {("config.py", "batch_size"), ("scoring.py", "batch_size"), ("uncertainty.py", "batch_size"),
             ("recipes.py", "epochs")}  # the toolkit recipe's own 200 epochs, equal to R4VR Severstal's by chance


def test_each_paper_constant_is_declared_once_in_presets():
    paper = paper_values()
    found = []
    for path in project_files():
        if path.name == "presets.py":
            continue
        for line, name, value in declarations(path):
            if value in paper[name] and (path.name, name) not in NOT_PAPER:
                found.append(f"{path.name}:{line}: {name} = {value!r}")
    assert not found, "paper constants declared outside presets.py (read them from presets):\n" + "\n".join(found)


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports (at any depth of its code)} of every project file,
    by dotted name ('safehil.data.datasets'); `from safehil.data import datasets` counts as the module."""
    names = {module_name(p) for p in project_files()}
    graph = {}
    for path in project_files():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[module_name(path)] = (imported & names) - {module_name(path), PACKAGE} - {
            n for n in names if module_name(path).startswith(n + ".")}  # a package's own __init__
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle [a, b, ..., a] of `graph`, or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}      # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_circle_finder_finds_a_circle_and_no_false_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle_among_the_projects_modules():
    graph = import_graph()
    assert {"utils", "safehil.data.images", "safehil.settings.config", "reproduce", "safehil.report.report"} <= set(graph)
    assert "reproduce" not in graph["safehil.report.report"]
    assert find_circle(graph) == [], f"import circle: {' -> '.join(find_circle(graph))}"


def test_the_library_never_imports_a_script_or_the_cards_modules_above_it():
    graph = import_graph()
    upward = [f"{m} imports {d}" for m, ds in graph.items() if m.startswith(PACKAGE + ".")
              for d in ds if not d.startswith(PACKAGE + ".")]
    assert not upward, "the library imports upward:\n" + "\n".join(upward)


def test_modules_carry_no_library_guard_issue_headers_or_import_time_pil_setting():
    """A library says so in its docstring (no `raise SystemExit("... is a library module")`);
    section headers name the topic, not a tracker issue; nothing changes PIL's settings on import."""
    for path in project_files():
        text = path.read_text()
        assert "is a library module" not in text.split('if __name__ == "__main__":')[-1] or \
            'if __name__ == "__main__":' not in text, path.name
        assert not re.search(r"^# =+ .*\(issue \d+\)", text, re.M), path.name
        assert "Image.MAX_IMAGE_PIXELS =" not in text, path.name


def test_scipy_is_declared_because_it_is_imported():
    imported = import_graph_external()
    requirements = (ROOT / "requirements.txt").read_text()
    assert "scipy" in imported and re.search(r"^scipy\b", requirements, re.M)


def import_graph_external() -> set[str]:
    """Top-level names of every module the project's files import."""
    names = set()
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_the_image_size_limit_is_a_context_that_reaches_decoding_threads(tmp_path):
    import numpy as np
    from PIL import Image

    from safehil.data import cache
    from safehil.data import images
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    assert images.size_problem(50, 40) is None
    with images.pixel_limit(1000):
        assert "above the limit of 1,000" in images.size_problem(50, 40)
        images_, kept, problems = cache.decode_images_skipping_bad([path], 16)
        assert kept == [] and "above the limit of 1,000" in problems[0]
    assert images.max_image_pixels() == images.DEFAULT_MAX_IMAGE_PIXELS   # restored after the block


def test_config_replays_a_recorded_run_and_flags_beside_it_win(tmp_path, capsys):
    import pytest

    import get_mc_scores
    import train_model
    from safehil.settings.cli import parse_config, save_config, setting_sources
    recorded = train_model.Config(model="tiny_cnn", epochs=3, lr=0.02, seeds=(4, 5), image_size=32)
    path = save_config(recorded, tmp_path / "run")
    replayed = parse_config(train_model.Config, ["--config", str(path), "--lr", "0.5"])
    assert (replayed.model, replayed.epochs, replayed.seeds, replayed.image_size, replayed.lr) == (
        "tiny_cnn", 3, (4, 5), 32, 0.5)
    sources = setting_sources(replayed)
    assert sources["lr"] == "flag" and sources["epochs"] == f"--config {path}"
    assert json.loads(path.read_text())["setting_sources"]["lr"] == "set by the caller"
    other = save_config(get_mc_scores.Config(), tmp_path / "mc")
    for argv, message in ((["--config", str(tmp_path / "nope.json")], "file not found"),
                          (["--config", str(other)], "a config of another script (written by get_mc_scores:Config)")):
        with pytest.raises(SystemExit) as stop:
            parse_config(train_model.Config, argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit):
        parse_config(train_model.Config, ["--config", str(tmp_path / "bad.json")])
    assert "not valid JSON" in capsys.readouterr().err


def test_help_lists_inherited_flags_grouped_with_the_paper_source_of_their_default():
    import train_model
    from safehil.settings.cli import config_parser
    text = " ".join(config_parser(train_model.Config).format_help().split())
    for group in ("data:", "training:", "run:"):
        assert group in text
    assert "--lr LR Adam learning rate (default: 0.001; paper preset R4VR NEU: R4VR NEU train_model.py" in text
    assert "--config RUN/config.json" in text
