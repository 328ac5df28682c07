"""A failover under a running `promoter serve`: the primary it writes to turns read-only.

Two real PostgreSQL servers stand for a primary and the standby promoted in its place;
state.url lists both (``host1:port1,host2:port2``). Demoting the first is what a failover does
to its sessions: ``ALTER SYSTEM SET default_transaction_read_only`` and a reload make every
session on it, the serve's pooled one included, refuse writes with SQLSTATE 25006. Real HTTP,
signed deliveries, no mocks.

What a sender and a load balancer must see: a delivery refused 503 with Retry-After and a JSON
reason naming no host; /readyz not ready; and the same delivery, re-sent, stored on the new
primary, after which the replica is ready again.

The two long-lived sessions, on the same two servers: the reconcile leader's (one leader
remains, on the new primary) and the LISTEN one (it hears what is sent on the new primary).

Separately (tests/state/test_postgres.py's database, no serve): which errors count as the
server being unusable, and that only those cost the pooled connection.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.adapters.postgres_state.db import read_write_session
from promoter.adapters.postgres_state.listener import Listener
from promoter.service.verify import sign_mlflow
from promoter.state.db import Connection, StateConflict, StateUnavailable
from tests.fixtures.postgres import PostgresServer, missing_reason, start_postgres
from tests.fixtures.stack import (
    WEBHOOK_SECRET,
    ServeProcess,
    promoter_environ,
    start_serve,
    wait_for,
    write_config,
)

DATABASE = "promoter"


@pytest.fixture
def two_servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """The primary and the standby that will be promoted (each with the promoter schema)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    servers: list[PostgresServer] = []
    try:
        for _ in range(2):
            servers.append(start_postgres())
            with psycopg.connect(servers[-1].admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        # Replication would have copied the schema; here promoter migrates each server.
        for server in servers:
            PostgresStateDB.connect(StateUrl(server.url(DATABASE))).close()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
            with contextlib.suppress(OSError):
                shutil.rmtree(server.directory)


def demote(server: PostgresServer) -> None:
    """Every session on ``server``, the open ones too, refuses writes from now on."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
    # The postmaster signals every session before it forks a new one: once a new session is
    # read-only, each open one reloads before its next statement.
    wait_for(lambda: _read_only_now(server) or None, 30, "the primary to turn read-only")


def _read_only_now(server: PostgresServer) -> bool:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    return row is not None and row[0] == "on"


def deliver(serve: ServeProcess, delivery_id: str, version: str) -> httpx.Response:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-12-04T10:00:00+00:00",
                       "data": {"name": "fraud", "alias": "staging",
                                "version": version}}).encode()
    stamp = str(int(time.time()))
    # Longer than the state pool's 30 s wait for a connection: the answer, not a timeout.
    return httpx.post(f"{serve.url}/webhooks/mlflow", content=body, timeout=60, headers={
        "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign_mlflow(WEBHOOK_SECRET, delivery_id, stamp, body)})


def versions_stored(server: PostgresServer) -> list[str]:
    with psycopg.connect(server.url(DATABASE), autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM jobs ORDER BY id")]


@pytest.mark.e2e
def test_a_demoted_primary_answers_503_unready_and_the_next_delivery_reaches_the_new_one(
        two_servers: tuple[PostgresServer, PostgresServer], tmp_path: Path) -> None:
    primary, standby = two_servers
    url = f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{DATABASE}"
    # The state directory still holds caches (and /readyz's probe write) with PostgreSQL.
    (tmp_path / "state").mkdir(mode=0o700)
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=None)
    serve = start_serve(config, promoter_environ(PROMOTER_STATE_URL=url), tmp_path / "serve.log")
    try:
        assert deliver(serve, str(uuid.uuid4()), "1").status_code == 200
        assert httpx.get(f"{serve.url}/readyz", timeout=30).status_code == 200
        assert versions_stored(primary) == ["1"]  # the first listed host takes writes

        demote(primary)
        delivery = str(uuid.uuid4())
        refused = deliver(serve, delivery, "2")
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"] == "unavailable"
        for revealing in (str(primary.port), str(standby.port), "127.0.0.1", "postgres@"):
            assert revealing not in refused.text, refused.text

        answer = httpx.get(f"{serve.url}/readyz", timeout=30)
        assert answer.status_code == 503, answer.text
        assert "could not be stored" in answer.json()["checks"]["state_writes"], answer.text
        assert str(primary.port) not in answer.text

        # The sender re-sends the delivery: the read-only session was dropped, and the new
        # one skipped the read-only host. (A read-only session still pooled meets the same
        # 503 and is dropped too, so a few re-sends may be needed; a reused one never heals.)
        answers = [deliver(serve, delivery, "2") for _ in range(5)]
        assert 200 in [a.status_code for a in answers], [a.text for a in answers]
        assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
        assert versions_stored(standby) == ["2"]
        assert versions_stored(primary) == ["1"]

        ready = httpx.get(f"{serve.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert serve.alive()
    finally:
        serve.stop()


# ------------------------------------------------------- the leader and the listener follow too

def _both_hosts(primary: PostgresServer, standby: PostgresServer) -> str:
    return f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{DATABASE}"


def _leader_locks(server: PostgresServer) -> int:
    """Session-level advisory locks held on ``server`` (only the leaderships take any here)."""
    with psycopg.connect(server.url(DATABASE), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND granted AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def test_after_a_failover_one_leader_remains_on_the_server_that_takes_writes(
        two_servers: tuple[PostgresServer, PostgresServer]) -> None:
    """The demoted primary keeps its sessions open, and SELECT 1 and advisory locks still
    work there: a leader that only checked its session was alive led on beside a replica
    started after the failover, whose session (read-write) lands on the new primary, where
    the lock is free."""
    primary, standby = two_servers
    db = PostgresStateDB.connect(StateUrl(_both_hosts(primary, standby)))
    a, b = db.leadership("reconcile"), db.leadership("reconcile")
    try:
        assert a.held() and not b.held()
        assert (_leader_locks(primary), _leader_locks(standby)) == (1, 0)

        demote(primary)
        assert not a.held()  # its lock is on a server that takes no writes: no lead
        c = db.leadership("reconcile")  # a replica started after the failover
        try:
            for _ in range(3):  # each asks in turn, as their loops do
                leaders = [name for name, lead in (("a", a), ("b", b), ("c", c))
                           if lead.held()]
                assert len(leaders) <= 1, leaders
            assert len(leaders) == 1, leaders
            assert (_leader_locks(primary), _leader_locks(standby)) == (0, 1)
        finally:
            c.release()
    finally:
        a.release()
        b.release()
        db.close()


def test_after_a_failover_the_listener_hears_notifications_sent_on_the_new_primary(
        two_servers: tuple[PostgresServer, PostgresServer]) -> None:
    """A LISTEN left on the demoted primary hears nothing: every NOTIFY goes to the new one."""
    primary, standby = two_servers
    url = StateUrl(_both_hosts(primary, standby))
    conninfo = url.conninfo(application_name="promoter-listener", **read_write_session(url))
    wake_ups: list[float] = []
    listener = Listener(conninfo, "promoter_work", lambda: wake_ups.append(time.monotonic()),
                        url.scrub)
    listener.start()
    try:
        assert listener.listening.wait(30)
        assert _listeners_on(primary) == 1

        demote(primary)
        # It finds out and listens on the new primary (one wake-up as LISTEN takes effect).
        wait_for(lambda: (len(wake_ups) >= 2 and _listeners_on(standby) == 1) or None,
                 30, "the listener to move to the new primary")
        assert _listeners_on(primary) == 0
        heard_before = len(wake_ups)
        with psycopg.connect(standby.url(DATABASE), autocommit=True) as conn:
            conn.execute("SELECT pg_notify('promoter_work', '')")
        wait_for(lambda: len(wake_ups) > heard_before or None, 30,
                 "the notification sent on the new primary")
    finally:
        listener.stop()


def _listeners_on(server: PostgresServer) -> int:
    with psycopg.connect(server.url(DATABASE), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = 'promoter-listener'").fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------- which errors cost a session

def _backend_pids(admin_url: str, database: str) -> set[int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'promoter'", (database,))}


@pytest.fixture
def state(postgres_server: PostgresServer, postgres_url: str,
          tmp_path: Path) -> Iterator[PostgresStateDB]:
    db = PostgresStateDB.connect(StateUrl(postgres_url), max_connections=2, state_dir=tmp_path)
    yield db
    db.close()


def _pid_then(*statements: str) -> tuple[list[int], object]:
    """A transaction body that notes its session's pid, then runs ``statements``."""
    used: list[int] = []

    def body(conn: Connection) -> None:
        used.append(int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]))
        for statement in statements:
            conn.execute(statement)

    return used, body


def test_a_session_refusing_writes_is_unavailable_and_is_never_lent_again(
        state: PostgresStateDB, postgres_server: PostgresServer, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    used, body = _pid_then("SET TRANSACTION READ ONLY",  # what every session of a standby is
                           "INSERT INTO state_meta (key, value) VALUES ('k', 'v')")
    with pytest.raises(StateUnavailable) as raised:
        state.write(body)  # type: ignore[arg-type]
    assert getattr(raised.value.__cause__, "sqlstate", None) == "25006"
    assert used[0] not in _backend_pids(postgres_server.admin_url, database)
    # The pool serves a new session, which takes the write.
    state.write(lambda conn: conn.execute(
        "INSERT INTO state_meta (key, value) VALUES ('k', 'v')"))
    assert state.read(lambda conn: conn.execute(
        "SELECT value FROM state_meta WHERE key = 'k'").fetchone()[0]) == "v"


def test_a_constraint_violation_is_about_the_write_and_keeps_the_session(
        state: PostgresStateDB, postgres_server: PostgresServer, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    used, body = _pid_then("INSERT INTO reconcile_cursor (id, versions_since_ms) VALUES (2, 0)")
    with pytest.raises(StateConflict) as raised:
        state.write(body)  # type: ignore[arg-type]
    assert not isinstance(raised.value, StateUnavailable)
    assert used[0] in _backend_pids(postgres_server.admin_url, database)
    assert state.read(lambda conn: int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                      ) == used[0]


def test_a_new_session_asks_for_a_read_write_server_unless_the_url_says_otherwise(
        postgres_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from promoter.adapters.postgres_state.db import read_write_session

    assert read_write_session(StateUrl(postgres_url)) == {"target_session_attrs": "read-write"}
    chosen = StateUrl(postgres_url + "?target_session_attrs=primary")
    assert read_write_session(chosen) == {}
    assert conninfo_to_dict(chosen.conninfo())["target_session_attrs"] == "primary"
