"""A PostgreSQL server for the tests, and a fresh database per test on it.

``.ci/run`` starts Debian's ``postgresql`` cluster and exports ``VOXPIPE_TEST_DATABASE_URL`` (a role that may
create databases). Without it, and where Debian's server binaries are installed, ``postgres_admin_url``
starts a throw-away server itself: ``initdb`` into a temporary folder and ``postgres`` on a free port of
127.0.0.1, no fsync, gone at the end (as the ``postgres`` user when running as root, since PostgreSQL
refuses to run as root). With neither, the tests skip and say how to get one; under CI (``CI=true``) they
fail instead, because CI must run them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VARIABLE = "VOXPIPE_TEST_DATABASE_URL"
NO_SERVER = (
    f"no PostgreSQL server: set {URL_VARIABLE} to a postgresql:// URL of a role that may create databases, "
    "or install Debian's server (apt-get install -y postgresql) so the tests can start one"
)


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a private PostgreSQL on 127.0.0.1; yields its admin URL (trust authentication)."""
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if initdb is None or postgres is None:
        raise LookupError(NO_SERVER)
    as_user: list[str] = []
    data = tempfile.mkdtemp(prefix="voxpipe-pg-")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(data, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
            [*as_user, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        settings = ["listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        server = subprocess.Popen(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
            [*as_user, postgres, "-D", data, "-p", str(port), "-k", data, *(f"-c{s}" for s in settings)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            while not _accepts(url):
                assert time.monotonic() < deadline and server.poll() is None, "postgres did not start"
                time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _accepts(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=1).close()
    except psycopg.OperationalError:
        return False
    return True


@contextlib.contextmanager
def admin_url() -> Iterator[str]:
    """The configured server's URL, else a throw-away server's; skips (fails under CI) if neither exists."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        if not _accepts(configured):
            pytest.fail(f"{URL_VARIABLE} is set but no server answers there", pytrace=False)
        yield configured
        return
    try:
        with throwaway_server() as url:
            yield url
    except LookupError:
        if os.environ.get("CI"):
            pytest.fail(NO_SERVER, pytrace=False)
        pytest.skip(NO_SERVER)


@contextlib.contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin``; yields its URL and drops it afterwards."""
    import psycopg
    from psycopg import sql

    name = f"voxpipe_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
