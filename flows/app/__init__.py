"""The search web app (``mmcaps browse``): a FastAPI server over a :class:`pipeline.search.Searcher` and a static page.

from flows.app import create_app, serve
serve(create_app(Searcher.open(None, "run-id", "my-videos")))          # http://127.0.0.1:8000/
"""

from flows.app.server import AppThread, create_app, serve

__all__ = ["AppThread", "create_app", "serve"]
