"""Against a real Label Studio server (skipped unless the `label-studio` command is installed, or
LABEL_STUDIO_BIN names it; it is not a dependency): create a project from our labeling config,
serve the images through local-files storage, import our tasks through the API, annotate two,
skip one, export JSON and import that export into a split CSV. Starting the server takes a
minute or two."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from safehil.review import label_studio
import review

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def label_studio_command() -> str:
    command = os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")
    if not command:
        pytest.skip("label-studio is not installed (set LABEL_STUDIO_BIN to run this test)")
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str):
        self.base = base

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"Token {TOKEN}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None
        return payload if raw else json.loads(payload)


@pytest.fixture(scope="module")
def server(tiny_synthetic, tmp_path_factory):
    command = label_studio_command()
    root, _ = tiny_synthetic
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path_factory.mktemp("ls_data")),
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root.resolve().parent),  # the export's default
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}
    log = open(tmp_path_factory.mktemp("ls_log") / "server.log", "w")
    proc = subprocess.Popen([command, "start", "--no-browser", "--port", str(port), "--username", "dev@example.com",
                             "--password", "devpass123", "--user-token", TOKEN], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    api = Api(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 300
        while True:
            try:
                api.call("GET", "/api/projects")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Label Studio did not start; see {log.name}")
                time.sleep(2)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_tasks_go_through_label_studio_and_its_export_imports(server, checkpoint_pair, tiny_synthetic, tmp_path):
    a, b = checkpoint_pair
    root, _ = tiny_synthetic
    batch = tmp_path / "batch"
    review.main(review.ExportConfig(checkpoints=(str(a), str(b)), split="test", T=4, display_size=24,
                                    device="cpu", out_dir=str(batch), format="label_studio", max_images=6))
    tasks = json.loads((batch / label_studio.TASKS_FILE).read_text())
    classes = json.loads((batch / "review_meta.json").read_text())["class_names"]
    project = server.call("POST", "/api/projects", {"title": "review batch",
                                                    "label_config": (batch / label_studio.CONFIG_FILE).read_text()})
    server.call("POST", "/api/storages/localfiles", {"project": project["id"], "path": str(root.resolve()),
                                                     "use_blob_urls": True, "title": "images"})
    server.call("POST", f"/api/projects/{project['id']}/import", tasks)
    listed = server.call("GET", f"/api/tasks?project={project['id']}&page_size=100")
    listed = sorted(listed["tasks"] if isinstance(listed, dict) else listed, key=lambda t: t["id"])
    assert len(listed) == 6 and [t["data"]["path"] for t in listed] == [t["data"]["path"] for t in tasks]
    png = server.call("GET", tasks[0]["data"]["image"], raw=True)  # local-files serving works as documented
    assert png.startswith(b"\x89PNG")
    predicted = [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks]
    fixed = classes[(classes.index(predicted[0]) + 1) % len(classes)]
    choice = lambda label: [{"from_name": "label", "to_name": "image", "type": "choices",  # noqa: E731
                             "value": {"choices": [label]}}]
    server.call("POST", f"/api/tasks/{listed[0]['id']}/annotations/", {"result": choice(fixed)})
    server.call("POST", f"/api/tasks/{listed[1]['id']}/annotations/", {"result": choice(predicted[1])})
    server.call("POST", f"/api/tasks/{listed[2]['id']}/annotations/", {"result": [], "was_cancelled": True})
    paths = [t["data"]["path"] for t in tasks]
    imported = {}
    for everything in ("false", "true"):  # the default export holds only the annotated tasks (skipped included)
        export = server.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON"
                                    f"&download_all_tasks={everything}")
        source = tmp_path / f"export_{everything}.json"
        source.write_text(json.dumps(export))
        labelled = tmp_path / f"labelled_{everything}.csv"
        assert review.cli(["import", "--label_studio_json", str(source), "--review_csv", str(batch / "review.csv"),
                           "--split_csv", str(labelled)]) == 0
        imported[everything] = (pd.read_csv(labelled).set_index("path")["label"],
                                json.loads(source.with_suffix(".import.json").read_text()))
    table, report = imported["false"]
    assert table.to_dict() == {paths[0]: fixed, paths[1]: predicted[1]}  # the skipped task is left out
    assert report["corrected"] == 1 and report["confirmed"] == 1 and report["label_studio"]["skipped"] == 1
    table, report = imported["true"]
    assert len(table) == 5 and paths[2] not in table.index
    assert table[paths[0]] == fixed and all(table[p] == predicted[i] for i, p in enumerate(paths) if i != 0 and i != 2)
    assert report["label_studio"] == {"annotated": 2, "accepted": 3, "skipped": 1, "unlabelled": 0, "error": 0}
