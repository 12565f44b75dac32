"""cvat-watch reading CVAT: requests per poll, and the time from a job completing in CVAT to the webhook.

``python -m benchmarks.bench_cvat [--jobs 50,1000,10000] [--page-size 500] [--rounds 5] [--poll-interval 2]``

Everything runs against the stand-in CVAT server (``cvat_watch.testing.cvat_server``) on 127.0.0.1,
which answers as CVAT v2.23.1 does (pagination, the asynchronous export, webhooks).

* **Requests per poll**: a :class:`~cvat_watch.daemon.cvat.source.CvatSource` over a project of N jobs
  (10 jobs a task); the first poll (server check, task names, export) and a steady poll (the job
  listing only) are counted on the server side. The bound is ceil(N / page_size) + 1; next-cvat's
  ``download_()`` needs 1 + one request per task.
* **Completion → webhook**: the real daemon (``cvat-watch run`` in a subprocess) with a ``[watch.cvat]``
  source and a signed webhook handler posting to a receiver here. A task's last job is PATCHed to
  completed through the stand-in's REST API; the clock runs from just before that PATCH to the
  receiver having read the ``task.completed`` request. Poll mode: CVAT's webhooks are not used, so the
  source notices at its next poll (target: poll_interval + export time + 1 s). Push mode: CVAT's own
  webhook is registered to the daemon's ``[http]`` listener (target: export time + 1 s). The export
  time is the stand-in's, set like a small real project's (about 0.3 s), and measured here too.

Prints Markdown tables on stdout; progress on stderr. Nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cvat_watch.config import load_config
from cvat_watch.converter import Secret
from cvat_watch.daemon.cvat.client import CvatClient
from cvat_watch.daemon.cvat.source import CvatSource
from cvat_watch.testing.cvat_server import ADMIN_TOKEN, CvatStandIn
from cvat_watch.testing.process import DaemonRig, StateDatabase, wait_until
from cvat_watch.testing.receiver import free_port

HOOK_SECRET = "bench-cvat-hook-secret"
#: Like a small real project on CVAT v2.23.1: queued briefly, ready about 0.3 s after the request.
QUEUE_DELAY = 0.05
EXPORT_DELAY = 0.25


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _config(
    root: Path, server: CvatStandIn, *, poll_interval: float, page_size: int, extra: str = ""
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cvat-watch.toml"
    path.write_text(
        f"""state_dir = "state"
[[watch]]
name = "bench"
annotations = "exports/annotations.xml"
job_status = "exports/job_status.json"
debounce = 0.05
max_wait = 1.0

[watch.cvat]
url = "{server.url}"
project = 1
token_env = "CVAT_TOKEN"
poll_interval = {poll_interval}
page_size = {page_size}
{extra}
"""
    )
    return path


def requests_per_poll(jobs: int, page_size: int) -> dict[str, object]:
    tasks = max(1, jobs // 10)
    with tempfile.TemporaryDirectory(prefix="bench-cvat-") as folder, CvatStandIn() as server:
        server.add_project(1, tasks=tasks, jobs_per_task=jobs // tasks, images_per_task=jobs // tasks)
        watch = load_config(
            _config(Path(folder), server, poll_interval=30, page_size=page_size, extra='export = "never"'),
            environ={"CVAT_TOKEN": ADMIN_TOKEN},
        ).watches[0]
        source = CvatSource(watch)
        try:
            start = len(server.requests)
            first = source.poll()
            first_requests = len(server.requests) - start
            start = len(server.requests)
            began = time.perf_counter()
            steady = source.poll()
            seconds = time.perf_counter() - began
            steady_requests = len(server.requests) - start
        finally:
            source.close()
        assert first.error is None and steady.error is None
        return {
            "jobs": len(server.jobs),
            "tasks": tasks,
            "page_size": page_size,
            "first": first_requests,
            "steady": steady_requests,
            "bound": math.ceil(len(server.jobs) / page_size) + 1,
            "next_cvat": 1 + tasks,
            "poll_ms": seconds * 1000,
        }


def export_seconds(rounds: int) -> list[float]:
    with CvatStandIn(queue_delay=QUEUE_DELAY, export_delay=EXPORT_DELAY) as server:
        server.add_project(1, tasks=4, jobs_per_task=2, images_per_task=6)
        with CvatClient(server.url, token=Secret(ADMIN_TOKEN)) as client:
            return [client.export(project=1).seconds for _ in range(rounds)]


def completion_to_webhook(*, mode: str, rounds: int, poll_interval: float) -> list[float]:
    """Seconds from the PATCH that completes a task to the task.completed webhook, ``rounds`` times."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-cvat-") as folder,
        CvatStandIn(queue_delay=QUEUE_DELAY, export_delay=EXPORT_DELAY) as server,
        DaemonRig(Path(folder)) as rig,
    ):
        root = Path(folder)
        server.add_project(1, tasks=rounds + 1, jobs_per_task=2, images_per_task=6)
        receiver = rig.receiver()
        extra = ""
        top = ""
        if mode == "push":
            port = free_port()
            extra = 'webhook_secret_env = "CVAT_HOOK_SECRET"'
            top = f'[http]\nlisten = "127.0.0.1:{port}"\n'
            server.add_webhook(
                f"http://127.0.0.1:{port}/cvat/webhook/bench", secret=HOOK_SECRET, project_id=1
            )
        config = _config(root, server, poll_interval=poll_interval, page_size=500, extra=extra)
        config.write_text(
            config.read_text()
            + f"""
[[handler]]
type = "webhook"
url = "{receiver.url()}"
secret_env = "CVAT_WATCH_TEST_SECRET"
retry_delays = [0.2]
{top}"""
        )
        rig.start(config, env={"CVAT_TOKEN": ADMIN_TOKEN, "CVAT_HOOK_SECRET": HOOK_SECRET})
        state = StateDatabase(root / "state" / "cvat-watch.db")
        wait_until(lambda: state.baseline_completed("bench") is not None, timeout=60, what="the baseline")
        figures = []
        for task_id in range(1, rounds + 1):
            jobs = [job for job in server.jobs_of_task(task_id) if job.type == "annotation"]
            for job in jobs[:-1]:
                server.patch_job(job.id, {"stage": "acceptance", "state": "completed"})
            seen = len(receiver.requests)
            began = time.monotonic()
            server.patch_job(jobs[-1].id, {"stage": "acceptance", "state": "completed"})
            (request,) = receiver.wait_for(seen + 1, timeout=poll_interval + 30)[seen:]
            event = json.loads(request.body)
            assert (event["type"], event["task"]["id"]) == ("task.completed", str(task_id)), event
            figures.append(request.at - began)
            _progress(f"  {mode}: task {task_id}: {figures[-1]:.2f} s")
        return figures


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", default="50,1000,10000", help="job counts for requests per poll")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="completions measured per mode")
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="the source's poll interval (poll mode)"
    )
    args = parser.parse_args(argv)

    print("## Requests per poll (stand-in CVAT, jobs newest first, 10 jobs a task)\n")
    print(_row(["jobs", "page_size", "first poll", "steady poll", "bound ceil(jobs/page)+1",
                "next-cvat (1 + tasks)", "steady poll ms"]))  # fmt: skip
    print(_row(["---"] * 7))
    for jobs in (int(j) for j in args.jobs.split(",")):
        _progress(f"requests per poll: {jobs} jobs")
        r = requests_per_poll(jobs, args.page_size)
        print(_row([r["jobs"], r["page_size"], r["first"], r["steady"], r["bound"], r["next_cvat"],
                    f"{r['poll_ms']:.0f}"]))  # fmt: skip

    _progress("export time")
    export = export_seconds(args.rounds)
    export_median = statistics.median(export)
    _progress("poll mode")
    poll = completion_to_webhook(mode="poll", rounds=args.rounds, poll_interval=args.poll_interval)
    _progress("push mode")
    push = completion_to_webhook(mode="push", rounds=args.rounds, poll_interval=3600.0)
    print("\n## Job completed in CVAT → task.completed webhook received (seconds)\n")
    print(_row(["mode", "rounds", "median", "max", "target", "max within target"]))
    print(_row(["---"] * 6))
    poll_target = args.poll_interval + export_median + 1.0
    push_target = export_median + 1.0
    print(_row(["export alone", len(export), f"{export_median:.2f}", f"{max(export):.2f}", "", ""]))
    print(_row([f"poll ({args.poll_interval:g} s)", len(poll), f"{statistics.median(poll):.2f}", f"{max(poll):.2f}",
                f"≤ {poll_target:.2f}", max(poll) <= poll_target]))  # fmt: skip
    print(_row(["push (CVAT webhook)", len(push), f"{statistics.median(push):.2f}", f"{max(push):.2f}",
                f"≤ {push_target:.2f}", max(push) <= push_target]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
