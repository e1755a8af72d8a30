"""`mmcaps bench ingest --workspace s3://…` against the S3 server on loopback (tests/conftest.py ``s3_server``): the
same steps on the local and the S3 workspace in one run, with each one's requests (storage.counting) and the ratio."""

from __future__ import annotations

import json

import pytest

from flows.cli import main

pytestmark = pytest.mark.slow


def test_bench_ingest_compares_s3_with_local(s3_server, tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["bench", "ingest", "--videos", "1", "--repeats", "1", "--manifest-rows", "0"]
    assert main([*argv, "--workspace", s3_server.url("bench-ingest"), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "requests per video (initial run)" in out and "no-change re-run: requests" in out
    figures = json.loads(out_json.read_text())
    local, remote = figures, figures["remote"]
    assert remote["workspace"] == s3_server.url("bench-ingest") and remote["videos"] == local["videos"] == 1
    for f in (local, remote):
        assert f["initial_requests_per_video"] == f["initial_requests"] > 0 and f["nochange_requests"] > 0
        # a no-change re-run writes nothing per video: at most the lock's object and its removal
        assert f["nochange_requests_by_kind"].get("put", 0) <= 1 and f["nochange_requests"] < f["initial_requests"]
    assert figures["remote_vs_local"]["nochange_requests"] == remote["nochange_requests"] / local["nochange_requests"]
    # the benchmark refuses a prefix that already holds its dataset (it would not extract anything)
    assert main([*argv, "--workspace", s3_server.url("bench-ingest")]) == 2
    assert "already has a dataset 'bench'" in capsys.readouterr().err
