"""A stand-in CVAT server for tests and benchmarks: a real HTTP server on 127.0.0.1.

It holds projects, tasks and jobs in memory and answers the part of CVAT v2.23.1's REST API that
cvat-watch uses, in the shapes the recordings in ``../shared/corpus/cvat-2.23/recordings`` show
(``tests/daemon/test_cvat_standin.py`` compares the two):

- ``GET /api/server/about``; ``GET /api/requests`` and ``GET /api/requests/{rq_id}``;
- ``GET /api/jobs?project_id=|task_id=&page_size=&page=`` with CVAT's ``count/next/previous/results``
  (jobs newest first, ``next`` URLs with the query sorted as Django REST framework writes them);
- ``GET``/``PATCH /api/jobs/{id}`` (a stage change without a state resets the state to "new");
- ``GET /api/tasks?project_id=`` and ``GET /api/tasks/{id}``;
- the asynchronous export: ``POST /api/{projects|tasks}/{id}/dataset/export`` → 202 ``rq_id``;
  the request goes ``queued`` → ``started`` → ``finished`` (``result_url``) or ``failed``
  (a traceback in ``message``); the zip at ``result_url`` holds ``annotations.xml``;
- errors with CVAT's bodies: 401 (no or bad credentials), 403, 404 (JSON, or Django's HTML page
  for an unknown request id), 400 (bad state, unknown export format);
- CVAT-style webhooks (``X-Signature-256: sha256=<hex HMAC-SHA256 of the body>``) sent by one
  worker thread, never retried, on job PATCHes (and task status changes).

Switches for faults: :meth:`CvatStandIn.go_down` / :meth:`come_back` (connection refused),
:meth:`fail_next` (5xx or 429 with ``Retry-After``), ``export_fails``, ``hold_exports`` (an export
stays ``started`` until released) and ``corrupt_download``.

The annotations in an export come from :mod:`cvat_watch.testing.generate`, so they look like a
real "CVAT for images 1.1" export of the same tasks, jobs and frames. Nothing here is used by the
library or the daemon.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import io
import json
import queue
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import attrs
import httpx

from cvat_watch.testing.generate import generate_export, plan_tasks

__all__ = [
    "ADMIN_TOKEN",
    "EXPORT_FORMAT",
    "CvatStandIn",
    "Delivery",
    "StandInJob",
    "StandInTask",
    "sign",
]

ADMIN_TOKEN = "standin-admin-token-0000000000000000000000"
EXPORT_FORMAT = "CVAT for images 1.1"
VERSION = "2.23.1"
_KNOWN_FORMATS = ("CVAT for images 1.1", "CVAT for video 1.1")
_STATES = ("new", "in progress", "completed", "rejected")
_STAGES = ("annotation", "validation", "acceptance")
_JSON = "application/vnd.cvat+json"
_NOT_FOUND_HTML = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
_FAILED_EXPORT = (
    "Traceback (most recent call last):\n"
    '  File "<site-packages>/rq/worker.py", line 1431, in perform_job\n'
    "    rv = job.perform()\n"
    '  File "<cvat-server>/cvat/apps/dataset_manager/views.py", line 145, in export\n'
    "    export_fn(db_instance.id, temp_file, dst_format,\n"
    "ValueError: stand-in export failure\n"
)


def sign(secret: str, body: bytes) -> str:
    """CVAT's webhook signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _rq_id(kind: str, target: object, fmt: str, user_id: int) -> str:
    """CVAT's request id: ``export:project-3-annotations-in-CVAT_for_images_1@1-format-by-1``."""
    return (
        f"export:{kind}-{target}-annotations-in-{fmt.replace(' ', '_').replace('.', '@')}-format-by-{user_id}"
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define
class StandInUser:
    id: int
    username: str
    admin: bool = False
    password: str | None = None


@attrs.define
class StandInTask:
    id: int
    name: str
    project_id: int | None
    size: int
    subset: str = ""
    owner: str = "admin"
    organization: str | None = None
    status: str = "annotation"
    created: str = attrs.field(factory=_now)
    updated: str = attrs.field(factory=_now)


@attrs.define
class StandInJob:
    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    stage: str = "annotation"
    state: str = "new"
    assignee: str | None = None
    type: str = "annotation"
    created: str = attrs.field(factory=_now)
    updated: str = attrs.field(factory=_now)
    assignee_updated: str | None = None

    @property
    def status(self) -> str:
        return "completed" if (self.stage, self.state) == ("acceptance", "completed") else self.stage


@attrs.define
class _ExportRequest:
    rq_id: str
    kind: str  # "project" | "task"
    target: int
    format: str
    user: StandInUser
    project_id: int | None
    task_id: int | None
    created: float
    created_date: str
    xml: bytes
    fails: bool
    held: bool
    finished_at: float | None = None
    started_date: str | None = None
    finished_date: str | None = None


@attrs.frozen
class Delivery:
    """One webhook delivery the stand-in sent, and what the receiver answered (None: unreachable)."""

    webhook_id: int
    event: str
    body: bytes
    status: int | None


@attrs.define
class _Webhook:
    id: int
    url: str
    secret: str
    events: tuple[str, ...]
    project_id: int | None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: CvatStandIn, port: int) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self.connections_lock:
            self.connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut kept-alive connections too: a server that is down answers nothing."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    def do_GET(self) -> None:
        self.server.owner._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._dispatch(self, "POST")

    def do_PATCH(self) -> None:
        self.server.owner._dispatch(self, "PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Answer(Exception):
    def __init__(
        self, status: int, body: Any, *, content_type: str = _JSON, headers: Mapping[str, str] | None = None
    ):
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


class CvatStandIn:
    """An in-memory CVAT server on 127.0.0.1 (random port); use as a context manager."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        queue_delay: float = 0.02,
        export_delay: float = 0.08,
        port: int = 0,
    ) -> None:
        self._lock = threading.RLock()
        self.queue_delay = queue_delay
        self.export_delay = export_delay
        self.users: dict[str, StandInUser] = {"admin": StandInUser(1, "admin", admin=True)}
        self.tokens: dict[str, str] = {ADMIN_TOKEN: "admin"}
        self.organizations: dict[str, int] = {}
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, StandInTask] = {}
        self.jobs: dict[int, StandInJob] = {}
        self.webhooks: dict[int, _Webhook] = {}
        self.deliveries: list[Delivery] = []
        #: (method, path with query) of every request, in arrival order.
        self.requests: list[tuple[str, str]] = []
        self.export_fails = False
        #: False: behave like a CVAT from before the asynchronous export API (no /api/requests;
        #: an export POST answers 202 with no ``rq_id``).
        self.requests_api = True
        self.version = VERSION
        self.corrupt_download: Literal["truncated", "no-xml"] | None = None
        self._hold = threading.Event()
        self._hold.set()
        self._exports: dict[str, _ExportRequest] = {}
        self._failures: list[tuple[int, float | None]] = []
        self._revision = 0
        self._xml_cache: dict[tuple[str, int, int], bytes] = {}
        # project id → (first task id, first job id, jobs per task, images per task), for its export
        self._project_layout: dict[int, tuple[int, int, int, int]] = {}
        self._own_tmp = tempfile.TemporaryDirectory(prefix="cvat-standin-") if workdir is None else None
        self._workdir: Path = Path(self._own_tmp.name) if self._own_tmp is not None else Path(str(workdir))
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._outbox: queue.SimpleQueue[tuple[_Webhook, str, bytes] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._sent = threading.Condition()

    # --- content ------------------------------------------------------------------------------
    def add_user(
        self, username: str, *, token: str | None = None, password: str | None = None, admin: bool = False
    ) -> StandInUser:
        with self._lock:
            user = StandInUser(len(self.users) + 1, username, admin=admin, password=password)
            self.users[username] = user
            if token is not None:
                self.tokens[token] = username
            return user

    def add_organization(self, slug: str) -> int:
        with self._lock:
            self.organizations[slug] = len(self.organizations) + 1
            return self.organizations[slug]

    def add_project(
        self,
        project_id: int,
        *,
        name: str = "stand-in project",
        tasks: int = 3,
        jobs_per_task: int = 3,
        images_per_task: int = 6,
        first_task_id: int = 1,
        first_job_id: int = 1,
        organization: str | None = None,
        ground_truth: bool = False,
    ) -> list[StandInTask]:
        """A project of generated tasks and jobs (all "new"), consistent with its export."""
        with self._lock:
            self.projects[project_id] = {"id": project_id, "name": name, "organization": organization}
            made = []
            job_id = first_job_id
            # The generator's plan gives the names and subsets its export will hold.
            plans = plan_tasks(
                images=images_per_task * tasks,
                tasks=tasks,
                jobs_per_task=jobs_per_task,
                first_task_id=first_task_id,
                first_job_id=first_job_id,
            )
            for plan in plans:
                task = StandInTask(
                    id=plan.id,
                    name=plan.name,
                    project_id=project_id,
                    size=images_per_task,
                    subset=plan.subset,
                    organization=organization,
                )
                self.tasks[task.id] = task
                made.append(task)
                for j in range(jobs_per_task):
                    start = j * images_per_task // jobs_per_task
                    stop = (j + 1) * images_per_task // jobs_per_task - 1
                    self.jobs[job_id] = StandInJob(job_id, task.id, start, stop)
                    job_id += 1
            if ground_truth:
                for task in made:
                    self.jobs[job_id] = StandInJob(
                        job_id, task.id, 0, task.size - 1, type="ground_truth", state="in progress"
                    )
                    job_id += 1
            self._project_layout[project_id] = (first_task_id, first_job_id, jobs_per_task, images_per_task)
            return made

    def set_jobs(self, states: Mapping[int, tuple[str, str]]) -> None:
        """Set (stage, state) of jobs directly, sending no webhook (the state before a test)."""
        with self._lock:
            for job_id, (stage, state) in states.items():
                job = self.jobs[job_id]
                job.stage, job.state, job.updated = stage, state, _now()
            self._update_task_statuses()

    def complete_task(self, task_id: int, *, stage: str = "acceptance") -> None:
        """Complete the task's annotation jobs directly (no webhook); ground-truth jobs stay as they are."""
        jobs = [j for j in self.jobs.values() if j.task_id == task_id and j.type == "annotation"]
        self.set_jobs({j.id: (stage, "completed") for j in jobs})

    def edit_annotations(self) -> None:
        """Change every task's annotations: the next export has other shapes (same images)."""
        with self._lock:
            self._revision += 1

    def jobs_of_task(self, task_id: int) -> list[StandInJob]:
        return [job for job in self.jobs.values() if job.task_id == task_id]

    def patch_job(
        self, job_id: int, changes: Mapping[str, Any], *, token: str = ADMIN_TOKEN
    ) -> httpx.Response:
        """PATCH a job through the HTTP API, as a person in CVAT's UI would (webhooks follow)."""
        with httpx.Client(base_url=self.url) as client:
            return client.patch(
                f"/api/jobs/{job_id}",
                json=dict(changes),
                headers={"Authorization": f"Token {token}", "Accept": _JSON},
            )

    # --- webhooks -----------------------------------------------------------------------------
    def add_webhook(
        self,
        url: str,
        *,
        secret: str,
        events: Iterable[str] = ("update:job", "update:task"),
        project_id: int | None = None,
    ) -> int:
        with self._lock:
            hook = _Webhook(len(self.webhooks) + 1, url, secret, tuple(events), project_id)
            self.webhooks[hook.id] = hook
            return hook.id

    def ping(self, webhook_id: int) -> Delivery:
        """Send a ping now, as ``POST /api/webhooks/{id}/ping`` does (synchronously)."""
        hook = self.webhooks[webhook_id]
        body = {
            "event": "ping",
            "webhook": {
                "id": hook.id,
                "url": f"{self.url}/api/webhooks/{hook.id}",
                "target_url": hook.url,
                "description": "",
                "type": "project",
                "content_type": "application/json",
                "is_active": True,
                "enable_ssl": False,
                "owner": self._user_json(self.users["admin"]),
                "project_id": hook.project_id,
                "organization": None,
                "events": sorted(hook.events),
            },
            "sender": self._user_json(self.users["admin"]),
        }
        return self._deliver(hook, "ping", json.dumps(body).encode())

    def wait_for_deliveries(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._sent:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} webhook deliveries, got {len(self.deliveries)}")
                self._sent.wait(left)
            return list(self.deliveries)

    # --- faults -------------------------------------------------------------------------------
    def fail_next(self, count: int, *, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``count`` API requests with ``status`` (429/5xx), ``Retry-After`` if given."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def hold_exports(self) -> None:
        """Exports stay ``started`` until :meth:`release_exports`."""
        self._hold.clear()

    def release_exports(self) -> None:
        self._hold.set()

    def go_down(self) -> None:
        """Stop listening: clients get "connection refused" until :meth:`come_back`."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    def come_back(self) -> None:
        if self._server is not None:
            return
        self._server = _Server(self, self._port)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="cvat-standin", daemon=True
        )
        self._thread.start()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        self.come_back()
        self._sender = threading.Thread(target=self._send_loop, name="cvat-standin-webhooks", daemon=True)
        self._sender.start()
        return self

    def stop(self) -> None:
        self._hold.set()
        self.go_down()
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(timeout=10)
            self._sender = None
        if self._own_tmp is not None:
            self._own_tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling -----------------------------------------------------------------
    def _dispatch(self, handler: _Handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        with self._lock:
            self.requests.append((method, handler.path))
        try:
            self._answer(handler, method, parts.path, dict(parse_qsl(parts.query)), body)
        except _Answer as answer:
            self._send(handler, answer)

    def _send(self, handler: _Handler, answer: _Answer) -> None:
        if isinstance(answer.body, bytes):
            data = answer.body
        elif isinstance(answer.body, str) and not answer.content_type.endswith("json"):
            data = answer.body.encode()
        else:
            data = json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(self, handler: _Handler, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        with self._lock:
            if self._failures:
                status, retry_after = self._failures.pop(0)
                headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                if status == 429:
                    raise _Answer(429, {"detail": "Request was throttled."}, headers=headers)
                raise _Answer(status, "<h1>Server Error</h1>", content_type="text/html", headers=headers)
        if method == "GET" and path == "/api/server/about":
            raise _Answer(
                200,
                {
                    "name": "Computer Vision Annotation Tool",
                    "description": "A stand-in for tests.",
                    "version": self.version,
                },
            )
        user = self._authenticate(handler)
        org = handler.headers.get("X-Organization") or query.get("org") or None
        segments = [unquote(s) for s in path.strip("/").split("/")]
        with self._lock:
            if segments[:2] == ["api", "jobs"]:
                self._jobs(method, segments[2:], query, body, user, org)
            if segments[:2] == ["api", "tasks"] and method == "GET":
                self._tasks(segments[2:], query, user, org)
            if segments[:2] == ["api", "requests"] and method == "GET" and self.requests_api:
                self._requests(segments[2:], user)
            if len(segments) >= 4 and segments[0] == "api" and segments[1] in ("projects", "tasks"):
                kind = segments[1][:-1]
                if segments[3:] == ["dataset", "export"] and method == "POST":
                    self._export(kind, segments[2], query, user, org)
                if segments[3:] == ["annotations"] and method == "GET" and query.get("action") == "download":
                    self._download(kind, segments[2], query, user)
        raise _Answer(404, _NOT_FOUND_HTML, content_type="text/html; charset=utf-8")

    def _authenticate(self, handler: _Handler) -> StandInUser:
        header = handler.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if not header:
            raise _Answer(
                401,
                {"detail": "Authentication credentials were not provided."},
                headers={"WWW-Authenticate": "Token"},
            )
        if scheme == "Token" and value in self.tokens:
            return self.users[self.tokens[value]]
        if scheme == "Basic":
            try:
                username, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                username, password = "", ""
            user = self.users.get(username)
            if (
                user is not None
                and user.password is not None
                and hmac.compare_digest(user.password, password)
            ):
                return user
            raise _Answer(
                401, {"detail": "Invalid username/password."}, headers={"WWW-Authenticate": "Token"}
            )
        raise _Answer(401, {"detail": "Invalid token."}, headers={"WWW-Authenticate": "Token"})

    # --- visibility -------------------------------------------------------------------------
    def _in_context(self, task: StandInTask, org: str | None) -> bool:
        return task.organization == org

    def _visible_job(self, job: StandInJob, user: StandInUser, org: str | None) -> bool:
        task = self.tasks[job.task_id]
        if not self._in_context(task, org):
            return False
        return user.admin or job.assignee == user.username or task.owner == user.username

    # --- JSON shapes ------------------------------------------------------------------------
    def _user_json(self, user: StandInUser) -> dict[str, Any]:
        return {
            "url": f"{self.url}/api/users/{user.id}",
            "id": user.id,
            "username": user.username,
            "first_name": "",
            "last_name": "",
        }

    def _job_json(self, job: StandInJob) -> dict[str, Any]:
        task = self.tasks[job.task_id]
        frames = job.stop_frame - job.start_frame + 1
        assignee = self.users.get(job.assignee) if job.assignee else None
        return {
            "url": f"{self.url}/api/jobs/{job.id}",
            "id": job.id,
            "task_id": job.task_id,
            "project_id": task.project_id,
            "assignee": self._user_json(assignee) if assignee is not None else None,
            "guide_id": None,
            "dimension": "2d",
            "bug_tracker": "",
            "status": job.status,
            "stage": job.stage,
            "state": job.state,
            "mode": "annotation",
            "frame_count": min(3, frames) if job.type == "ground_truth" else frames,
            "start_frame": job.start_frame,
            "stop_frame": job.stop_frame,
            "data_chunk_size": 72,
            "data_compressed_chunk_type": "imageset",
            "data_original_chunk_type": "imageset",
            "created_date": job.created,
            "updated_date": job.updated,
            "issues": {"url": f"{self.url}/api/issues?job_id={job.id}", "count": 0},
            "labels": {"url": f"{self.url}/api/labels?job_id={job.id}"},
            "type": job.type,
            "organization": self.organizations.get(task.organization) if task.organization else None,
            "target_storage": None,
            "source_storage": None,
            "assignee_updated_date": job.assignee_updated,
        }

    def _task_json(self, task: StandInTask, jobs: list[StandInJob] | None = None) -> dict[str, Any]:
        jobs = self.jobs_of_task(task.id) if jobs is None else jobs
        completed = sum(1 for job in jobs if job.status == "completed")
        validation = sum(1 for job in jobs if job.status == "validation")
        return {
            "url": f"{self.url}/api/tasks/{task.id}",
            "id": task.id,
            "name": task.name,
            "project_id": task.project_id,
            "mode": "annotation",
            "owner": self._user_json(self.users[task.owner]),
            "assignee": None,
            "bug_tracker": "",
            "created_date": task.created,
            "updated_date": task.updated,
            "overlap": 0,
            "segment_size": max((job.stop_frame - job.start_frame + 1 for job in jobs), default=0),
            "status": task.status,
            "data_chunk_size": 72,
            "data_compressed_chunk_type": "imageset",
            "guide_id": None,
            "data_original_chunk_type": "imageset",
            "size": task.size,
            "image_quality": 95,
            "data": task.id,
            "dimension": "2d",
            "subset": task.subset,
            "organization": self.organizations.get(task.organization) if task.organization else None,
            "target_storage": None,
            "source_storage": None,
            "jobs": {
                "count": len(jobs),
                "completed": completed or None,
                "validation": validation or None,
                "url": f"{self.url}/api/jobs?task_id={task.id}",
            },
            "labels": {"url": f"{self.url}/api/labels?task_id={task.id}"},
            "assignee_updated_date": None,
            "validation_mode": "gt" if any(job.type == "ground_truth" for job in jobs) else None,
        }

    def _page(
        self,
        path: str,
        items: Sequence[Any],
        query: dict[str, str],
        render: Callable[[Any], dict[str, Any]] = lambda item: item,
    ) -> None:
        """Answer one page of ``items``; only the page's items are rendered (10,000 jobs stay cheap)."""
        try:
            size = int(query.get("page_size", "10"))
        except ValueError:
            size = 10
        size = size if size > 0 else 10
        try:
            page = int(query.get("page", "1"))
        except ValueError:
            page = 1
        pages = max(1, -(-len(items) // size))
        if page < 1 or page > pages:
            raise _Answer(404, {"detail": "Invalid page."})

        def link(number: int) -> str:
            # Django REST framework rewrites the page parameter and sorts the query.
            params = {k: v for k, v in query.items() if k != "page"}
            if number > 1:
                params["page"] = str(number)
            return f"{self.url}{path}?{urlencode(sorted(params.items()))}"

        raise _Answer(
            200,
            {
                "count": len(items),
                "next": link(page + 1) if page < pages else None,
                "previous": link(page - 1) if page > 1 else None,
                "results": [render(item) for item in items[(page - 1) * size : page * size]],
            },
        )

    # --- endpoints --------------------------------------------------------------------------
    def _jobs(
        self,
        method: str,
        rest: list[str],
        query: dict[str, str],
        body: bytes,
        user: StandInUser,
        org: str | None,
    ) -> None:
        if not rest and method == "GET":
            selected = sorted(self.jobs.values(), key=lambda job: -job.id)
            if "project_id" in query:
                selected = [
                    j for j in selected if str(self.tasks[j.task_id].project_id) == query["project_id"]
                ]
            if "task_id" in query:
                selected = [j for j in selected if str(j.task_id) == query["task_id"]]
            visible = [j for j in selected if self._visible_job(j, user, org)]
            self._page("/api/jobs", visible, query, self._job_json)
        if len(rest) != 1 or not rest[0].isdigit():
            return
        job = self.jobs.get(int(rest[0]))
        if job is None or not self._in_context(self.tasks[job.task_id], org):
            raise _Answer(404, {"detail": "No Job matches the given query."})
        if not self._visible_job(job, user, org):
            raise _Answer(403, {"detail": "You do not have permission to perform this action."})
        if method == "GET":
            raise _Answer(200, self._job_json(job))
        if method != "PATCH":
            return
        try:
            changes = json.loads(body or b"{}")
        except json.JSONDecodeError:
            raise _Answer(400, {"detail": "JSON parse error"}) from None
        if "state" in changes and changes["state"] not in _STATES:
            raise _Answer(400, {"state": [f'"{changes["state"]}" is not a valid choice.']})
        if "stage" in changes and changes["stage"] not in _STAGES:
            raise _Answer(400, {"stage": [f'"{changes["stage"]}" is not a valid choice.']})
        before = self._job_json(job)
        if "stage" in changes:
            job.stage = changes["stage"]
            # CVAT v2.23.1: a stage change without a state resets the state to "new" (recording 003).
            job.state = changes.get("state", "new")
        elif "state" in changes:
            job.state = changes["state"]
        if "assignee" in changes:
            assignee = changes["assignee"]
            by_id = {u.id: u.username for u in self.users.values()}
            job.assignee = by_id.get(assignee) if isinstance(assignee, int) else None
            job.assignee_updated = _now()
        job.updated = _now()
        after = self._job_json(job)
        changed = {key: before[key] for key in after if before[key] != after[key]}
        self._event("update:job", "job", after, changed, user, self.tasks[job.task_id].project_id)
        task = self.tasks[job.task_id]
        old_status, old_updated = task.status, task.updated
        self._update_task_statuses()
        if task.status != old_status:
            task.updated = _now()
            self._event(
                "update:task",
                "task",
                self._task_json(task),
                {"updated_date": old_updated, "status": old_status},
                user,
                task.project_id,
            )
        raise _Answer(200, after)

    def _update_task_statuses(self) -> None:
        for task in self.tasks.values():
            jobs = [job for job in self.jobs_of_task(task.id) if job.type == "annotation"]
            if jobs and all(job.status == "completed" for job in jobs):
                task.status = "completed"
            elif any(job.stage == "annotation" for job in jobs):
                task.status = "annotation"
            else:
                task.status = "validation"

    def _tasks(self, rest: list[str], query: dict[str, str], user: StandInUser, org: str | None) -> None:
        def visible(task: StandInTask) -> bool:
            return self._in_context(task, org) and (
                user.admin
                or task.owner == user.username
                or any(job.assignee == user.username for job in self.jobs_of_task(task.id))
            )

        if not rest:
            selected = sorted(self.tasks.values(), key=lambda task: -task.id)
            if "project_id" in query:
                selected = [t for t in selected if str(t.project_id) == query["project_id"]]
            by_task: dict[int, list[StandInJob]] = {}
            for job in self.jobs.values():
                by_task.setdefault(job.task_id, []).append(job)
            self._page(
                "/api/tasks",
                [t for t in selected if visible(t)],
                query,
                lambda task: self._task_json(task, by_task.get(task.id, [])),
            )
        if len(rest) == 1 and rest[0].isdigit():
            task = self.tasks.get(int(rest[0]))
            if task is None or not self._in_context(task, org):
                raise _Answer(404, {"detail": "No Task matches the given query."})
            if not visible(task):
                raise _Answer(403, {"detail": "You do not have permission to perform this action."})
            raise _Answer(200, self._task_json(task))

    def _export(
        self, kind: str, ident: str, query: dict[str, str], user: StandInUser, org: str | None
    ) -> None:
        fmt = query.get("format", "")
        if fmt not in _KNOWN_FORMATS:
            raise _Answer(400, ["Unknown format specified for the request"])
        target = int(ident) if ident.isdigit() else -1
        if not self.requests_api:
            raise _Answer(202, b"")
        if kind == "project":
            project = self.projects.get(target)
            if project is None or project["organization"] != org:
                raise _Answer(404, {"detail": "No Project matches the given query."})
            project_id: int | None = target
            task_id: int | None = None
        else:
            task = self.tasks.get(target)
            if task is None or not self._in_context(task, org):
                raise _Answer(404, {"detail": "No Task matches the given query."})
            project_id, task_id = task.project_id, target
        if not user.admin:
            raise _Answer(403, {"detail": "You do not have permission to perform this action."})
        rq_id = _rq_id(kind, target, fmt, user.id)
        self._exports[rq_id] = _ExportRequest(
            rq_id=rq_id,
            kind=kind,
            target=target,
            format=fmt,
            user=user,
            project_id=project_id,
            task_id=task_id,
            created=time.monotonic(),
            created_date=_now(),
            xml=self._export_xml(kind, target),
            fails=self.export_fails,
            held=not self._hold.is_set(),
        )
        raise _Answer(202, {"rq_id": rq_id})

    def _status(self, request: _ExportRequest) -> str:
        age = time.monotonic() - request.created
        if request.finished_at is not None:
            return "failed" if request.fails else "finished"
        if age < self.queue_delay:
            return "queued"
        if request.started_date is None:
            request.started_date = _now()
        if age < self.queue_delay + self.export_delay or (request.held and not self._hold.is_set()):
            return "started"
        request.finished_at = time.monotonic()
        request.finished_date = _now()
        return "failed" if request.fails else "finished"

    def _request_json(self, request: _ExportRequest) -> dict[str, Any]:
        status = self._status(request)
        result_url = None
        if status == "finished":
            params = urlencode({"format": request.format, "save_images": "false", "action": "download"})
            result_url = f"{self.url}/api/{request.kind}s/{request.target}/annotations?{params}"
        return {
            "status": status,
            "message": _FAILED_EXPORT if status == "failed" else "",
            "id": request.rq_id,
            "operation": {
                "type": "export:annotations",
                "target": request.kind,
                "project_id": request.project_id,
                "task_id": request.task_id,
                "job_id": None,
                "format": request.format,
                "function_id": None,
            },
            "progress": 0.0,
            "created_date": request.created_date,
            "started_date": request.started_date,
            "finished_date": request.finished_date,
            "expiry_date": None,
            "owner": {"id": request.user.id, "username": request.user.username},
            "result_url": result_url,
            "result_id": None,
        }

    def _requests(self, rest: list[str], user: StandInUser) -> None:
        mine = [r for r in self._exports.values() if r.user.id == user.id]
        if not rest:
            self._page("/api/requests", [self._request_json(r) for r in mine], {"page_size": "10"})
        request = self._exports.get(rest[0]) if len(rest) == 1 else None
        if request is None or request.user.id != user.id:
            raise _Answer(404, _NOT_FOUND_HTML, content_type="text/html; charset=utf-8")
        raise _Answer(200, self._request_json(request))

    def _download(self, kind: str, ident: str, query: dict[str, str], user: StandInUser) -> None:
        fmt = query.get("format", "")
        rq_id = _rq_id(kind, ident, fmt, user.id)
        request = self._exports.get(rq_id)
        if request is None or self._status(request) != "finished":
            raise _Answer(400, ["Export has not finished or was not requested"])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
            name = "readme.txt" if self.corrupt_download == "no-xml" else "annotations.xml"
            zipped.writestr(name, request.xml)
        data = buffer.getvalue()
        if self.corrupt_download == "truncated":
            data = data[: len(data) // 2]
        name = self.projects[request.target]["name"] if kind == "project" else self.tasks[request.target].name
        raise _Answer(
            200,
            data,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{kind}_{quote(name)}_annotations.zip"'},
        )

    # --- exports ---------------------------------------------------------------------------
    def _export_xml(self, kind: str, target: int) -> bytes:
        key = (kind, target, self._revision)
        cached = self._xml_cache.get(key)
        if cached is not None:
            return cached
        if kind == "project":
            first_task, first_job, per_task, images = self._project_layout[target]
            tasks = [t for t in self.tasks.values() if t.project_id == target]
            info = generate_export(
                self._workdir / f"project-{target}.xml",
                kind="project",
                images=images * len(tasks),
                tasks=len(tasks),
                jobs_per_task=per_task,
                seed=self._revision,
                project_id=target,
                first_task_id=first_task,
                first_job_id=first_job,
                shapes_per_image=3,
            )
        else:
            task = self.tasks[target]
            jobs = sorted(j.id for j in self.jobs_of_task(target) if j.type == "annotation")
            info = generate_export(
                self._workdir / f"task-{target}.xml",
                kind="task",
                images=task.size,
                tasks=1,
                jobs_per_task=len(jobs),
                seed=self._revision,
                first_task_id=target,
                first_job_id=jobs[0],
                shapes_per_image=3,
            )
        data = info.path.read_bytes()
        self._xml_cache[key] = data
        return data

    # --- webhook sending -------------------------------------------------------------------
    def _event(
        self,
        event: str,
        resource: str,
        value: dict[str, Any],
        before: dict[str, Any],
        user: StandInUser,
        project_id: int | None,
    ) -> None:
        for hook in self.webhooks.values():
            if event not in hook.events or (hook.project_id is not None and hook.project_id != project_id):
                continue
            body = {
                "event": event,
                resource: value,
                "sender": self._user_json(user),
                "before_update": before,
                "webhook_id": hook.id,
            }
            self._outbox.put((hook, event, json.dumps(body).encode()))

    def _send_loop(self) -> None:
        # One worker, like CVAT's: deliveries go out in order, each once, never retried.
        while True:
            item = self._outbox.get()
            if item is None:
                return
            self._deliver(*item)

    def _deliver(self, hook: _Webhook, event: str, body: bytes) -> Delivery:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"CVAT/{VERSION} python-requests/2.32.3",
            "X-Signature-256": sign(hook.secret, body),
        }
        status: int | None
        try:
            with httpx.Client(timeout=10.0) as client:
                status = client.post(hook.url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            status = None
        delivery = Delivery(hook.id, event, body, status)
        with self._sent:
            self.deliveries.append(delivery)
            self._sent.notify_all()
        return delivery
