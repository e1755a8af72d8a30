"""``mmcaps server``: URL handling, and real servers on loopback (SQLite by default, PostgreSQL by URL).

The server tests start ``mmcaps server`` as a subprocess (it runs ``prefect server start``), wait for
``/api/health``, and always tear the whole process group down, also on failure. The PostgreSQL test runs a
throwaway cluster as an unprivileged user (postgres refuses to run as root), runs a small flow against the
server in another process, and reads the run back through the Prefect client and straight from the
database.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import server
from flows.cli import build_parser

SERVER_STARTUP_TIMEOUT_S = 180  # migrations on a fresh database take 10-30 s on two shared cores
POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/lib/postgresql/16/bin")


# --- pure functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/prefect", "postgresql+asyncpg://u:p@db:5432/prefect"),
        ("postgres://u@db/prefect", "postgresql+asyncpg://u@db/prefect"),
        ("postgresql+psycopg2://u:p@db/prefect", "postgresql+asyncpg://u:p@db/prefect"),
        ("postgresql+asyncpg://u:p@db/prefect", "postgresql+asyncpg://u:p@db/prefect"),
        ("sqlite:////srv/prefect.db", "sqlite+aiosqlite:////srv/prefect.db"),
        ("sqlite+aiosqlite:////srv/prefect.db", "sqlite+aiosqlite:////srv/prefect.db"),
    ],
)
def test_normalise_database_url(given, expected):
    assert server.normalise_database_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://u:secret@db/x", "db.example:5432/prefect", "postgresql:///prefect"])
def test_normalise_database_url_rejects(bad):
    with pytest.raises(ValueError) as exc:
        server.normalise_database_url(bad)
    assert "secret" not in str(exc.value)  # passwords never reach logs


def test_redact_and_addresses():
    assert server.redact_url("postgresql://u:s3cret@db:5432/p") == "postgresql://u:***@db:5432/p"
    assert server.redact_url("sqlite:////x.db") == "sqlite:////x.db"
    assert server.api_url("127.0.0.1", 4200) == "http://127.0.0.1:4200/api"
    # A wildcard bind is reached from this machine over loopback.
    assert server.ui_url("0.0.0.0", 4300) == "http://127.0.0.1:4300"
    assert server.ui_url("::1", 4200) == "http://[::1]:4200"
    assert server.is_loopback("127.0.0.1") and not server.is_loopback("0.0.0.0")


def test_server_env_and_command(tmp_path):
    base = {"PATH": "/bin", "PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:////stale.db"}
    env = server.server_env(
        base, host="127.0.0.1", port=4321, database_url="postgresql://u:p@db/prefect", prefect_home=tmp_path
    )
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://u:p@db/prefect"
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in env
    assert env["PREFECT_HOME"] == str(tmp_path.resolve())
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PATH"] == "/bin" and base["PREFECT_API_DATABASE_CONNECTION_URL"]  # input left alone
    assert server.describe_database(env) == "postgresql+asyncpg://u:***@db/prefect"

    default = server.server_env({}, host="127.0.0.1", port=4200, prefect_home=tmp_path)
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in default
    assert server.describe_database(default).startswith(f"SQLite at {tmp_path.resolve() / 'prefect.db'}")

    cmd = server.server_command("127.0.0.1", 4321)
    assert cmd[:5] == [sys.executable, "-m", "prefect", "server", "start"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "4321"


def test_cli_defaults_to_loopback():
    args = build_parser().parse_args(["server"])
    assert (args.host, args.port, args.database_url) == ("127.0.0.1", 4200, None)


# --- helpers for real servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp (Linux)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1]))
    return found


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> int | None:
    """SIGTERM ``proc`` (it forwards to its children), wait, then SIGKILL its whole group regardless."""
    code = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(timeout=grace_s)
    else:
        code = proc.returncode
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left of the group (the prefect child, its services)
    if proc.poll() is None:
        proc.wait(timeout=10)
    return code


@contextlib.contextmanager
def mmcaps_server(args: list[str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run ``mmcaps server ARGS`` in its own process group until the block ends; yields (process, api url)."""
    port = int(args[args.index("--port") + 1])
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "server", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + SERVER_STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mmcaps server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if json.loads(response.read()) is True:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /api/health after {SERVER_STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield proc, url
    finally:
        stop_process_group(proc)


def printed_api_url(log: Path) -> str:
    lines = [ln for ln in log.read_text().splitlines() if ln.strip().startswith("export PREFECT_API_URL=")]
    assert len(lines) == 1, log.read_text()
    return lines[0].split("=", 1)[1]


# --- SQLite (default) ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_server_default_sqlite_on_loopback(tmp_path):
    port = free_port()
    home = tmp_path / "prefect-home"
    log = tmp_path / "server.log"
    with mmcaps_server(["--port", str(port), "--prefect-home", str(home)], log) as (proc, url):
        assert printed_api_url(log) == url == f"http://127.0.0.1:{port}/api"
        assert f"UI: http://127.0.0.1:{port}" in log.read_text()
        assert listening_addresses(port) == {"127.0.0.1"}  # not 0.0.0.0: loopback only
        assert (home / "prefect.db").is_file()  # the default database, in the given PREFECT_HOME
        # SIGTERM is forwarded: the server shuts down and mmcaps returns its status.
        code = stop_process_group(proc, grace_s=60)
    assert code == 0, log.read_text()
    assert not listening_addresses(port)


# --- PostgreSQL -----------------------------------------------------------------------------------------------


def find_postgres_bin() -> Path:
    """The folder holding initdb, postgres and psql, or pytest.skip naming what is missing."""
    for folder in POSTGRES_BIN_DIRS:
        if all((Path(folder) / exe).is_file() for exe in ("initdb", "postgres", "psql")):
            return Path(folder)
    pytest.skip(f"PostgreSQL binaries (initdb, postgres, psql) not found in any of {POSTGRES_BIN_DIRS}")


def unprivileged_user() -> str | None:
    """User to run postgres as: None when we are not root (run as ourselves), else 'postgres' or 'nobody'."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database 'prefect'; yields its postgresql:// URL."""
    bin_dir = find_postgres_bin()
    user = unprivileged_user()
    # Not under pytest's tmp_path: its parents are private to root, and postgres must reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="mmcaps-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    as_user = {"user": user} if user else {}
    proc = None
    try:
        init = subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
            capture_output=True,
            text=True,
            timeout=120,
            **as_user,
        )
        if init.returncode != 0:
            pytest.skip(f"initdb in {data} failed (as {user or 'current user'}): {init.stderr.strip()[-500:]}")
        port = free_port()
        log = (root / "postgres.log").open("w")
        proc = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-k", sock, "-p", str(port), "-h", "127.0.0.1", "-c", "fsync=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
        psql = [bin_dir / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        deadline = time.monotonic() + 60
        while subprocess.run([*psql, "-c", "select 1"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"postgres did not start on 127.0.0.1:{port}: {(root / 'postgres.log').read_text()[-500:]}")
            time.sleep(0.3)
        subprocess.run([*psql, "-c", "create database prefect"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/prefect"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # postgres "fast shutdown"
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


FLOW_SCRIPT = textwrap.dedent(
    """
    from prefect import flow

    @flow(name="mmcaps-server-check")
    def add_one(x: int) -> int:
        return x + 1

    state = add_one(41, return_state=True)
    print("FLOW_RUN_ID", state.state_details.flow_run_id, state.result())
    """
)


@pytest.mark.slow
def test_server_on_postgresql_records_a_flow_run(postgres, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with mmcaps_server(["--port", str(port), "--database-url", postgres], log) as (_proc, url):
        text = log.read_text()
        assert "postgresql+asyncpg://postgres@127.0.0.1" in text  # the normalised URL it told the user
        assert listening_addresses(port) == {"127.0.0.1"}

        env = {**os.environ, "PREFECT_API_URL": url}
        run = subprocess.run([sys.executable, "-c", FLOW_SCRIPT], env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith("FLOW_RUN_ID"))
        _, flow_run_id, result = line.split()
        assert result == "42"

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
            flow = client.read_flow(flow_run.flow_id)
        assert flow_run.state is not None and flow_run.state.is_completed()
        assert flow.name == "mmcaps-server-check"
        assert flow_run.parameters == {"x": 41}

        # And the run is in PostgreSQL itself, not in some SQLite file next to the server.
        bin_dir = find_postgres_bin()
        pg_port = postgres.rsplit(":", 1)[1].split("/")[0]
        row = subprocess.run(
            [bin_dir / "psql", "-h", "127.0.0.1", "-p", pg_port, "-U", "postgres", "-d", "prefect", "-tA", "-c",
             f"select state_type from flow_run where id = '{flow_run_id}'"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert row.stdout.strip() == "COMPLETED"


def test_database_password_from_a_file(tmp_path):
    """`--database-password-file` (a Docker secret) puts the password into the URL the child reads, not on a command
    line; special characters are quoted; a URL that has one already, or an empty file, is refused."""
    from flows import server as srv

    secret = tmp_path / "postgres_password"
    secret.write_text("p@ss:w/rd\n")
    url = srv.with_password("postgresql://prefect@postgres:5432/prefect", secret)
    assert url == "postgresql://prefect:p%40ss%3Aw%2Frd@postgres:5432/prefect"
    env = srv.server_env({}, host="127.0.0.1", port=4200, database_url=url)
    assert env[srv.DATABASE_URL_ENV].startswith("postgresql+asyncpg://prefect:p%40ss%3Aw%2Frd@postgres:5432/")
    with pytest.raises(ValueError, match="has a password already"):
        srv.with_password("postgresql://prefect:x@postgres/prefect", secret)
    secret.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        srv.with_password("postgresql://prefect@postgres/prefect", secret)
