"""row-level security on the ent_* tables

A second wall behind the enterprise filter of every query: the application drops to the
`xnovu_app` role in each enterprise-scoped transaction, with the enterprise in the
transaction-local setting `xnovu.enterprise_id`, and the policies below show that role only
that enterprise's rows. `xnovu_app` owns nothing, so the policies always apply to it; the
owner (the role that runs migrations and system tasks such as the reconciler) is unaffected.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"
CURRENT_ENTERPRISE = "nullif(current_setting('xnovu.enterprise_id', true), '')::uuid"
TENANT_TABLES = (
    "ent_notification",
    "ent_notification_template",
    "ent_notification_rule",
    "ent_api_key",
)


def upgrade() -> None:
    # Roles are cluster-wide: create it once, whichever database migrates first.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        END $$;
        """
    )
    # The connecting role must be allowed to SET ROLE to it (a superuser always is).
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE format('GRANT {APP_ROLE} TO %I', current_user);
            END IF;
        END $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA notify TO {APP_ROLE}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA notify TO {APP_ROLE}"
    )
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA notify TO {APP_ROLE}")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE notify.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY enterprise_isolation ON notify.{table} TO {APP_ROLE} "
            f"USING (enterprise_id = {CURRENT_ENTERPRISE}) "
            f"WITH CHECK (enterprise_id = {CURRENT_ENTERPRISE})"
        )
    # Static workflow rows (no enterprise) are shared: readable by every enterprise, writable by
    # none of them.
    op.execute("ALTER TABLE notify.ent_notification_workflow ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY enterprise_isolation ON notify.ent_notification_workflow TO {APP_ROLE} "
        f"USING (enterprise_id = {CURRENT_ENTERPRISE} OR enterprise_id IS NULL) "
        f"WITH CHECK (enterprise_id = {CURRENT_ENTERPRISE})"
    )


def downgrade() -> None:
    for table in (*TENANT_TABLES, "ent_notification_workflow"):
        op.execute(f"DROP POLICY IF EXISTS enterprise_isolation ON notify.{table}")
        op.execute(f"ALTER TABLE notify.{table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA notify FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA notify FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA notify FROM {APP_ROLE}")
