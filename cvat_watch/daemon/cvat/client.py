"""A small client for the parts of CVAT's REST API that cvat-watch needs, on httpx.

What it does, and only that: check the server (``/api/server/about`` and the asynchronous
request API), list the jobs (and task names) of a project or a task page by page, and run an
annotations-only export the way current CVAT does it::

    POST /api/{projects|tasks}/{id}/dataset/export?format=CVAT for images 1.1&save_images=false
        → 202 {"rq_id": …}
    GET  /api/requests/{rq_id}      queued → started → finished (result_url) | failed (message)
    GET  result_url                 → the zip; annotations.xml is taken out in memory

Why not ``cvat-sdk``: it pins its own generated client and urllib3 stack for the whole API
surface, its export helper checks the request's status only every few seconds (a small
project's export is ready in ~0.3 s), and we need four endpoints, httpx (already a
dependency), and full control over retries, timeouts and what reaches an error message.

Every failure is a :class:`~cvat_watch.errors.CvatServerError` naming the server and, for
401/403, what to fix. Transient failures (connection refused, timeouts, 5xx, 429) are retried
here with exponential backoff, honouring ``Retry-After``; when they persist the error carries
``retry=True`` and the server's ``retry_after`` so the caller can try again later. Tokens and
passwords never appear in any message: they travel only in request headers, and any text a
server sends back is scrubbed of them before it is quoted.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import ssl
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import attrs
import httpx

from cvat_watch._retry_after import parse_retry_after
from cvat_watch.converter import Secret
from cvat_watch.errors import CvatExportError, CvatServerError

__all__ = [
    "EXPORT_FORMAT",
    "CvatClient",
    "ExportResult",
]

log = logging.getLogger(__name__)

EXPORT_FORMAT = "CVAT for images 1.1"
#: CVAT's own default page size is 10; one large page per request keeps a poll to a few calls.
DEFAULT_PAGE_SIZE = 500
#: An annotations.xml larger than this is refused (a zip bomb or the wrong archive).
MAX_XML_BYTES = 2 * 1024**3
#: A download larger than this is refused before it is all in memory.
MAX_ARCHIVE_BYTES = 1024**3
_ACCEPT = "application/vnd.cvat+json"
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@attrs.frozen
class ExportResult:
    """The annotations.xml of one export, and the request that produced it."""

    xml: bytes
    rq_id: str
    seconds: float


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class CvatClient:
    """One CVAT server, one identity (a token, or a username and password), one organization.

    ``stop`` (a :class:`threading.Event`) cuts every wait short: the daemon sets it to stop.
    The client is thread-safe as far as httpx is; each source owns its own.
    """

    def __init__(
        self,
        url: str,
        *,
        token: Secret | None = None,
        username: str | None = None,
        password: Secret | None = None,
        organization: str | None = None,
        verify_tls: bool = True,
        ca_file: Path | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_inline_wait: float = 30.0,
        export_timeout: float = 600.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("CVAT url must be http:// or https:// with a host")
        # The server as named in messages: no credentials, no query.
        self.server = urlunsplit(
            (parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", "")
        )
        self._base = self.server
        self._secrets = [s.reveal() for s in (token, password) if s is not None]
        headers = {"Accept": _ACCEPT, "User-Agent": "cvat-watch"}
        auth: httpx.Auth | None = None
        if token is not None:
            headers["Authorization"] = f"Token {token.reveal()}"
        elif username is not None and password is not None:
            auth = httpx.BasicAuth(username, password.reveal())
        if organization:
            # CVAT picks the organization from this header (or the ``org`` query parameter);
            # without it a project inside an organization answers 403/404.
            headers["X-Organization"] = organization
        self.organization = organization
        verify: bool | ssl.SSLContext = verify_tls
        if verify_tls and ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
                raise CvatServerError(
                    f"cannot load the CA file {ca_file}: {reason}", server=self.server
                ) from None
        self._http = httpx.Client(
            headers=headers,
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False,
            transport=transport,
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_inline_wait = max_inline_wait
        self.export_timeout = export_timeout
        self.page_size = page_size
        self._stop = stop or threading.Event()
        #: Requests sent since the client was made (every attempt counts): for logs and benchmarks.
        self.requests_sent = 0

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CvatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API --------------------------------------------------------------------------
    def check_server(self) -> str:
        """The server's version; CvatServerError when it lacks the asynchronous request API."""
        about = self._json("GET", "/api/server/about")
        version = str(about.get("version", "")) if isinstance(about, dict) else ""
        if not version:
            raise CvatServerError(
                "GET /api/server/about gave no version: is this a CVAT server?", server=self.server
            )
        try:
            self._json("GET", "/api/requests", params={"page_size": 1})
        except CvatServerError as error:
            if error.status in (404, 405):
                raise CvatServerError(
                    f"CVAT {version} has no /api/requests (the asynchronous export API): "
                    "cvat-watch needs a newer CVAT (v2.23 is known to work)",
                    server=self.server,
                    status=error.status,
                ) from None
            raise
        return version

    def list_jobs(self, *, project: int | None = None, task: int | None = None) -> list[dict[str, Any]]:
        """Every job of the project (or task) this identity may see, following ``next``.

        A non-admin user sees only the jobs they may see (CVAT answers 200 with fewer jobs).
        """
        return list(self._pages("/api/jobs", self._scope(project, task, "jobs")))

    def list_tasks(self, *, project: int | None = None, task: int | None = None) -> list[dict[str, Any]]:
        """The project's tasks (or the one task): their names go into the job-status file."""
        if task is not None:
            found = self._json("GET", f"/api/tasks/{int(task)}")
            return [found] if isinstance(found, dict) else []
        return list(self._pages("/api/tasks", self._scope(project, None, "tasks")))

    def export(self, *, project: int | None = None, task: int | None = None) -> ExportResult:
        """Run an annotations-only "CVAT for images 1.1" export; return its annotations.xml."""
        kind, ident = ("projects", project) if project is not None else ("tasks", task)
        if ident is None:
            raise ValueError("give a project or a task")
        started = time.monotonic()
        params = {"format": EXPORT_FORMAT, "save_images": "false"}
        answer = self._json(
            "POST", f"/api/{kind}/{int(ident)}/dataset/export", params=params, expect=(202, 201)
        )
        rq_id = answer.get("rq_id") if isinstance(answer, dict) else None
        if not isinstance(rq_id, str) or not rq_id:
            raise CvatServerError(
                "the export request gave no rq_id: this CVAT predates the asynchronous export API "
                "(cvat-watch needs /api/requests; v2.23 is known to work)",
                server=self.server,
            )
        result_url = self._wait_for(rq_id, started)
        archive = self._download(result_url)
        xml = self._annotations_xml(archive, rq_id)
        seconds = time.monotonic() - started
        log.debug("export %s: %d bytes of XML in %.2f s", rq_id, len(xml), seconds)
        return ExportResult(xml=xml, rq_id=rq_id, seconds=seconds)

    # --- export steps ---------------------------------------------------------------------
    def _wait_for(self, rq_id: str, started: float) -> str:
        delay = 0.1
        path = "/api/requests/" + quote(rq_id, safe="")
        while True:
            status = self._json("GET", path)
            if not isinstance(status, dict):
                raise CvatExportError(
                    f"export {rq_id}: unexpected status answer", server=self.server, retry=True
                )
            state = status.get("status")
            if state == "finished":
                result_url = status.get("result_url")
                if not isinstance(result_url, str) or not result_url:
                    raise CvatExportError(
                        f"export {rq_id} finished without a result_url", server=self.server, retry=True
                    )
                return result_url
            if state == "failed":
                message = self._scrub(str(status.get("message") or ""))
                last = message.strip().splitlines()[-1] if message.strip() else "no message"
                raise CvatExportError(
                    f"export {rq_id} failed on the server: {last[:300]}", server=self.server, retry=True
                )
            if state not in ("queued", "started"):
                raise CvatExportError(
                    f"export {rq_id}: unknown status {state!r}", server=self.server, retry=True
                )
            if time.monotonic() - started > self.export_timeout:
                raise CvatExportError(
                    f"export {rq_id} still {state} after {self.export_timeout:g} s",
                    server=self.server,
                    retry=True,
                )
            # A small export is ready in about 0.3 s: look every 0.1 s for the first second, then
            # less and less often (a large export takes minutes; one status request costs little).
            self._sleep(delay)
            if time.monotonic() - started > 1.0:
                delay = min(delay * 1.5, 2.0)

    def _download(self, result_url: str) -> bytes:
        url = self._same_origin(result_url)
        for attempt in self._attempts():
            try:
                with self._http.stream("GET", url) as response:
                    self.requests_sent += 1
                    if response.status_code != 200:
                        response.read()
                        error = self._status_error("GET", url, response)
                        if error.retry and attempt.more:
                            attempt.wait(error.retry_after)
                            continue
                        raise error
                    declared = response.headers.get("Content-Length")
                    if declared is not None and declared.isdigit() and int(declared) > MAX_ARCHIVE_BYTES:
                        raise CvatExportError("export archive larger than 1 GiB refused", server=self.server)
                    buffer = io.BytesIO()
                    for chunk in response.iter_bytes():
                        buffer.write(chunk)
                        if buffer.tell() > MAX_ARCHIVE_BYTES:
                            raise CvatExportError(
                                "export archive larger than 1 GiB refused", server=self.server
                            )
                    return buffer.getvalue()
            except httpx.TransportError as exc:
                error = self._transport_error("GET", url, exc)
                if attempt.more:
                    attempt.wait(None)
                    continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _annotations_xml(self, archive: bytes, rq_id: str) -> bytes:
        try:
            with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
                try:
                    info = zipped.getinfo("annotations.xml")
                except KeyError:
                    names = ", ".join(zipped.namelist()[:5]) or "nothing"
                    raise CvatExportError(
                        f"export {rq_id}: the archive holds no annotations.xml (it holds {names})",
                        server=self.server,
                        retry=True,
                    ) from None
                if info.file_size > MAX_XML_BYTES:
                    raise CvatExportError(f"export {rq_id}: annotations.xml is too large", server=self.server)
                return zipped.read(info)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise CvatExportError(
                f"export {rq_id}: the download is not a valid zip archive ({exc})",
                server=self.server,
                retry=True,
            ) from None

    # --- plumbing -------------------------------------------------------------------------
    def _scope(self, project: int | None, task: int | None, what: str) -> dict[str, Any]:
        params: dict[str, Any] = {"page_size": self.page_size}
        if project is not None:
            params["project_id"] = int(project)
        elif task is not None:
            params["task_id"] = int(task)
        else:
            raise ValueError(f"list {what} of a project or a task")
        return params

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url: str | None = path
        query: dict[str, Any] | None = params
        pages = 0
        limit: int | None = None
        while url is not None:
            page = self._json("GET", url, params=query)
            pages += 1
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise CvatServerError(f"GET {path}: expected a page with 'results'", server=self.server)
            results = page["results"]
            for item in results:
                if isinstance(item, dict):
                    yield item
            count = page.get("count")
            if limit is None and isinstance(count, int):
                # A page list that never ends (a server bug) must not loop forever.
                limit = math.ceil(count / max(1, len(results) or 1)) + 2
            nxt = page.get("next")
            url = self._same_origin(nxt) if isinstance(nxt, str) and nxt else None
            query = None  # ``next`` carries the query (page, page_size, filter)
            if url is not None and (not results or (limit is not None and pages >= limit)):
                raise CvatServerError(
                    f"GET {path}: pagination does not end (page {pages})", server=self.server
                )

    def _same_origin(self, url: str) -> str:
        """Follow a URL the server gave, but only to this server: the token must not travel elsewhere.

        CVAT behind a proxy may name itself differently; its path and query are then used here.
        """
        parts = urlsplit(url)
        if not parts.scheme:
            return url
        if _origin(url) == _origin(self._base):
            return url
        base = urlsplit(self._base)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    def _url(self, path_or_url: str) -> str:
        return path_or_url if urlsplit(path_or_url).scheme else self._base + path_or_url

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Any:
        url = self._url(path)
        for attempt in self._attempts():
            try:
                response = self._http.request(method, url, params=params)
                self.requests_sent += 1
            except httpx.TransportError as exc:
                error = self._transport_error(method, url, exc)
                if attempt.more:
                    attempt.wait(None)
                    continue
                raise error from None
            if response.status_code in expect:
                if not response.content:
                    return None
                try:
                    return response.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise CvatServerError(
                        f"{method} {self._where(url)}: the answer is not JSON (is the url a CVAT server?)",
                        server=self.server,
                        status=response.status_code,
                    ) from None
            error = self._status_error(method, url, response)
            if error.retry and attempt.more and (error.retry_after or 0) <= self.max_inline_wait:
                attempt.wait(error.retry_after)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempts(self) -> Iterator[_Attempt]:
        for number in range(self.retries + 1):
            yield _Attempt(self, number, more=number < self.retries)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise CvatServerError("interrupted: cvat-watch is stopping", server=self.server, retry=True)

    def _where(self, url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _detail(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            text = response.text.strip()
            if text.lower().startswith(("<!doctype", "<html")) or "<html" in text[:200].lower():
                return "(an HTML page)"
            return self._scrub(text[:200])
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            return self._scrub(body["detail"][:300])
        return self._scrub(json.dumps(body, ensure_ascii=False)[:300])

    def _status_error(self, method: str, url: str, response: httpx.Response) -> CvatServerError:
        status = response.status_code
        where = f"{method} {self._where(url)}"
        detail = self._detail(response)
        said = f"{status} {response.reason_phrase or ''}".strip() + (f" ({detail})" if detail else "")
        if status == 401:
            message = (
                f"{where}: {said}: the credentials were refused; check the token "
                "(token_env / token_file) or username and password_env"
            )
            return CvatServerError(message, server=self.server, status=status)
        if status == 403:
            org = f"organization {self.organization!r}" if self.organization else "no organization"
            message = (
                f"{where}: {said}: this user may not do this with {org}; check `organization` "
                "(the project may live in one) and the user's role on the project or task "
                "(exports need the right to export, listing only shows the jobs the user may see)"
            )
            return CvatServerError(message, server=self.server, status=status)
        if status == 404:
            message = f"{where}: {said}: check the project/task id and the organization"
            return CvatServerError(message, server=self.server, status=status)
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f"; it asked to wait {retry_after:g} s" if retry_after is not None else ""
            return CvatServerError(
                f"{where}: {said}{wait}",
                server=self.server,
                status=status,
                retry=True,
                retry_after=retry_after,
            )
        return CvatServerError(f"{where}: {said}", server=self.server, status=status)

    def _transport_error(self, method: str, url: str, exc: httpx.TransportError) -> CvatServerError:
        if isinstance(exc, httpx.TimeoutException):
            what = "timed out"
        elif isinstance(exc, httpx.ConnectError):
            what = "cannot connect (server down or wrong url?)"
        else:
            what = f"connection failed ({type(exc).__name__})"
        detail = self._scrub(str(exc))[:200]
        message = f"{method} {self._where(url)}: {what}" + (f": {detail}" if detail else "")
        return CvatServerError(message, server=self.server, retry=True)


@attrs.define
class _Attempt:
    client: CvatClient
    number: int
    more: bool

    def wait(self, retry_after: float | None) -> None:
        """Sleep before the next attempt: the server's Retry-After, else backoff with jitter."""
        if retry_after is not None:
            delay = retry_after
        else:
            delay = min(self.client.max_backoff, self.client.backoff * 2**self.number)
            delay *= 0.5 + random.random() / 2  # jitter, not cryptography
        log.debug("CVAT %s: retrying in %.2f s", self.client.server, delay)
        self.client._sleep(delay)
