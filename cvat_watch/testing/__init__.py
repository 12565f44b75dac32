"""Test kit shared by the test suite and the benchmarks: never imported by the library or daemon.

- :mod:`.generate`: realistic synthetic CVAT exports and job-status files of any size.
- :mod:`.receiver`: a webhook receiver on 127.0.0.1 that records what it gets.
- :mod:`.process`: drive the real ``cvat-watch`` CLI and daemon in a subprocess.
- :mod:`.cvat_server`: a stand-in CVAT server (REST API, exports, webhooks) on 127.0.0.1.
"""
