"""The app's HTTP API and page. Endpoints (all GET):

==========================  ==========================================================================================
``/``                       the page (static/index.html): query box, result tiles, player, capsules view
``/api/info``               the run and index served: run id, checkpoint and its sha256, steps, dataset, clips,
                            videos, windowing, fingerprint, approximate indexes with their recall, staleness notes
``/api/search?q=&k=``       :meth:`Searcher.search` of one text, any ``k`` in 1..``MAX_K`` (``modality``,
                            ``method`` as ``mmcaps search``); each hit adds ``media`` (URL of its video) and
                            ``thumb`` (URL of its thumbnail); a bad parameter: 422, ``detail`` a string or
                            pydantic's list of ``{loc, msg, input}`` (the page shows either as one line)
``/api/capsules?n=&top=``   capsules, most selective first, with the clips that activate each most (figure 4)
``/thumb/<clip>.png``       a frame at the clip's midpoint (ffmpeg; cached under <workspace>/cache/thumbnails)
``/media/<path>``           a video of the indexed dataset (HTTP range requests; see :mod:`flows.app.media`)
==========================  ==========================================================================================

Search and thumbnails run in FastAPI's thread pool (plain ``def`` endpoints): torch and ffmpeg release the GIL.
"""

from __future__ import annotations

import io
import mimetypes
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from flows.app.media import MediaRefused, MediaRoot
from pipeline.evaluate.thumbnails import clip_midpoint, grab_frame
from pipeline.search.search import Searcher

STATIC = Path(__file__).parent / "static"
MAX_K = 200  # the most hits /api/search returns (fewer when the index has fewer clips); /api/info says it


def _thumb_png(path: str, t: float, width: int) -> bytes | None:
    """PNG bytes of the frame at ``t`` seconds, ``width`` pixels wide, or None when it cannot be decoded."""
    import matplotlib.image  # noqa: PLC0415  deferred: matplotlib

    frame = grab_frame(path, t, width=width)
    if frame is None:
        return None
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, frame, format="png")
    return buf.getvalue()


def create_app(searcher: Searcher, *, thumb_width: int = 192) -> FastAPI:
    """The app serving ``searcher``'s index; files only from the index's media root (:class:`MediaRoot`)."""
    api = _IndexApi(searcher, thumb_width)
    app = FastAPI(title="mmcaps search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.searcher = searcher
    app.state.media = api.media
    app.middleware("http")(_security_headers)
    app.get("/", include_in_schema=False)(api.page)
    app.get("/api/info")(api.api_info)
    app.get("/api/search")(api.api_search)
    app.get("/api/capsules")(api.api_capsules)
    app.get("/thumb/{clip}.png", include_in_schema=False)(api.thumb)
    app.get("/media/{path:path}", include_in_schema=False)(api.media_file)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _security_headers(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


class _IndexApi:
    """The endpoints over one searcher's index (module doc); :func:`create_app` routes each to a method."""

    def __init__(self, searcher: Searcher, thumb_width: int) -> None:
        self.searcher = searcher
        self.index = searcher.index
        self.info = self.index.info
        self.media = MediaRoot(self.index.clips.column("source").to_pylist())
        ws = self.index.folder.workspace
        self.thumb_dir = Path(ws.cache_dir("thumbnails")) if ws.is_local else None
        self.thumb_width = thumb_width
        self.notes = self.index.staleness()

    def clip_json(self, row: dict[str, Any]) -> dict[str, Any]:
        """A clip row as the page gets it: without source and sha256, with the URLs of its video and thumbnail."""
        url = self.media.url_path(row["source"])
        return {
            **{k: v for k, v in row.items() if k not in ("source", "sha256")},
            "media": f"/media/{url}" if url else None,
            "thumb": f"/thumb/{row['clip']}.png" if url else None,
        }

    def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def api_info(self) -> dict[str, Any]:
        info, index = self.info, self.index
        cfg = info["config"]
        return {
            "run_id": info["run_id"],
            "checkpoint": info["checkpoint"],
            "checkpoint_sha256": info["checkpoint_sha256"],
            "steps": info.get("steps"),
            "dataset": info["dataset"],
            "fingerprint": info["fingerprint"],
            "dataset_fingerprint": info["dataset_fingerprint"],
            "created": info["created"],
            "videos": info["videos"],
            "clips": info["clips"],
            "dim": info["dim"],
            "capsules": info["capsules"],
            "dtype": info["dtype"],
            "modalities": index.modalities,
            "default_modality": index.default_modality,
            "max_k": MAX_K,  # /api/search takes any k in 1..max_k (the page's k menu offers a few of them)
            "windowing": {"window": cfg["window"], "stride": cfg["stride"], "captions": cfg["captions"]},
            "approximate": {
                m: {
                    "nlist": s["nlist"],
                    "nprobe": s["nprobe"],
                    "recall": s["recall"],
                    "ms_per_query": s["ms_per_query"],
                }
                for m, s in (info.get("approximate") or {}).items()
            },
            "media_served": self.media.root is not None,
            "notes": [*info.get("notes", []), *self.notes],
        }

    def api_search(
        self,
        q: str = Query(..., min_length=1, max_length=1000),
        k: int = Query(10, ge=1, le=MAX_K),
        modality: str | None = None,
        method: str = "auto",
    ) -> dict[str, Any]:
        index = self.index
        if method not in ("auto", "exact", "approximate"):
            raise HTTPException(422, f"method must be auto, exact or approximate, got {method!r}")
        if modality is not None and modality not in index.modalities:
            raise HTTPException(422, f"modality must be one of {index.modalities}, got {modality!r}")
        try:
            (result,) = self.searcher.search([q], k, modality=modality, method=method)  # type: ignore[arg-type]
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        out = result.to_json()
        out["hits"] = [
            {**self.clip_json(index.row(h["clip"])), "rank": h["rank"], "score": h["score"]} for h in out["hits"]
        ]
        return out

    def api_capsules(self, n: int = Query(16, ge=1, le=1024), top: int = Query(6, ge=1, le=100)) -> dict[str, Any]:
        caps = self.index.capsules(n, top)
        return {
            "capsules": [
                {**c, "clips": [{**self.clip_json(r), "activation": r["activation"]} for r in c["clips"]]} for c in caps
            ],
            "total": self.info["capsules"],
        }

    def thumb(self, clip: int) -> Response:
        if not 0 <= clip < len(self.index):
            raise HTTPException(404, "no such clip")
        row = self.index.row(clip)
        path = self.media.file_of(row["source"])
        if path is None:
            raise HTTPException(404, "the clip's video is not served")
        t = clip_midpoint(row["start"], row["end"])
        width = self.thumb_width
        cached = self.thumb_dir / f"{row['sha256'][:16]}-{round(t * 1000)}-{width}.png" if self.thumb_dir else None
        if cached is not None and cached.is_file():
            return Response(cached.read_bytes(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})
        png = _thumb_png(path, t, width)
        if png is None:
            raise HTTPException(404, "no frame could be decoded there")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".tmp-{threading.get_ident()}-{cached.name}")
            tmp.write_bytes(png)
            tmp.replace(cached)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    def media_file(self, path: str, request: Request) -> Response:
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        raw = raw.split("/media/", 1)[1] if "/media/" in raw else raw
        try:
            real = self.media.resolve(path, raw)
        except MediaRefused as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        kind = mimetypes.guess_type(real)[0] or "application/octet-stream"
        return FileResponse(real, media_type=kind)  # Starlette answers Range / If-Range with 206 / 416


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted (loopback by default)."""
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


class AppThread:
    """The app on a uvicorn server in a background thread (tests, notebooks): ``with AppThread(app) as url: ...``.

    ``port=0`` takes a free port; ``url`` is ``http://127.0.0.1:<port>``.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="mmcaps-app", daemon=True)
        self.host = host
        self.url = ""

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
