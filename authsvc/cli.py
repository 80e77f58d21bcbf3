"""The `authsvc` command: a Flask CLI group with the service's own commands."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, run_command, with_appcontext

from .config import ConfigError
from .database import migrations
from .errors import APIError
from .extensions import db
from .schemas import ClientIn, normalize_email, validate
from .services import accounts, audit, clients, keys, maintenance, outbox, users

log = logging.getLogger(__name__)


def _create_app():
    from . import create_app

    try:
        app = create_app()
    except ConfigError as exc:
        # One clear line for the operator, not a traceback.
        click.echo(f"authsvc: configuration error: {exc}", err=True)
        sys.exit(2)
    migrations(app)  # the `db` commands (Flask-Migrate's) manage the schema from here
    return app


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def cli():
    """Manage the authsvc service."""


@click.command("run", params=run_command.params, help="Bring the schema to head, then serve (development server).")
@click.pass_context
@with_appcontext
def run(ctx, **kwargs):
    """Migrate the database to head, load the signing keys, and run the development server."""
    from flask_migrate import upgrade

    app = current_app._get_current_object()
    with app.app_context():
        upgrade(directory=migrations(app).directory)
        keys.ring()
    ctx.invoke(run_command, **kwargs)


@click.command("create-admin")
@with_appcontext
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def create_admin(email: str, password_stdin: bool):
    """Create an admin account (or make an existing account admin)."""
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    user = users.find_by_email(email)
    if user is not None:
        # Open registration lets anyone take an address before the operator does: promoting an account whose
        # address was never proven would hand the admin role (and its password) to whoever registered it.
        if not user.email_verified:
            raise click.ClickException(
                f"{email} has an account whose address is not verified, so it may not be the operator's: verify "
                "it (or delete that account), then run create-admin again")
        accounts.grant_admin(user)
        db.session.commit()
        click.echo(f"{email} already had an account; it now has the admin role (its password is unchanged).")
        return
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        accounts.create_user(email, password, email_verified=True, roles=["admin"])
    except APIError as exc:
        problems = "; ".join(f"{k} {', '.join(v)}" for k, v in (exc.fields or {}).items()) or exc.message
        raise click.ClickException(problems) from None
    db.session.commit()
    click.echo(f"Created admin {email}.")


@click.group("keys", cls=AppGroup)
def keys_group():
    """Signing keys."""


@keys_group.command("rotate")
def rotate_keys():
    """Publish a new signing key now; it signs once every instance has loaded it (one key cache period later).
    Retired keys stay published until their tokens expire."""
    if current_app.config.get("JWT_PRIVATE_KEY_FILE"):
        # The file's key signs whatever the database holds: a new database key would never sign.
        raise click.ClickException("JWT_PRIVATE_KEY_FILE is set and its key signs every token: rotate by "
                                   "replacing that file (and restarting), not with `keys rotate`")
    key = keys.rotate()
    db.session.commit()
    click.echo(f"New signing key {key.kid} ({current_app.config['JWT_ALGORITHM']}): published now, signing "
               f"within {current_app.config['SIGNING_KEY_CACHE_SECONDS'] + 2} s.")


@click.group("clients", cls=AppGroup)
def clients_group():
    """Service clients."""


@clients_group.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, help="A scope the client may ask for (repeatable).")
def create_client(name: str, scopes: tuple[str, ...]):
    """Create a service client; its secret is printed this once."""
    try:
        # The admin API's rules (length, control characters, at most 64 scopes): the database would refuse an
        # over-long name with a stack trace, and SQLite would store anything.
        body = validate(ClientIn, {"name": name, "scopes": [s for scope in scopes for s in scope.split()]})
        client, secret = clients.create(body.name, body.scopes)
    except APIError as exc:
        raise click.ClickException(exc.message if not exc.fields else str(exc.fields)) from None
    db.session.commit()
    click.echo(f"client_id: {client.client_id}\nclient_secret: {secret}\nscopes: {' '.join(client.scopes)}")


@click.group("audit", cls=AppGroup)
def audit_group():
    """The audit trail."""


@audit_group.command("purge")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Keep this many days, at least one (default: AUDIT_RETENTION_DAYS).")
@click.option("--batch-size", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True,
              help="Rows per transaction.")
def audit_purge(days: int | None, batch_size: int):
    """Delete audit events older than the retention, in batches."""
    removed = audit.purge(days, batch_size)
    click.echo(f"removed {removed} audit events")


@click.group("mail", cls=AppGroup)
def mail_group():
    """The mail outbox."""


@mail_group.command("flush")
def mail_flush():
    """Send every due message of the outbox now."""
    sent, failed = outbox.flush()
    click.echo(f"sent {sent}, failed {failed}, waiting {outbox.backlog()[0]}")
    if failed:
        sys.exit(1)


WORKER_BATCH = 100  # messages per pass: the stop flag is looked at between passes


@mail_group.command("worker")
@click.option("--heartbeat", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Touch this file after every pass that reached the database (for a container healthcheck).")
def mail_worker(heartbeat: Path | None):
    """Deliver the outbox until SIGTERM or SIGINT: the sender of a mail container (MAIL_WORKER=false on the web)."""
    app = current_app._get_current_object()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    click.echo(f"mail worker: sending, polling every {app.config['MAIL_POLL_SECONDS']:g}s")
    outbox.deliver_until_stopped(app, stopping, batch=WORKER_BATCH,
                                 after_pass=heartbeat.touch if heartbeat is not None else None)
    click.echo("mail worker: stopped")


@click.command("cleanup")
@click.option("--batch-size", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True,
              help="Rows per transaction.")
@with_appcontext
def cleanup(batch_size: int):
    """Delete expired sessions, tokens and counters and old outbox mail (safe from cron on every instance)."""
    counts = maintenance.cleanup(batch_size)
    if counts is None:
        click.echo("cleanup: another instance is running it; nothing done")
        return
    click.echo("removed " + ", ".join(f"{name} {count}" for name, count in counts.items()))


def register_commands(app) -> None:
    """Attach the service's commands to `app.cli` (the `authsvc` console script loads them from there)."""
    for command in (run, create_admin, keys_group, clients_group, audit_group, mail_group, cleanup):
        app.cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    from flask.cli import routes_command, shell_command

    cli.add_command(shell_command)
    cli.add_command(routes_command)
    cli.main(prog_name="authsvc")
