"""The search app over real HTTP on loopback (uvicorn in a thread), on the session's trained tiny demo: the search
endpoint returns the CLI's results, video range requests return the right bytes, and nothing outside the indexed
dataset is served — `..`, absolute paths, encoded traversal and symlinks out are refused with 403/404. The compose
file's optional app service runs `mmcaps browse` on loopback."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from flows.app import AppThread, create_app
from flows.app.server import MAX_K
from flows.cli import build_parser, main
from pipeline.runs import RunFolder
from pipeline.search import IndexConfig, Searcher, build_index
from storage import Workspace

pytestmark = pytest.mark.slow
DATASET = "search-app"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(trained_demo):
    """The app over dataset ``search-app`` (a copy of the held-out split), plus a symlink out of its video folder."""
    trained_demo.copy_dataset("eval-synthetic", DATASET)
    build_index(RunFolder(Workspace(trained_demo.workspace), trained_demo.run_id), DATASET, IndexConfig())
    searcher = Searcher.open(trained_demo.workspace, trained_demo.run_id, DATASET)
    videos = Path(searcher.index.row(0)["source"]).parent  # the folder the dataset's videos were extracted from
    secret = videos.parent / "secret.txt"
    secret.write_text("not for the web")
    link = videos / "leak.mp4"
    if not link.is_symlink():
        link.symlink_to(secret)
    with AppThread(create_app(searcher)) as url:
        yield trained_demo, searcher, url, videos
    link.unlink()


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx and browsers normalise ``..`` away before sending)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_server_listens_on_loopback_only(served):
    _, _, url, _ = served
    assert url.startswith("http://127.0.0.1:")
    args = build_parser().parse_args(["browse", "--model", "r", "--index", "d"])
    assert args.host == "127.0.0.1"


def test_search_endpoint_returns_the_clis_results(served, capsys):
    demo, _, url, _ = served
    text = "the green triangle moves to the right"
    body = httpx.get(f"{url}/api/search", params={"q": text, "k": 7}).json()
    argv = ["search", text, "--model", demo.run_id, "--index", DATASET, "-k", "7", "--json"]
    assert main([*argv, "--workspace", str(demo.workspace)]) == 0
    (cli,) = json.loads(capsys.readouterr().out)
    assert [(h["clip"], h["video_id"], h["start"], h["end"]) for h in body["hits"]] == [
        (h["clip"], h["video_id"], h["start"], h["end"]) for h in cli["hits"]
    ]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h["score"] for h in cli["hits"]])
    assert body["modality"] == cli["modality"] == "video+audio"
    hit = body["hits"][0]
    assert hit["media"] == f"/media/{hit['video_id']}.mp4" and hit["thumb"] == f"/thumb/{hit['clip']}.png"
    assert "source" not in hit  # the server's paths stay on the server
    thumb = httpx.get(url + hit["thumb"])
    assert thumb.status_code == 200 and thumb.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(f"{url}/api/search", params={"q": text, "modality": "smell"}).status_code == 422
    assert httpx.get(f"{url}/api/search", params={"q": text, "k": 0}).status_code == 422


def test_search_takes_any_k_in_range_and_says_what_is_out_of_it(served):
    """Any k from 1 to max_k (not only the page menu's 5/10/20/50); outside it, pydantic's 422 detail list names k."""
    _, searcher, url, _ = served
    text = "the green triangle moves to the right"
    max_k = httpx.get(f"{url}/api/info").json()["max_k"]
    assert max_k == MAX_K
    for k in (1, 8, max_k):
        body = httpx.get(f"{url}/api/search", params={"q": text, "k": k}).json()
        (want,) = searcher.search([text], k)
        assert [h["clip"] for h in body["hits"]] == [h.clip for h in want.hits]
        assert len(body["hits"]) == min(k, len(searcher.index))
    refused = httpx.get(f"{url}/api/search", params={"q": text, "k": max_k + 1})
    assert refused.status_code == 422
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["query", "k"] and str(max_k) in problem["msg"] and problem["input"] == str(max_k + 1)


def test_info_names_the_run_and_index(served):
    demo, searcher, url, _ = served
    info = httpx.get(f"{url}/api/info").json()
    assert info["run_id"] == demo.run_id and info["dataset"] == DATASET
    assert info["checkpoint"] == "final" and info["checkpoint_sha256"] == searcher.index.info["checkpoint_sha256"]
    assert info["clips"] == len(searcher.index) and info["windowing"] == {
        "window": 8.0,
        "stride": 4.0,
        "captions": True,
    }
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "mmcaps" in page.text and page.headers["x-content-type-options"] == "nosniff"


def test_capsules_endpoint_lists_top_clips_per_capsule(served):
    _, searcher, url, _ = served
    body = httpx.get(f"{url}/api/capsules", params={"n": 3, "top": 4}).json()
    assert body["total"] == searcher.index.info["capsules"] and len(body["capsules"]) == 3
    spreads = [c["spread"] for c in body["capsules"]]
    assert spreads == sorted(spreads, reverse=True)
    for cap in body["capsules"]:
        assert 1 <= len(cap["clips"]) <= 4
        assert len({c["video_id"] for c in cap["clips"]}) == len(cap["clips"])  # one clip per video
        acts = [c["activation"] for c in cap["clips"]]
        assert acts == sorted(acts, reverse=True) and all("text" in c for c in cap["clips"])


def test_video_range_requests_return_the_right_bytes(served):
    _, _, url, videos = served
    data = (videos / "eval-0001.mp4").read_bytes()
    whole = httpx.get(f"{url}/media/eval-0001.mp4")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = httpx.get(f"{url}/media/eval-0001.mp4", headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == data[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(data)}"
    tail = httpx.get(f"{url}/media/eval-0001.mp4", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    past = httpx.get(f"{url}/media/eval-0001.mp4", headers={"Range": f"bytes={len(data) + 10}-"})
    assert past.status_code == 416


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/media/../secret.txt", 403),
        ("/media/../../../../etc/passwd", 403),
        ("/media/%2e%2e/secret.txt", 403),
        ("/media/..%2fsecret.txt", 403),
        ("/media/%252e%252e%252fsecret.txt", 403),
        ("/media//etc/passwd", 403),
        ("/media/%2Fetc%2Fpasswd", 403),
        ("/media/..%5csecret.txt", 403),
        ("/media/leak.mp4", 403),  # a symlink in the video folder that leads out of it
        ("/media/eval-0001.vtt", 404),  # beside the videos, but not a video of the dataset
        ("/media/nothing.mp4", 404),
        ("/static/../../../../etc/passwd", 404),
        ("/static/%2e%2e/%2e%2e/server.py", 404),
    ],
)
def test_nothing_outside_the_dataset_is_served(served, path, status):
    _, _, url, _ = served
    code, body = _raw_get(url, path)
    assert code == status, (path, code, body[:200])
    assert b"not for the web" not in body and b"root:" not in body


def _defaults(value: str) -> str:
    """Compose interpolation with every variable unset: ``${X:-d}`` -> d, ``${X:?msg}`` -> X (a required value)."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(2) if m.group(2) is not None else m.group(1), value
    )


def test_compose_app_service_runs_mmcaps_app_on_loopback():
    compose = yaml.safe_load((REPO / "docker" / "compose.app.yaml").read_text())
    service = compose["services"]["app"]
    args = build_parser().parse_args([_defaults(str(a)) for a in service["command"]])
    assert args.command == "browse" and args.host == "0.0.0.0"  # inside the container; published on loopback below
    (port,) = service["ports"]
    host_ip, _, container_port = _defaults(port).split(":")
    assert host_ip == "127.0.0.1" and container_port == str(args.port)
    assert service["profiles"] == ["app"] and service["build"]["target"] == "cpu"
