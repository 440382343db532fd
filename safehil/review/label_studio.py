"""Label Studio's formats (written from its documented JSON, no Label Studio code needed): the
tasks to import, with the model's label as a pre-annotation (`import_tasks`), the labeling
config of an image-classification project (`labeling_config`), a how-to (`how_to`), and a
Label Studio JSON export read back into the review table that `review.py import` validates
(`review_table_from_export`).

Images are not uploaded: each task's `data.image` is a URL of Label Studio's local-files
serving, `/data/local-files/?d=<file relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>`.

Reading an export, per task (`label_of_task`):
- annotations marked `was_cancelled` (the person pressed Skip) are ignored;
- of the other annotations the latest (updated_at, then created_at, then id) gives the label:
  the choice of its `label` Choices result (a submitted pre-annotation counts like any other);
- with no annotation at all, the model's prediction is taken as accepted (as an empty
  corrected_label in review.csv): the task's `predictions[].result` choice. Label Studio's
  default JSON export holds only tasks with annotations, so such tasks arrive only from an
  export of all tasks (API: export?exportType=JSON&download_all_tasks=true). Where the export
  lists predictions by id only (Label Studio 1.2x), the model's label comes from the
  annotation's copy of the prediction or from the batch's review.csv;
- a task with only cancelled annotations, or with neither annotation nor prediction, is left
  out and counted; a task whose image URL is not a local-files URL, or whose latest annotation
  has no single choice, is an error.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape

import pandas as pd

LOCAL_FILES_PATH = "/data/local-files/"
FROM_NAME, TO_NAME = "label", "image"  # the Choices and Image tag names of `labeling_config`
TASKS_FILE, CONFIG_FILE, HOW_TO_FILE = "label_studio_tasks.json", "label_studio_config.xml", "README.txt"


# ============================================================================ export

def local_files_url(file: str | Path, document_root: str | Path) -> str:
    """'/data/local-files/?d=<file relative to document_root>' (URL-quoted, '/' kept). The file
    must lie under the document root: Label Studio serves nothing else."""
    file, root = Path(file).resolve(), Path(document_root).resolve()
    if not file.is_relative_to(root):
        raise ValueError(f"{file} is not under the Label Studio document root {root}; start Label Studio with "
                         f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to a folder that holds it")
    return f"{LOCAL_FILES_PATH}?d={quote(file.relative_to(root).as_posix(), safe='/')}"


def _plain(value):
    """A JSON-safe scalar: numpy numbers become Python numbers, NaN becomes None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def import_tasks(rows: pd.DataFrame, data_root: str | Path, document_root: str | Path,
                 model_version: str) -> list[dict]:
    """One Label Studio task per review row (path, predicted_label, uncertainty, referred, risk
    and, with two models, predicted_label_b, uncertainty_b, disagreement).

    data: image (local-files URL), path (relative to the data root) and the row's numbers;
    predictions: model A's label as a `choices` pre-annotation with score = risk.
    """
    extra = [c for c in ("uncertainty", "referred", "risk", "disagreement", "predicted_label_b", "uncertainty_b")
             if c in rows.columns]
    tasks = []
    for row in rows.to_dict("records"):
        data = {"image": local_files_url(Path(data_root) / row["path"], document_root), "path": row["path"]}
        data.update({c: _plain(row[c]) for c in extra if _plain(row[c]) not in (None, "")})
        result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                   "value": {"choices": [row["predicted_label"]]}}]
        tasks.append({"data": data, "predictions": [{"model_version": model_version,
                                                      "score": _plain(row.get("risk")), "result": result}]})
    return tasks


def labeling_config(class_names: list[str]) -> str:
    """The labeling config: the image and one single-choice question with a Choice per class."""
    choices = "\n".join(f'    <Choice value="{escape(name, {chr(34): "&quot;"})}"/>' for name in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def how_to(document_root: str | Path, data_root: str | Path, batch_dir: str | Path) -> str:
    """README.txt of an export: serve the files, create the project, import, export, import back."""
    batch = Path(batch_dir)
    return f"""Reviewing this batch in Label Studio
=====================================

1. Serve the images from this machine (Label Studio reads them in place, nothing is uploaded):

     export LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true
     export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={Path(document_root).resolve()}
     label-studio start

   Every task's image is /data/local-files/?d=<path relative to that document root>.

2. Create a project. Settings > Labeling Interface > Code: paste {CONFIG_FILE}.
   Settings > Cloud Storage > Add Source Storage > Local files, absolute local path
   {Path(data_root).resolve()} (it must lie below the document root: Label Studio refuses the
   document root itself). Save it, but do NOT sync it: the tasks come from step 3, a sync would
   add bare duplicates. Label Studio serves a file only when such a storage holds it.

3. Import {batch / TASKS_FILE} (Import button). Each task shows the model's label as a
   pre-annotation (prediction score = risk; riskiest first when sorted by prediction score).

4. Label: accept the pre-annotation or pick the right class, then Submit. Skip = not labelled.

5. Export > JSON, then append the labels to a split CSV:

     python review.py import --label_studio_json <the downloaded export>.json \\
         --review_csv {batch / "review.csv"} --split_csv data_splits/<yours>.csv

   Rule: the latest submitted annotation of a task is its label; skipped (cancelled) ones are
   ignored; a task that was only skipped is left out. The default export holds only annotated
   tasks; an export of all tasks (API: export?exportType=JSON&download_all_tasks=true) also
   brings the tasks nobody annotated, which then keep the model's label (accepted as is).
   The import checks every task like review.csv rows (class names, files under the data root,
   duplicates, paths already labelled) and writes nothing when any is wrong.
"""


# ============================================================================ reading an export back

def _choice(result: list, where: str) -> tuple[str | None, str | None]:
    """The single choice of the `label` Choices in an annotation/prediction result -> (label, error)."""
    picked = [item for item in (result or []) if isinstance(item, dict) and item.get("type") == "choices"
              and item.get("from_name", FROM_NAME) == FROM_NAME]
    choices = [c for item in picked for c in ((item.get("value") or {}).get("choices") or [])]
    if len(choices) == 1:
        return str(choices[0]), None
    if not choices:
        return None, f"{where} has no choice for '{FROM_NAME}'"
    return None, f"{where} has {len(choices)} choices {choices}; one class per image"


def _latest(annotations: list[dict]) -> dict:
    return max(annotations, key=lambda a: (str(a.get("updated_at") or ""), str(a.get("created_at") or ""),
                                           a.get("id") or 0))


def malformed(task: dict) -> str | None:
    """Why a task's fields do not have Label Studio's shapes (data an object; annotations and
    predictions lists of objects, each result a list), or None. Such a task is an error, never
    read as 'no annotation' (that would confirm the model's label)."""
    tid = task.get("id", "?")
    if not isinstance(task.get("data", {}), dict):
        return f"task {tid}: data is a {type(task['data']).__name__}, not an object"
    for field in ("annotations", "predictions"):
        value = task.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            return f"task {tid}: {field} is a {type(value).__name__}, not a list; export the project again as JSON"
        for item in value:
            if field == "predictions" and isinstance(item, int):  # Label Studio 1.2x: predictions by id
                continue
            if not isinstance(item, dict):
                return f"task {tid}: an item of {field} is a {type(item).__name__}, not an object"
            if not isinstance(item.get("result", []), list):
                return f"task {tid}: a result in {field} is a {type(item['result']).__name__}, not a list"
    return None


def label_of_task(task: dict) -> dict:
    """{'predicted': model label or '', 'label': the person's label or '', 'status', 'error'} of one
    exported task. status: 'annotated', 'accepted' (no annotation: the prediction stands),
    'skipped' (only cancelled annotations), 'unlabelled' (nothing at all) or 'error'."""
    tid = task.get("id", "?")
    predicted, error = "", malformed(task)
    if error:
        return {"predicted": "", "label": "", "status": "error", "error": error}
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    # the task's predictions in full, or (Label Studio 1.2x exports them as ids) as copied into an annotation
    for prediction in list(task.get("predictions") or []) + [a.get("prediction") for a in annotations]:
        if isinstance(prediction, dict):
            label, _ = _choice(prediction.get("result"), f"task {tid}'s prediction")
            if label is not None:
                predicted = label
                break
    live = [a for a in annotations if not a.get("was_cancelled")]
    if live:
        label, error = _choice(_latest(live).get("result"), f"task {tid}: its latest annotation")
        return {"predicted": predicted, "label": label or "", "status": "error" if error else "annotated",
                "error": error}
    if annotations:
        return {"predicted": predicted, "label": "", "status": "skipped", "error": None}
    return {"predicted": predicted, "label": "", "status": "accepted" if predicted else "unlabelled",
            "error": None}


def path_from_url(url: str, document_root: str | Path, data_root: str | Path) -> str | None:
    """A local-files URL (absolute or relative, as Label Studio exports it) -> the file's path
    relative to the data root as written ('..' parts kept for the validator to refuse), or None
    when the URL is not a local-files URL."""
    parts = urlsplit(str(url))
    if parts.path.rstrip("/") != LOCAL_FILES_PATH.rstrip("/"):
        return None
    d = parse_qs(parts.query).get("d")
    if not d:
        return None
    file = os.path.join(os.path.abspath(document_root), d[0])
    return Path(os.path.relpath(file, os.path.abspath(data_root))).as_posix()


def review_table_from_export(tasks, document_root: str | Path, data_root: str | Path, source: str,
                             predicted_by_path: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict, list[str]]:
    """A Label Studio JSON export -> (review table: path, predicted_label, corrected_label, task_id;
    counts per status; errors). The table goes through the same validation as review.csv rows.
    predicted_by_path: the model's label per path (the batch's review.csv), used where the export
    carries no prediction content (Label Studio 1.2x lists a task's predictions by id only)."""
    columns = ["path", "predicted_label", "corrected_label", "task_id"]
    if not isinstance(tasks, list):
        return pd.DataFrame(columns=columns), {}, [
            f"{source}: not a Label Studio JSON export (a list of tasks expected, found {type(tasks).__name__})"]
    rows, errors = [], []
    counts = {s: 0 for s in ("annotated", "accepted", "skipped", "unlabelled", "error")}
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            errors.append(f"{source}: item {i} is not a task")
            continue
        tid = task.get("id", f"#{i + 1}")
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        image = data.get(TO_NAME)
        path = path_from_url(image, document_root, data_root) if image else None
        found = label_of_task(task)
        if not found["predicted"] and path in (predicted_by_path or {}):
            found["predicted"] = predicted_by_path[path]
            found["status"] = "accepted" if found["status"] == "unlabelled" else found["status"]
        counts[found["status"]] += 1
        if found["error"]:
            errors.append(f"{source}: {found['error']}")
        if path is None:
            errors.append(f"{source}: task {tid}: data.{TO_NAME} {image!r} is not a {LOCAL_FILES_PATH}?d=... URL")
            continue
        if found["status"] in ("skipped", "unlabelled"):
            continue
        rows.append({"path": path, "predicted_label": found["predicted"], "corrected_label": found["label"],
                     "task_id": tid})
    return pd.DataFrame(rows, columns=columns), counts, errors
