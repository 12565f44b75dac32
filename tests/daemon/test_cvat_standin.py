"""The stand-in CVAT server answers as the recorded CVAT v2.23.1 did: same statuses, keys and shapes.

The recordings are real request/response pairs (``../shared/corpus/cvat-2.23/recordings``); each
test replays one recorded request against the stand-in (set up with the recording's ids) and
compares what matters to a client. Skipped where the corpus is absent.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cvat_watch.testing.cvat_server import ADMIN_TOKEN, CvatStandIn, sign
from cvat_watch.testing.receiver import Receiver

ADMIN = {"Authorization": f"Token {ADMIN_TOKEN}", "Accept": "application/vnd.cvat+json"}
BOB_TOKEN = "standin-bobby-token"


def recording(corpus: Path, number: int) -> dict[str, Any]:
    folder = corpus / "cvat-2.23" / "recordings" / "http"
    (path,) = folder.glob(f"{number:03d}_*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def shape(value: Any) -> Any:
    """Keys and kinds, not values: what a client's code depends on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    return type(value).__name__


def same_keys(ours: Any, theirs: Any, where: str = "") -> None:
    """Every key the recording has, we have (in the same order), recursively; None may stand for a value."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        assert list(ours) == list(theirs), f"{where}: {list(ours)} != {list(theirs)}"
        for key in theirs:
            if theirs[key] is not None and ours[key] is not None:
                same_keys(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list) and theirs and ours:
        same_keys(ours[0], theirs[0], f"{where}[0]")


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + "?" + parts.query


@pytest.fixture
def server() -> Iterator[CvatStandIn]:
    with CvatStandIn() as stand_in:
        # The recording's layout: project 3, tasks 3..5, jobs from 5 up, one ground-truth job.
        stand_in.add_project(3, tasks=3, jobs_per_task=2, images_per_task=4, first_task_id=3, first_job_id=5,
                             ground_truth=True)  # fmt: skip
        bob = stand_in.add_user("bobby", token=BOB_TOKEN)
        stand_in.patch_job(6, {"assignee": bob.id})
        yield stand_in


@pytest.fixture
def client(server: CvatStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=ADMIN) as http:
        yield http


def test_about_and_job_pages_have_the_recorded_shape(corpus: Path, client: httpx.Client) -> None:
    about = client.get("/api/server/about")
    assert about.status_code == 200
    assert about.json()["version"] == recording(corpus, 38)["response"]["body"]["version"]
    same_keys(about.json(), recording(corpus, 38)["response"]["body"])

    first = client.get("/api/jobs", params={"project_id": 3, "page_size": 2})
    recorded = recording(corpus, 39)["response"]["body"]
    assert first.status_code == 200
    same_keys(first.json(), recorded)
    assert path_and_query(first.json()["next"]) == path_and_query(recorded["next"])
    assert first.json()["previous"] is None
    second = client.get(first.json()["next"])
    recorded_second = recording(corpus, 40)["response"]["body"]
    assert path_and_query(second.json()["next"]) == path_and_query(recorded_second["next"])
    assert path_and_query(second.json()["previous"]) == path_and_query(recorded_second["previous"])
    # Newest first, as CVAT lists them; the ground-truth job is in the listing.
    ids = [job["id"] for job in first.json()["results"]]
    assert ids == sorted(ids, reverse=True)
    everything = client.get("/api/jobs", params={"project_id": 3, "page_size": 100}).json()
    assert "ground_truth" in {job["type"] for job in everything["results"]}
    assert shape(everything["results"][0]["issues"]) == shape(recorded["results"][0]["issues"])
    bobs = [job for job in everything["results"] if job["assignee"]]
    recorded_assignee = recording(corpus, 42)["response"]["body"]["results"][0]["assignee"]
    same_keys(bobs[0]["assignee"], recorded_assignee)


def test_tasks_and_single_job_have_the_recorded_shape(corpus: Path, client: httpx.Client) -> None:
    tasks = client.get("/api/tasks", params={"project_id": 3})
    same_keys(tasks.json(), recording(corpus, 45)["response"]["body"])
    job = client.get("/api/jobs/5")
    same_keys(job.json(), recording(corpus, 43)["response"]["body"])
    by_task = client.get("/api/jobs", params={"task_id": 3, "page_size": 100}).json()
    assert {j["task_id"] for j in by_task["results"]} == {3}
    assert "ground_truth" in {j["type"] for j in by_task["results"]}  # as in recording 047


def test_patch_stage_without_state_resets_state_to_new(corpus: Path, client: httpx.Client) -> None:
    client.patch("/api/jobs/5", json={"state": "in progress"})
    recorded = recording(corpus, 3)
    answer = client.patch("/api/jobs/5", json=recorded["request"]["body"])
    assert answer.status_code == recorded["response"]["status"] == 200
    assert (answer.json()["stage"], answer.json()["state"]) == ("validation", "new")
    assert (recorded["response"]["body"]["stage"], recorded["response"]["body"]["state"]) == (
        "validation",
        "new",
    )
    same_keys(answer.json(), recorded["response"]["body"])
    bad = recording(corpus, 58)
    answer = client.patch("/api/jobs/5", json=bad["request"]["body"])
    assert (answer.status_code, answer.json()) == (bad["response"]["status"], bad["response"]["body"])


def test_export_flow_matches_the_recorded_one(
    corpus: Path, client: httpx.Client, server: CvatStandIn
) -> None:
    post = recording(corpus, 19)
    answer = client.post("/api/projects/3/dataset/export", params=post["request"]["query"])
    assert answer.status_code == post["response"]["status"] == 202
    assert answer.json() == post["response"]["body"]  # same rq_id for the same project, format and user
    rq_id = answer.json()["rq_id"]
    statuses = []
    while True:
        status = client.get("/api/requests/" + rq_id.replace(":", "%3A").replace("@", "%40"))
        assert status.status_code == 200
        same_keys(status.json(), recording(corpus, 21)["response"]["body"])
        statuses.append(status.json()["status"])
        if status.json()["status"] in ("finished", "failed"):
            break
    assert statuses[-1] == "finished"
    assert set(statuses) <= {"queued", "started", "finished"}
    result_url = status.json()["result_url"]
    assert path_and_query(result_url) == path_and_query(
        recording(corpus, 21)["response"]["body"]["result_url"]
    )
    download = client.get(result_url)
    recorded_download = recording(corpus, 22)["response"]
    assert download.status_code == recorded_download["status"]
    assert download.headers["content-type"] == recorded_download["headers"]["content-type"]
    with zipfile.ZipFile(io.BytesIO(download.content)) as zipped:
        assert zipped.namelist() == recorded_download["body"]["zip_members"]
        assert zipped.read("annotations.xml").startswith(
            b'<?xml version="1.0" encoding="utf-8"?>\n<annotations>'
        )


def test_a_failing_export_ends_failed_with_a_traceback(
    corpus: Path, client: httpx.Client, server: CvatStandIn
) -> None:
    server.export_fails = True
    rq_id = client.post("/api/tasks/5/dataset/export", params={"format": "CVAT for images 1.1",
                                                                 "save_images": "false"}).json()["rq_id"]  # fmt: skip
    seen: list[str] = []
    while not seen or seen[-1] not in ("finished", "failed"):
        seen.append(client.get(f"/api/requests/{rq_id}").json()["status"])
    assert set(seen) <= {"queued", "started", "failed"}
    failed = client.get(f"/api/requests/{rq_id}").json()
    recorded = recording(corpus, 34)["response"]["body"]
    assert failed["status"] == recorded["status"] == "failed"
    assert failed["message"].startswith("Traceback (most recent call last):")
    assert failed["result_url"] is None
    same_keys(failed, recorded)


@pytest.mark.parametrize(
    ("number", "request_kwargs"),
    [
        (49, {"method": "GET", "url": "/api/jobs", "headers": {"Authorization": "Token 00000bad"}}),
        (50, {"method": "GET", "url": "/api/jobs", "headers": {"Authorization": ""}}),
        (52, {"method": "PATCH", "url": "/api/jobs/5", "headers": {"Authorization": f"Token {BOB_TOKEN}"},
              "json": {"state": "completed"}}),
        (54, {"method": "POST", "url": "/api/tasks/3/dataset/export", "headers": {"Authorization": f"Token {BOB_TOKEN}"},
              "params": {"format": "CVAT for images 1.1", "save_images": "false"}}),
        (55, {"method": "GET", "url": "/api/jobs/999999"}),
        (59, {"method": "POST", "url": "/api/tasks/3/dataset/export",
              "params": {"format": "No such format 9.9", "save_images": "false"}}),
    ],
)  # fmt: skip
def test_errors_have_the_recorded_status_and_body(
    corpus: Path, client: httpx.Client, number: int, request_kwargs: dict[str, Any]
) -> None:
    recorded = recording(corpus, number)["response"]
    headers = request_kwargs.pop("headers", {})
    request = client.build_request(**request_kwargs)
    for name, value in headers.items():
        if value:
            request.headers[name] = value
        else:
            del request.headers[name]
    answer = client.send(request)
    assert answer.status_code == recorded["status"]
    assert answer.json() == recorded["body"]
    if recorded["status"] == 401:
        assert answer.headers["www-authenticate"] == recorded["headers"]["www-authenticate"]


def test_unknown_request_id_is_an_html_404(corpus: Path, client: httpx.Client) -> None:
    recorded = recording(corpus, 57)["response"]
    answer = client.get("/api/requests/export%3Atask-999999-annotations-in-CVAT_for_images_1.1-format-by-1")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == recorded["headers"]["content-type"]
    assert answer.text == recorded["body"]


def test_a_non_admin_sees_only_their_own_jobs(corpus: Path, server: CvatStandIn) -> None:
    recorded = recording(corpus, 53)["response"]["body"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {BOB_TOKEN}"}) as bob:
        page = bob.get("/api/jobs", params={"project_id": 3, "page_size": 100}).json()
    assert page["count"] == recorded["count"] == 1
    assert page["results"][0]["id"] == recorded["results"][0]["id"] == 6


def test_webhook_deliveries_look_like_cvats(corpus: Path, server: CvatStandIn) -> None:
    recorded = json.loads(
        (corpus / "cvat-2.23" / "recordings" / "webhooks" / "072_update_job.json").read_text()
    )
    with Receiver() as receiver:
        server.add_webhook(receiver.url("/cvat-hook"), secret="s3cret", project_id=3)
        assert server.patch_job(7, {"state": "in progress"}).status_code == 200
        (got,) = receiver.wait_for(1)
    body = json.loads(got.body)
    theirs = recorded["request"]["body"]
    assert list(body) == list(theirs)
    same_keys(body["job"], theirs["job"])
    same_keys(body["sender"], theirs["sender"])
    assert body["event"] == theirs["event"] == "update:job"
    # before_update holds the old values of the changed fields only, updated_date among them.
    assert body["before_update"] == {"state": "new", "updated_date": body["before_update"]["updated_date"]}
    assert set(theirs["before_update"]) <= set(theirs["job"]) and "updated_date" in theirs["before_update"]
    recorded_headers = {name.lower() for name, _ in recorded["request"]["headers"]}
    assert {"content-type", "user-agent", "x-signature-256"} <= recorded_headers
    assert got.headers["x-signature-256"] == sign("s3cret", got.body)
    # The recorded signature is the same function of the recorded body under the recorded secret.
    secret = "cvat-watch-dummy-webhook-secret"
    assert sign(secret, recorded["request"]["body_text"].encode()) == recorded["signature"]["header"]
