"""The CVAT REST client against the stand-in CVAT server (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from cvat_watch.converter import Secret
from cvat_watch.cvatxml import loads_summary
from cvat_watch.daemon.cvat.client import CvatClient
from cvat_watch.errors import CvatExportError, CvatServerError
from cvat_watch.testing.cvat_server import ADMIN_TOKEN, CvatStandIn

BOB_TOKEN = "bobby-token-3f9a0c1d"
BOB_PASSWORD = "bobby-pw-7e21b44c"


@pytest.fixture
def server() -> Iterator[CvatStandIn]:
    with CvatStandIn() as stand_in:
        stand_in.add_project(3, tasks=5, jobs_per_task=10, images_per_task=20, ground_truth=True)
        stand_in.add_user("bobby", token=BOB_TOKEN, password=BOB_PASSWORD)
        yield stand_in


def client_for(server: CvatStandIn, **options: object) -> CvatClient:
    options.setdefault("token", Secret(ADMIN_TOKEN))
    options.setdefault("backoff", 0.01)
    return CvatClient(server.url, **options)  # type: ignore[arg-type]


def listing_requests(server: CvatStandIn, start: int) -> int:
    return sum(
        1 for method, path in server.requests[start:] if method == "GET" and path.startswith("/api/jobs")
    )


@pytest.mark.parametrize("page_size", [1, 7, 10, 54, 55, 500])
def test_job_listing_follows_next_in_at_most_ceil_plus_one_requests(
    server: CvatStandIn, page_size: int
) -> None:
    total = len(server.jobs)  # 50 annotation jobs + 5 ground-truth jobs
    with client_for(server, page_size=page_size) as client:
        before = len(server.requests)
        jobs = client.list_jobs(project=3)
    assert sorted(job["id"] for job in jobs) == sorted(server.jobs)
    assert listing_requests(server, before) <= math.ceil(total / page_size) + 1
    assert listing_requests(server, before) == math.ceil(total / page_size)


def test_listing_of_a_task_only_holds_its_jobs(server: CvatStandIn) -> None:
    with client_for(server) as client:
        jobs = client.list_jobs(task=2)
        (task,) = client.list_tasks(task=2)
    assert {job["task_id"] for job in jobs} == {2}
    assert "ground_truth" in {job["type"] for job in jobs}
    assert task["name"] == server.tasks[2].name


def test_export_runs_the_asynchronous_flow_and_returns_annotations_xml(server: CvatStandIn) -> None:
    server.export_delay = 0.3
    with client_for(server) as client:
        before = len(server.requests)
        result = client.export(project=3)
    summary = loads_summary(result.xml)
    assert summary.kind == "project"
    assert sum(summary.image_counts.values()) == 100
    flow = [(method, path.split("?")[0]) for method, path in server.requests[before:]]
    assert flow[0] == ("POST", "/api/projects/3/dataset/export")
    assert flow[-1] == ("GET", "/api/projects/3/annotations")
    polls = flow[1:-1]
    assert polls and all(step == ("GET", "/api/requests/" + result.rq_id.replace(":", "%3A").replace("@", "%40"))
                         for step in polls)  # fmt: skip
    assert result.rq_id == "export:project-3-annotations-in-CVAT_for_images_1@1-format-by-1"


def test_check_server_reports_the_version(server: CvatStandIn) -> None:
    with client_for(server) as client:
        assert client.check_server() == "2.23.1"


def test_a_failed_export_carries_the_servers_last_line_and_may_be_retried(server: CvatStandIn) -> None:
    server.export_fails = True
    with client_for(server) as client, pytest.raises(CvatExportError) as caught:
        client.export(task=1)
    assert caught.value.retry
    assert "failed on the server" in str(caught.value)
    assert "ValueError: stand-in export failure" in str(caught.value)
    assert server.url in str(caught.value)


@pytest.mark.parametrize("corruption", ["truncated", "no-xml"])
def test_an_invalid_archive_is_an_export_error(server: CvatStandIn, corruption: str) -> None:
    server.corrupt_download = corruption  # type: ignore[assignment]
    with client_for(server) as client, pytest.raises(CvatExportError) as caught:
        client.export(task=1)
    assert caught.value.retry
    assert ("not a valid zip" if corruption == "truncated" else "no annotations.xml") in str(caught.value)


def test_an_export_that_never_finishes_times_out(server: CvatStandIn) -> None:
    server.hold_exports()
    with client_for(server, export_timeout=0.5) as client, pytest.raises(CvatExportError) as caught:
        client.export(task=1)
    assert "still started" in str(caught.value)
    assert caught.value.retry


def test_401_names_the_server_and_the_token_and_never_shows_it(server: CvatStandIn) -> None:
    wrong = "not-a-valid-token-91d2"
    with client_for(server, token=Secret(wrong)) as client, pytest.raises(CvatServerError) as caught:
        client.list_jobs(project=3)
    message = str(caught.value)
    assert caught.value.status == 401 and not caught.value.retry
    assert server.url in message and "Invalid token." in message and "token_env" in message
    assert wrong not in message and wrong not in repr(caught.value)


def test_wrong_password_is_a_401_without_the_password(server: CvatStandIn) -> None:
    with (
        client_for(server, token=None, username="bobby", password=Secret("wrong-pw-55")) as client,
        pytest.raises(CvatServerError) as caught,
    ):
        client.list_jobs(project=3)
    assert caught.value.status == 401
    assert "wrong-pw-55" not in str(caught.value)


def test_basic_auth_works_and_a_non_admin_sees_only_their_jobs(server: CvatStandIn) -> None:
    server.jobs[4].assignee = "bobby"
    with client_for(server, token=None, username="bobby", password=Secret(BOB_PASSWORD)) as client:
        assert [job["id"] for job in client.list_jobs(project=3)] == [4]


def test_403_says_organization_and_permissions(server: CvatStandIn) -> None:
    with client_for(server, token=Secret(BOB_TOKEN)) as client, pytest.raises(CvatServerError) as caught:
        client.export(project=3)
    message = str(caught.value)
    assert caught.value.status == 403
    assert "organization" in message and "role" in message
    assert BOB_TOKEN not in message


def test_organization_is_sent_as_x_organization(server: CvatStandIn) -> None:
    server.add_organization("acme")
    server.add_project(9, tasks=1, jobs_per_task=2, images_per_task=4, first_task_id=90, first_job_id=900,
                       organization="acme")  # fmt: skip
    with client_for(server) as outside:
        assert {job["project_id"] for job in outside.list_jobs(project=9)} == set()
        with pytest.raises(CvatServerError) as caught:
            outside.export(project=9)
        assert caught.value.status == 404 and "organization" in str(caught.value)
    with client_for(server, organization="acme") as inside:
        assert sorted(job["id"] for job in inside.list_jobs(project=9)) == [900, 901]
        assert loads_summary(inside.export(project=9).xml).image_counts


def test_5xx_is_retried_with_backoff(server: CvatStandIn) -> None:
    server.fail_next(2, status=503)
    with client_for(server, retries=3) as client:
        assert len(client.list_jobs(project=3)) == len(server.jobs)


def test_429_retry_after_is_honoured_then_carried_when_retries_run_out(server: CvatStandIn) -> None:
    server.fail_next(1, status=429, retry_after=0.2)
    with client_for(server, retries=2) as client:
        before = len(server.requests)
        assert client.list_jobs(task=1)
        assert server.requests[before][1] == server.requests[before + 1][1]  # the same request, again
    server.fail_next(5, status=429, retry_after=7)
    with (
        client_for(server, retries=1, max_inline_wait=1.0) as client,
        pytest.raises(CvatServerError) as caught,
    ):
        client.list_jobs(task=1)
    # Longer than the client waits inline: handed to the caller, which polls again later.
    assert caught.value.retry and caught.value.retry_after == 7 and caught.value.status == 429
    assert "wait 7 s" in str(caught.value)


def test_a_server_that_is_down_is_a_retryable_error(server: CvatStandIn) -> None:
    server.go_down()
    with client_for(server, retries=1) as client, pytest.raises(CvatServerError) as caught:
        client.list_jobs(project=3)
    assert caught.value.retry and "cannot connect" in str(caught.value)
    server.come_back()
    with client_for(server) as client:
        assert client.list_jobs(project=3)


def test_a_server_without_the_requests_api_gets_a_clear_error(server: CvatStandIn) -> None:
    server.requests_api = False
    server.version = "2.3.0"
    with client_for(server) as client:
        with pytest.raises(CvatServerError) as caught:
            client.check_server()
        assert "CVAT 2.3.0 has no /api/requests" in str(caught.value)
        with pytest.raises(CvatServerError) as caught:
            client.export(project=3)
        assert "no rq_id" in str(caught.value)
