"""The Label Studio bridge: export tasks with pre-annotations + labeling config, and import a
Label Studio JSON export (fixtures in its documented export format) through the same validation
as review.csv, all or nothing."""
import json
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import pandas as pd
import pytest

from safehil.review import label_studio
import review


@pytest.fixture(scope="module")
def ls_batch(checkpoint_pair, tmp_path_factory):
    a, b = checkpoint_pair
    out = tmp_path_factory.mktemp("ls") / "batch"
    review.main(review.ExportConfig(checkpoints=(str(a), str(b)), split="test", T=4, display_size=24,
                                    device="cpu", out_dir=str(out), format="label_studio"))
    return out


def test_export_writes_tasks_with_pre_annotations_and_the_labeling_config(ls_batch, tiny_synthetic):
    root, csv = tiny_synthetic
    tasks = json.loads((ls_batch / label_studio.TASKS_FILE).read_text())
    rows = pd.read_csv(ls_batch / "review.csv", dtype={"referred": bool}, keep_default_na=False)
    assert len(tasks) == len(rows) == 24
    for task, row in zip(tasks, rows.itertuples()):  # same order: riskiest first
        url = task["data"]["image"]
        assert url.startswith("/data/local-files/?d=")
        assert unquote(url.split("?d=", 1)[1]) == f"{root.name}/{row.path}"  # document root: data root's parent
        assert (root / task["data"]["path"]).is_file() and task["data"]["path"] == row.path
        assert task["data"]["referred"] is bool(row.referred)
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "a+b" and prediction["score"] == pytest.approx(float(row.risk))
        assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [row.predicted_label]}}]
    view = ET.fromstring((ls_batch / label_studio.CONFIG_FILE).read_text())
    assert view.tag == "View" and view.find("Image").attrib == {"name": "image", "value": "$image"}
    choices = view.find("Choices")
    assert choices.attrib["name"] == "label" and choices.attrib["toName"] == "image"
    assert [c.attrib["value"] for c in choices] == sorted(pd.read_csv(csv)["label"].unique())
    how_to = (ls_batch / label_studio.HOW_TO_FILE).read_text()
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in how_to
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve().parent}" in how_to
    assert "--label_studio_json" in how_to


def test_labeling_config_escapes_class_names():
    names = ['a&b', 'say "x"', "<c>", "rolled-in_scale"]
    view = ET.fromstring(label_studio.labeling_config(names))
    assert [c.attrib["value"] for c in view.find("Choices")] == names


def annotation(id_, label, updated, cancelled=False):
    """An annotation as Label Studio's JSON export writes it."""
    return {"id": id_, "completed_by": 1, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": updated, "updated_at": updated, "lead_time": 4.2, "task": 0, "project": 1,
            "result": [] if cancelled else [{"id": f"r{id_}", "type": "choices", "origin": "manual",
                                             "from_name": "label", "to_name": "image",
                                             "value": {"choices": [label]}}]}


def exported_task(id_, task, annotations):
    """One task of a Label Studio JSON export: our imported data and prediction, plus annotations."""
    prediction = dict(task["predictions"][0], id=100 + id_, task=id_, created_ago="3 minutes")
    return {"id": id_, "data": task["data"], "annotations": annotations, "predictions": [prediction],
            "drafts": [], "meta": {}, "inner_id": id_, "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations), "total_predictions": 1,
            "created_at": "2025-05-01T09:00:00.000000Z", "updated_at": "2025-05-01T10:00:00.000000Z",
            "project": 1, "file_upload": None}


def other_class(label, classes):
    return classes[(classes.index(label) + 1) % len(classes)]


def test_import_of_a_label_studio_export_applies_the_annotation_rule(ls_batch, tmp_path):
    tasks = json.loads((ls_batch / label_studio.TASKS_FILE).read_text())
    classes = json.loads((ls_batch / "review_meta.json").read_text())["class_names"]
    pred = [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks]
    fixed = other_class(pred[0], classes)
    export = [
        # corrected: an older annotation is superseded by the latest one
        exported_task(1, tasks[0], [annotation(1, pred[0], "2025-05-01T10:00:00Z"),
                                    annotation(2, fixed, "2025-05-01T11:00:00Z")]),
        exported_task(2, tasks[1], []),  # only the prediction: accepted as it is
        exported_task(3, tasks[2], [annotation(3, pred[2], "2025-05-01T10:00:00Z", cancelled=True)]),  # skipped
        # a later cancelled annotation is ignored: the submitted one counts (it confirms the prediction)
        exported_task(4, tasks[3], [annotation(4, pred[3], "2025-05-01T10:00:00Z"),
                                    annotation(5, other_class(pred[3], classes), "2025-05-01T12:00:00Z",
                                               cancelled=True)]),
    ]
    export[0]["data"] = dict(export[0]["data"], image="http://localhost:8080" + export[0]["data"]["image"])
    source = tmp_path / "project-1-at-2025-05-01.json"
    source.write_text(json.dumps(export))
    labelled = tmp_path / "labelled.csv"
    assert review.cli(["import", "--label_studio_json", str(source), "--review_csv", str(ls_batch / "review.csv"),
                       "--split_csv", str(labelled)]) == 0
    table = pd.read_csv(labelled)
    paths = [t["data"]["path"] for t in tasks]
    assert table["path"].tolist() == [paths[0], paths[1], paths[3]] and (table["split"] == "train").all()
    assert table["label"].tolist() == [fixed, pred[1], pred[3]]
    report = json.loads(source.with_suffix(".import.json").read_text())
    assert report["rows"] == 3 and report["corrected"] == 1 and report["confirmed"] == 2
    assert report["label_studio"] == {"annotated": 2, "accepted": 1, "skipped": 1, "unlabelled": 0, "error": 0}


def test_import_of_an_export_with_an_unknown_class_is_refused_whole(ls_batch, tiny_synthetic, tmp_path, capsys):
    tasks = json.loads((ls_batch / label_studio.TASKS_FILE).read_text())
    export = [exported_task(1, tasks[0], [annotation(1, "crazing", "2025-05-01T10:00:00Z")]),
              exported_task(7, tasks[1], [annotation(2, "dent", "2025-05-01T10:00:00Z")]),
              exported_task(8, tasks[2], [])]
    export[2]["data"] = dict(export[2]["data"], image="https://example.com/elsewhere.png")
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export))
    labelled = tmp_path / "labelled.csv"
    old = pd.read_csv(tiny_synthetic[1]).query("split == 'train'")["path"].iloc[0]  # a file under the data root
    pd.DataFrame({"path": [old], "label": ["crazing"], "split": ["train"]}).to_csv(labelled, index=False)
    before = labelled.read_bytes()
    assert review.cli(["import", "--label_studio_json", str(source), "--review_csv", str(ls_batch / "review.csv"),
                       "--split_csv", str(labelled)]) == 1
    err = capsys.readouterr().err
    assert "task 7: unknown class 'dent'" in err and "task 8: data.image 'https://example.com/elsewhere.png'" in err
    assert "2 problem(s), nothing imported" in err
    assert labelled.read_bytes() == before and not source.with_suffix(".import.json").exists()


def test_label_of_task_rules():
    def task(annotations, predicted="a"):
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [predicted]}}]
        return {"id": 1, "annotations": annotations, "predictions": [{"result": result}] if predicted else []}
    assert label_studio.label_of_task(task([]))["status"] == "accepted"
    assert label_studio.label_of_task(task([], predicted=None))["status"] == "unlabelled"
    two = label_studio.label_of_task(task([annotation(1, "b", "2025-01-02"), annotation(2, "c", "2025-01-01")]))
    assert (two["status"], two["label"], two["predicted"]) == ("annotated", "b", "a")
    empty = dict(annotation(3, "b", "2025-01-03"), result=[])
    assert label_studio.label_of_task(task([empty]))["status"] == "error"
    # Label Studio 1.2x: predictions listed by id, their content copied into each annotation
    copied = dict(annotation(4, "b", "2025-01-04"), prediction=task([])["predictions"][0])
    by_id = label_studio.label_of_task(dict(task([copied], predicted=None), predictions=[5]))
    assert (by_id["status"], by_id["label"], by_id["predicted"]) == ("annotated", "b", "a")
