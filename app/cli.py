"""Command line: the `flask users ...` group, and `init_commands`, where every group is registered."""

from __future__ import annotations

import os

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.audit.services import Actor
from app.extensions import db
from app.models import UserRole

users_cli = AppGroup("users", help="Manage dashboard staff.")


def sign_in_url(token: str) -> str:
    """The link as the operator will open it, on the address in BASE_URL."""
    from flask import url_for

    with current_app.test_request_context(base_url=current_app.config["BASE_URL"]):
        return url_for("auth.redeem_link", token=token, _external=True)


@users_cli.command("create-admin")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([UserRole.SUPER_ADMIN.value, UserRole.ADMIN.value]),
    default=UserRole.SUPER_ADMIN.value,
    show_default=True,
    help="The staff role to give.",
)
def create_admin_command(email: str, role: str) -> None:
    """Create (or promote and reactivate) an administrator."""
    from app.users.services import NotAllowed, UserError, create_admin

    try:
        user = create_admin(email, role=UserRole(role), actor=Actor.cli())
    except (UserError, NotAllowed) as error:
        raise click.ClickException(str(error)) from error
    db.session.commit()
    click.echo(f"{user.email} is an active {user.role.label} (id {user.id}).")


@users_cli.command("sign-in-link")
@click.argument("email")
def sign_in_link_command(email: str) -> None:
    """Print a one-time sign-in link for an active admin or super admin."""
    from app.auth.services import SignInRefused, issue_sign_in_link
    from app.records.users import find_live_user_by_email

    user = find_live_user_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email!r}; create one with `flask users create-admin`")
    try:
        token = issue_sign_in_link(
            user,
            secret_key=current_app.config["SECRET_KEY"],
            max_age=current_app.config["SIGN_IN_LINK_MAX_AGE"],
            actor=Actor.cli(),
        )
    except SignInRefused as refused:
        raise click.ClickException(str(refused)) from refused
    db.session.commit()
    minutes = current_app.config["SIGN_IN_LINK_MAX_AGE"] // 60
    click.echo(f"Sign-in link for {user.email} (works once, for {minutes} minutes):")
    if not os.environ.get("BASE_URL"):
        # Not said in the environment or .env: the default may not be where the server listens.
        click.echo(
            f"(on {current_app.config['BASE_URL']}, the default: set BASE_URL in .env or the environment "
            "when the dashboard is served elsewhere)",
            err=True,
        )
    click.echo(sign_in_url(token))


def init_commands(app: Flask) -> None:
    """Every command group, registered here and nowhere else."""
    from app.clerk.cli import clerk_cli
    from app.demo.cli import demo_command
    from app.maintenance.cli import maintenance_cli
    from app.overview.cli import stats_cli
    from app.staff.cli import staff_cli
    from app.webhooks.cli import replay_command

    clerk_cli.add_command(replay_command)  # `flask clerk replay`: its code is the webhooks'
    app.cli.add_command(users_cli)
    app.cli.add_command(demo_command)
    app.cli.add_command(clerk_cli)
    app.cli.add_command(stats_cli)
    app.cli.add_command(staff_cli)
    app.cli.add_command(maintenance_cli)
