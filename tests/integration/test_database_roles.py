"""The database roles of the production shape (issue 12, item 8; README "Production").

docker-compose.yml's PostgreSQL runs deploy/postgres/10-xnovu-roles.sh once, as its bootstrap
superuser. Here the same script runs against a fresh database of the suite's PostgreSQL; then
`xnovu migrate` runs as xnovu_owner (MIGRATIONS_DATABASE_URL) and a real API process as
xnovu_service (DATABASE_URL). Every test runs twice: on a new database, and on one a superuser
migrated before the roles existed, then adopted. The attack this answers: the services
connected as a superuser, so row-level security rested only on the role switch inside each
transaction, and anything that reached SQL could alter tables, drop policies or turn the
policies off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from shared.db.session import APP_ROLE, SCOPE_SQL, scope_parameters
from tests.api.test_novu_webhooks import novu_event, signed
from tests.conftest import REPO, Stack, api_process, signup_payload

INIT_SCRIPT = REPO / "deploy" / "postgres" / "10-xnovu-roles.sh"
ROLES_SQL = REPO / "deploy" / "postgres" / "xnovu-roles.psql"
ADOPT_SQL = REPO / "deploy" / "postgres" / "adopt-existing.psql"
OWNER, SERVICE = "xnovu_owner", "xnovu_service"


@dataclass(frozen=True)
class Roles:
    database: str
    admin_url: str  # the bootstrap superuser, in the database
    owner_url: str
    service_url: str


def _url(stack: Stack, user: str, database: str) -> str:
    return f"postgresql://{user}@{stack.postgres.host}:{stack.postgres.port}/{database}"


def _run_init_script(stack: Stack, database: str) -> subprocess.CompletedProcess[str]:
    # As the postgres image runs it: POSTGRES_USER / POSTGRES_DB, passwords from the environment.
    env = {
        "PATH": f"{stack.postgres.bin_dir}:{os.environ['PATH']}",
        "PGHOST": stack.postgres.host,
        "PGPORT": str(stack.postgres.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": database,
        # psql quotes them: a quote in a password cannot end the literal.
        "XNOVU_OWNER_PASSWORD": "owner'; DROP ROLE postgres; --",
        "XNOVU_SERVICE_PASSWORD": 'service"pw',
        "XNOVU_ROLES_SQL": str(ROLES_SQL),
    }
    return subprocess.run(
        [str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _xnovu(stack: Stack, *args: str, **env: str) -> str:
    """Run the `xnovu` command with these environment variables; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**stack.env, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=["new database", "adopted database"])
def roles(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Roles]:
    """A database set up by the init script; or one migrated by a superuser before it existed
    (the old compose file), then given the roles and adopted (deploy/postgres/adopt-existing)."""
    database = f"roles_{uuid.uuid4().hex[:8]}"
    admin_url = _url(stack, "postgres", database)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        if request.param == "adopted database":
            _xnovu(stack, "migrate", DATABASE_URL=admin_url)
        done = _run_init_script(stack, database)
        assert done.returncode == 0, done.stderr
        if request.param == "adopted database":
            adopted = subprocess.run(
                [
                    str(stack.postgres.bin_dir / "psql"),
                    "--no-psqlrc",
                    admin_url,
                    "-f",
                    str(ADOPT_SQL),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert adopted.returncode == 0, adopted.stderr
        owner_url, service_url = _url(stack, OWNER, database), _url(stack, SERVICE, database)
        _xnovu(stack, "migrate", MIGRATIONS_DATABASE_URL=owner_url, DATABASE_URL=service_url)
        yield Roles(database, admin_url, owner_url, service_url)
    finally:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_the_init_script_runs_again_without_harm(stack: Stack, roles: Roles) -> None:
    done = _run_init_script(stack, roles.database)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'").fetchone()


def test_services_connect_as_a_role_that_owns_nothing_and_migrations_as_the_owner(
    roles: Roles,
) -> None:
    with psycopg.connect(roles.admin_url) as conn:
        attributes = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin"
            " FROM pg_roles WHERE rolname IN (%s, %s, %s) ORDER BY rolname",
            (APP_ROLE, OWNER, SERVICE),
        ).fetchall()
        assert attributes == [
            (APP_ROLE, False, False, False, False, False),
            (OWNER, False, False, False, False, True),
            (SERVICE, False, False, False, True, True),
        ]
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'notify'"
        ).fetchall()
        assert owners == [(OWNER,)]  # every table, index and sequence the migrations made
        owned_by_service = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
            " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
            " + (SELECT count(*) FROM pg_database WHERE datdba = r.oid)"
            " + (SELECT count(*) FROM pg_type WHERE typowner = r.oid)"
            " + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)"
            " FROM pg_roles r WHERE r.rolname = %s",
            (SERVICE,),
        ).fetchone()
        assert owned_by_service == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE notify.ent_notification DISABLE ROW LEVEL SECURITY",
        "DROP POLICY enterprise_isolation ON notify.ent_notification",
        "DROP TABLE notify.ent_api_key",
        "CREATE TABLE notify.smuggled (id int)",
        "CREATE SCHEMA smuggled",
        "CREATE TABLE public.smuggled (id int)",
        "TRUNCATE notify.ent_notification",
        # The timeline is append-only (migration 0007).
        "UPDATE notify.ent_notification_event SET kind = 'sent'",
        "DELETE FROM notify.ent_notification_event",
        "TRUNCATE notify.ent_notification_event",
        # Novu's delivery events are kept as received (migration 0008).
        "UPDATE notify.novu_delivery_event SET channel = 'sms'",
        "DELETE FROM notify.novu_delivery_event",
        "SET ROLE xnovu_owner",
        "ALTER ROLE xnovu_service SUPERUSER",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('postgresql.conf')",
    ],
)
def test_the_service_role_cannot_change_the_schema_or_escape(roles: Roles, statement: str) -> None:
    with (
        psycopg.connect(roles.service_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_row_level_security_applies_to_enterprise_transactions_of_the_service_role(
    roles: Roles,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(roles.service_url) as conn:
        # A system transaction (the reconciler's, the key lookup's) sees every enterprise.
        for enterprise in (a, b):
            conn.execute(
                "INSERT INTO notify.ent_api_key (enterprise_id, scope, key_prefix, key_hash)"
                " VALUES (%s, 'enterprise', 'xnk_test', %s)",
                (enterprise, uuid.uuid4().hex),
            )
        conn.commit()
        seen = {row[0] for row in conn.execute("SELECT enterprise_id FROM notify.ent_api_key")}
        assert {a, b} <= seen
        conn.rollback()
        # An enterprise transaction runs as xnovu_app, without BYPASSRLS: only its own rows.
        conn.execute(SCOPE_SQL, scope_parameters(a))
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        scoped = {row[0] for row in conn.execute("SELECT enterprise_id FROM notify.ent_api_key")}
        assert scoped == {a}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO notify.ent_api_key (enterprise_id, scope, key_prefix, key_hash)"
                " VALUES (%s, 'enterprise', 'xnk_test', %s)",
                (b, uuid.uuid4().hex),
            )


def test_the_api_serves_a_trigger_connected_as_the_service_role(stack: Stack, roles: Roles) -> None:
    enterprise = str(uuid.uuid4())
    created = _xnovu(
        stack, "keys", "create", "--enterprise", enterprise, DATABASE_URL=roles.service_url
    )
    key = created.strip()
    # A Redis database nobody consumes: the suite's worker must not see this database's rows.
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/9"
    with (
        api_process(
            stack, "service-role-api", DATABASE_URL=roles.service_url, REDIS_URL=redis_url
        ) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        accepted = http.post(
            "/api/trigger",
            json={"workflowId": "user-signup", "payload": signup_payload()},
            headers=headers,
        )
        assert accepted.status_code == 202, accepted.text
        notification_id = accepted.json()["notificationId"]
        shown = http.get(f"/api/notifications/{notification_id}", headers=headers)
        assert shown.status_code == 200, shown.text
        assert shown.json()["notification_status"] == "PENDING"
        # Novu's webhook: found across enterprises by the service role, recorded as the
        # enterprise under row-level security.
        user = shown.json()["payload"]["userId"]
        transaction_id = accepted.json()["transactionId"]
        event = novu_event("message.sent", transaction_id, f"{enterprise}_{user}")
        raw, signature = signed(event)
        answer = http.post("/api/novu/webhooks", content=raw, headers=signature)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "recorded"}
        shown = http.get(f"/api/notifications/{notification_id}", headers=headers)
        assert shown.json()["delivery"]["email"]["status"] == "sent"
