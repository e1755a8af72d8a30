"""``mmcaps server``: run a Prefect server (API + UI) for schedules, triggers and shared run history.

Wraps ``prefect server start`` from the same environment. Loopback only unless ``--host`` says otherwise,
SQLite in PREFECT_HOME unless ``--database-url`` names PostgreSQL, analytics off.
"""

from __future__ import annotations

import argparse
import os
import sys

from flows import server


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start `prefect server start` (API and UI). `mmcaps watch` and every flow run find it through "
        "PREFECT_API_URL, which this command prints. Stop it with Ctrl-C."
    )
    parser.add_argument(
        "--host",
        default=server.DEFAULT_HOST,
        help="address to listen on (default %(default)s; 0.0.0.0 exposes the unauthenticated API to the network)",
    )
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL database, e.g. postgresql://USER:PASSWORD@HOST:5432/prefect (the asyncpg driver is "
        "added); default: Prefect's SQLite database in PREFECT_HOME",
    )
    parser.add_argument(
        "--database-password-file",
        metavar="FILE",
        help="read the database password from FILE (a Docker secret) into the URL, instead of writing it in "
        "--database-url where ps and docker inspect show it",
    )
    parser.add_argument(
        "--prefect-home", metavar="DIR", help="PREFECT_HOME for the server (its SQLite database lives there)"
    )
    parser.add_argument(
        "--ui-api-url",
        metavar="URL",
        help="API address the UI's browser code calls, when the UI is reached through another host or port "
        "(a proxy, a container's published port); default http://HOST:PORT/api",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port (1-65535)")
    database_url = args.database_url
    if args.database_password_file:
        if not database_url:
            raise ValueError("--database-password-file needs --database-url (without a password)")
        database_url = server.with_password(database_url, args.database_password_file)
    env = server.server_env(
        os.environ,
        host=args.host,
        port=args.port,
        database_url=database_url,
        prefect_home=args.prefect_home,
        ui_api_url=args.ui_api_url,
    )
    if args.prefect_home:
        os.makedirs(env["PREFECT_HOME"], exist_ok=True)
    print(f"Prefect server on {args.host}:{args.port}; database: {server.describe_database(env)}")
    print(f"UI: {server.ui_url(args.host, args.port)}")
    print("Point flows and `mmcaps watch` in other shells at it with:")
    print(f"  export PREFECT_API_URL={server.api_url(args.host, args.port)}")
    if not server.is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: the Prefect API has no authentication, anyone who can reach "
            "this port can read runs and start flows",
            file=sys.stderr,
        )
    sys.stdout.flush()
    return server.run_forwarding_signals(server.server_command(args.host, args.port), env)
