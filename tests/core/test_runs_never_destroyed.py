"""A live run's folder and a replayed config.json as a careless person meets them: deleting a
"stale" .lock does not let a second run in, a lock file that is a symbolic link is refused (never
truncated), and every config.json value is checked as its flag is, one line before anything loads."""
import json
import subprocess
import sys

import pandas as pd
import pytest

import evaluate_safety
import review
import train_model
from conftest import ROOT, run_in_process, script_env
from safehil.core import locks
from safehil.settings.cli import save_config


def one_error_line(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("usage:") and not line.startswith("  ")]
    assert len(err) == 1 and "Traceback" not in err[0] and "error: " in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def train_args(tiny_synthetic, out, *extra):
    root, csv = tiny_synthetic
    return ("--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv, "--image_size", 16, "--epochs", 1,
            "--batch_size", 32, "--device", "cpu", "--out_dir", out, "--run_name", "run", *extra)


# ============================================================================ case 8: locks

HOLD = "import sys; from safehil.core.locks import hold_folder; hold_folder(sys.argv[1]); print('held', flush=True); " \
       "sys.stdin.read()"


def test_deleting_a_live_runs_lock_file_does_not_let_a_second_run_empty_its_folder(tiny_synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_config(train_model.Config(model="tiny_cnn", epochs=133), run)  # the live run's records
    (run / "metrics.csv").write_text("epoch\n1\n")
    live = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=script_env(), cwd=ROOT)
    try:
        assert live.stdout.readline().strip() == "held"
        (run / locks.FOLDER_LOCK).unlink()  # "a stale lock": a person cleans it up
        assert run_in_process(train_model, *train_args(tiny_synthetic, tmp_path, "--overwrite", "True")) == 1
        one_error_line(capsys, f"{run}: another run is writing into it", "--run_name NAME")
        assert (run / "metrics.csv").read_text() == "epoch\n1\n"
        assert json.loads((run / "config.json").read_text())["epochs"] == 133
    finally:
        live.communicate("")
    assert live.returncode == 0


def test_a_split_csv_lock_that_is_a_symbolic_link_is_refused_and_the_csv_kept(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    split_csv = tmp_path / "split.csv"
    split_csv.write_text("path,label,split\na/x.png,a,train\n")
    (tmp_path / "split.csv.lock").symlink_to(split_csv)
    review_csv = tmp_path / "rev" / "review.csv"
    review_csv.parent.mkdir()
    review_csv.write_text("path,predicted_label,corrected_label\na/x.png,a,\n")
    code = run_in_process(review, "import", "--review_csv", review_csv, "--split_csv", split_csv, "--data_dir", root,
                          "--class_names", "a")
    assert code == 1
    one_error_line(capsys, "split.csv.lock: a lock file that is a symbolic link", "delete the link")
    assert split_csv.read_text() == "path,label,split\na/x.png,a,train\n"


# ============================================================================ case 9 and 12: --config values

@pytest.fixture
def finished_run(tiny_synthetic, tmp_path):
    """A finished tiny training run: its folder."""
    assert run_in_process(train_model, *train_args(tiny_synthetic, tmp_path)) == 0
    return tmp_path / "run"


def replay_with(run, **changes):
    """A copy of the run's config.json with `changes`, beside it -> its path."""
    saved = json.loads((run / "config.json").read_text())
    path = run.parent / "edited.json"
    path.write_text(json.dumps({**saved, **changes}))
    return path


def test_overwrite_false_as_text_in_a_config_keeps_a_finished_run(finished_run, capsys):
    before = (finished_run / "metrics.csv").read_bytes()
    code = run_in_process(train_model, "--config", replay_with(finished_run, overwrite="False"))
    assert code == 1
    one_error_line(capsys, "already holds this run's results")
    assert (finished_run / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("changes, needles", [
    ({"epochs": 1.5}, ['"epochs": 1.5 is refused', "expected a whole number, got float"]),
    ({"epochs": "two"}, ['"epochs": "two" is refused', "invalid literal for int()"]),
    ({"lr": [0.1]}, ['"lr": [0.1] is refused', "expected a number, got list"]),
    ({"model": 3}, ['"model": 3 is refused', "expected str, got int"]),
    ({"model": "no_such_net"}, ['"model": "no_such_net" is refused', "invalid choice 'no_such_net'"]),
    ({"skip_bad_images": "maybe"}, ['"skip_bad_images": "maybe" is refused', "expected True or False, got 'maybe'"]),
    ({"batch_size": "32", "surprise": 1}, ["'surprise' is not a flag of this script", "remove it from the file"]),
])
def test_a_config_value_of_the_wrong_type_is_one_line_before_anything_loads(finished_run, changes, needles, capsys):
    code = run_in_process(train_model, "--config", replay_with(finished_run, **changes))
    assert code == 2
    one_error_line(capsys, *needles)


def test_numbers_written_as_text_in_a_config_are_parsed_as_their_flags_are(finished_run, capsys):
    path = replay_with(finished_run, epochs="1", lr="0.001", overwrite="True", batch_size="32")
    assert run_in_process(train_model, "--config", path) == 0
    saved = json.loads((finished_run / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["overwrite"], saved["batch_size"]) == (1, 0.001, True, 32)


def test_an_unknown_score_in_an_evaluate_safety_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"score": "foo", "config_class": "evaluate_safety:Config"}))
    assert run_in_process(evaluate_safety, "--config", path) == 2
    one_error_line(capsys, '"score": "foo" is refused', "invalid choice 'foo'")
