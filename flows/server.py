"""Building and running the ``prefect server start`` process behind ``mmcaps server``.

Plain functions (no Prefect import) so that ``mmcaps --help`` stays fast and the pieces can be tested one by
one: the database URL a user types is normalised to the async driver Prefect needs, the child's environment
is built from explicit settings, and the child is run with SIGINT/SIGTERM forwarded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200

# Prefect 3 reads the server database URL from PREFECT_SERVER_DATABASE_CONNECTION_URL (the older
# PREFECT_API_DATABASE_CONNECTION_URL is an alias with lower priority; see prefect/settings/models/server/
# database.py). It needs an async driver: postgresql+asyncpg or sqlite+aiosqlite.
DATABASE_URL_ENV = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
LEGACY_DATABASE_URL_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"

# Scheme a user may type -> scheme Prefect's SQLAlchemy engine needs.
_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# Addresses that mean "every interface": the server is reachable from this machine at loopback.
_WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}


def normalise_database_url(url: str) -> str:
    """Return ``url`` with the async driver Prefect needs (``postgresql://`` -> ``postgresql+asyncpg://``).

    Raises ValueError naming the URL (password hidden) when the scheme is not PostgreSQL or SQLite.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"unsupported database URL {redact_url(url)!r}: Prefect stores its state in PostgreSQL or SQLite; "
            "give postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:////absolute/path.db"
        )
    if scheme.lower().startswith("postgres") and not urlsplit(url).hostname:
        raise ValueError(f"database URL {redact_url(url)!r} names no host")
    return f"{_SCHEMES[scheme.lower()]}://{rest}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for printing and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def display_host(host: str) -> str:
    """The host a browser on this machine uses to reach a server bound to ``host``."""
    host = host.strip()
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):  # bare IPv6 literal
        return f"[{host}]"
    return host


def is_loopback(host: str) -> bool:
    """True when a server bound to ``host`` is reachable from this machine only."""
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def ui_url(host: str, port: int) -> str:
    """Address of the Prefect UI for a server bound to ``host:port``."""
    return f"http://{display_host(host)}:{port}"


def api_url(host: str, port: int) -> str:
    """Value of PREFECT_API_URL for clients on this machine."""
    return f"{ui_url(host, port)}/api"


def server_command(host: str, port: int, python: str | None = None) -> list[str]:
    """argv of ``prefect server start``, run by the same interpreter (so the same Prefect) as mmcaps."""
    return [
        python or sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        host,
        "--port",
        str(port),
        "--analytics-off",
    ]


def with_password(url: str, password_file: str | os.PathLike[str]) -> str:
    """``url`` with the password read from ``password_file`` (a Docker secret): the password never appears on a
    command line (``ps``, ``docker inspect``), only in the server child's environment."""
    path = Path(password_file)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read the database password ({exc.strerror})") from exc
    if not password:
        raise ValueError(f"{path}: the database password file is empty")
    parts = urlsplit(url)
    if parts.password:
        raise ValueError(f"database URL {redact_url(url)!r} has a password already; give it one way")
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def server_env(
    base: Mapping[str, str],
    *,
    host: str,
    port: int,
    database_url: str | None = None,
    prefect_home: str | os.PathLike[str] | None = None,
    ui_api_url: str | None = None,
) -> dict[str, str]:
    """Environment for the ``prefect server start`` child.

    ``database_url`` None keeps whatever the environment says (Prefect's default: SQLite in PREFECT_HOME);
    otherwise it is normalised and set under the name Prefect 3 reads first. ``ui_api_url`` is the API address
    the UI's browser code calls; by default the loopback address of this server.
    """
    env = dict(base)
    if database_url is not None:
        env[DATABASE_URL_ENV] = normalise_database_url(database_url)
        env.pop(LEGACY_DATABASE_URL_ENV, None)  # a stale alias must not contradict the flag
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(Path(prefect_home).expanduser().resolve())
    # The UI's default API address is derived from these settings, not from the --host/--port flags.
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_SERVER_UI_API_URL"] = ui_api_url or api_url(host, port)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    return env


def describe_database(env: Mapping[str, str]) -> str:
    """One line saying where the server child will keep its state (password hidden)."""
    url = env.get(DATABASE_URL_ENV) or env.get(LEGACY_DATABASE_URL_ENV)
    if url:
        return redact_url(url)
    home = env.get("PREFECT_HOME") or str(Path("~/.prefect").expanduser())
    return f"SQLite at {Path(home) / 'prefect.db'} (Prefect's default)"


def run_forwarding_signals(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``cmd`` until it exits, passing SIGINT/SIGTERM on to it; returns its exit status.

    The child shares our process group, so a Ctrl-C in a terminal reaches it directly as well; we forward
    SIGTERM rather than a second SIGINT, which uvicorn takes as "exit now, skip the graceful shutdown".
    A second signal to us kills the child. A stop we were asked for returns 0 (uvicorn re-raises the signal
    after its graceful shutdown, so the child itself reports "killed by SIGTERM").
    """
    child = subprocess.Popen(list(cmd), env=dict(env))
    received = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        if child.poll() is not None:
            return
        if received == 1:
            child.send_signal(signal.SIGTERM)
        else:
            child.kill()

    handled = (signal.SIGINT, signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in handled} if in_main_thread else {}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:  # we are leaving on an exception: never orphan the server
            child.kill()
            child.wait()
    if received and code in (0, -signal.SIGTERM, -signal.SIGINT):
        return 0
    # A child ended by a signal reports -N; shells report that as 128+N.
    return 128 - code if code < 0 else code
