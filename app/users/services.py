"""The dashboard's operations on users (invite, edit, metadata, status, bulk, unlock, sign out,
delete, key-value data), with their rules.

They check permissions, write through app/records/users.py, enqueue calls to Clerk, and never commit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from app.audit.services import Actor, record
from app.auth.services import end_sessions
from app.clerk.client import clerk_connected
from app.clerk.outbox import (
    DASHBOARD_METADATA_KEYS,
    DELETE_USER,
    METADATA_KINDS,
    REVOKE_SESSIONS,
    UNLOCK,
    is_clerk_user,
    waits_for_clerk_user,
)
from app.clerk.outbox.enqueue import (
    enqueue_invitation,
    enqueue_metadata_edit,
    enqueue_profile,
    enqueue_revocation,
    enqueue_role_and_status,
    enqueue_user_call,
)
from app.extensions import db
from app.models import User, UserData, UserRole, UserStatus, utcnow
from app.permissions import (
    NotAllowed,
    ensure,
    ensure_a_super_admin_remains,
    ensure_can_change_role,
    ensure_can_delete,
    ensure_can_give_role,
    ensure_not_self,
    is_self,
    may,
)
from app.records.organizations import end_memberships_of_user, lock_clerk_user_id
from app.records.users import find_live_user_by_email, new_user, normalise_email, snapshot, update_user_fields


class UserError(ValueError):
    """A rule refused the operation; the message is fit to show to the person who asked."""


def create_admin(email: str, *, role: UserRole = UserRole.SUPER_ADMIN, actor: Actor) -> User:
    """Make (or promote) a staff member who can sign in to the dashboard."""
    if role not in (UserRole.ADMIN, UserRole.SUPER_ADMIN):
        raise UserError("an administrator's role is admin or super_admin")
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise UserError(f"{email!r} is not a valid email address: {exc}") from exc

    user = find_live_user_by_email(email)
    if user is None:
        return new_user(email, role=role, status=UserStatus.ACTIVE, action="user.create_admin", actor=actor)
    if user.status == UserStatus.INVITED:
        raise UserError(
            f"{user.email} is invited and waits for Clerk: revoke the invitation first, or let it be accepted"
        )
    ensure_a_super_admin_remains(user, role=role, status=UserStatus.ACTIVE)  # `--role admin` on the last one
    role_before, status_before = user.role, user.status
    update_user_fields(user, {"role": role, "status": UserStatus.ACTIVE}, actor=actor)
    enqueue_role_and_status(user, role_before=role_before, status_before=status_before)
    return user


class DuplicateEmail(UserError):
    field = "email"


class DuplicateKey(UserError):
    field = "key"


class EditConflict(UserError):
    """Someone saved the user after the form was opened; nothing was overwritten."""


class DataConflict(UserError):
    """Someone changed or deleted a key-value pair after the form was opened; nothing was overwritten."""


class ReadOnlyUser(UserError):
    """A user deleted in Clerk: kept as a tombstone, changed by nothing any more."""


STATUS_ACTIONS = {
    UserStatus.SUSPENDED: "user.suspend",
    UserStatus.ACTIVE: "user.reactivate",
    UserStatus.INACTIVE: "user.deactivate",
}
# Where each status may go from the dashboard. `invited` is left only by Clerk's claim of the row
# or by revoking the invitation, and reached only by inviting: no edit, status change or bulk action.
NEXT_STATUSES = {
    UserStatus.ACTIVE: (UserStatus.SUSPENDED, UserStatus.INACTIVE),
    UserStatus.SUSPENDED: (UserStatus.ACTIVE, UserStatus.INACTIVE),
    UserStatus.INACTIVE: (UserStatus.ACTIVE, UserStatus.SUSPENDED),
    UserStatus.INVITED: (),
}


def next_statuses(user: User) -> tuple[UserStatus, ...]:
    """The statuses the dashboard may set this user to (empty for deleted and invited users)."""
    if user.deleted_at is not None:
        return ()
    return NEXT_STATUSES[user.status]


def statuses_offered(user: User, *, actor: Actor) -> tuple[UserStatus, ...]:
    """What a page offers `actor` to set `user` to: nothing unless they may act on them, never themselves away from active."""
    if user.deleted_at is not None or not may(actor, "users.suspend", user):
        return ()
    return tuple(s for s in next_statuses(user) if s == UserStatus.ACTIVE or not is_self(actor, user))


def ensure_editable(user: User) -> None:
    if user.deleted_at is not None:
        raise ReadOnlyUser(f"{user.label} was deleted: the account is read-only here.")


def ensure_status_change(user: User, status: UserStatus, *, actor: Actor) -> None:
    """Every rule a status change must pass, whatever the path (edit, row, page, bulk); writes nothing."""
    ensure_editable(user)
    ensure(actor, "users.suspend", user)
    if status == user.status:
        return
    if user.status == UserStatus.INVITED:
        raise UserError(
            f"{user.label} is invited: the status changes when Clerk's user accepts, or when the invitation is revoked."
        )
    if status not in next_statuses(user):
        raise UserError(f"A user cannot be set to {status.value!r} here.")
    if status != UserStatus.ACTIVE:
        ensure_not_self(actor, user, "change your own status")
    ensure_a_super_admin_remains(user, role=user.role, status=status)


def _ensure_email_free(email: str, *, except_user: User | None = None) -> None:
    other = find_live_user_by_email(email)
    if other is not None and other is not except_user:
        raise DuplicateEmail(f"{email} already belongs to another user.")


def invite_user(
    email: str,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    role: UserRole = UserRole.USER,
    actor: Actor,
) -> User:
    """A user who has been asked to join: status `invited` until Clerk's user.created claims the row."""
    ensure(actor, "users.invite")
    ensure_can_give_role(actor, role)
    email = normalise_email(email)
    _ensure_email_free(email)
    user = new_user(
        email,
        role=role,
        status=UserStatus.INVITED,
        action="user.invite",
        actor=actor,
        first_name=first_name,
        last_name=last_name,
    )
    enqueue_invitation(user)  # a Clerk invitation carrying the role, when Clerk is connected
    return user


def edit_user(user: User, changes: dict, *, expected_version: int | None, actor: Actor) -> dict:
    """Save the fields an admin changed, unless someone else saved the user since the form was opened.

    `changes` holds only what this admin changed: fields nobody touched keep what Clerk sent, even
    when it breaks a dashboard rule, and a save after a conflict cannot undo another person's edit.
    """
    ensure_editable(user)
    ensure(actor, "users.edit", user)
    if expected_version is not None and expected_version != user.version:
        raise EditConflict("Someone else saved this user after you opened the form.")
    role, status = changes.get("role", user.role), changes.get("status", user.status)
    if role != user.role:
        ensure_not_self(actor, user, "change your own role")
    ensure_can_change_role(actor, user, role)
    if status != user.status:
        ensure_status_change(user, status, actor=actor)
    ensure_a_super_admin_remains(user, role=role, status=status)
    if "email" in changes:
        changes = {**changes, "email": normalise_email(changes["email"])}
        if changes["email"] != user.email:
            _ensure_email_free(changes["email"], except_user=user)
    metadata = {kind: _metadata_to_store(user, kind, changes[kind]) for kind in METADATA_KINDS if kind in changes}
    changes = {**changes, **{kind: text for kind, (_, text) in metadata.items()}}
    role_before, status_before = user.role, user.status
    before = snapshot(user, changes)
    changed = update_user_fields(user, changes, actor=actor)
    enqueue_role_and_status(user, role_before=role_before, status_before=status_before)
    enqueue_profile(user, before)  # names, username, external id and email reach Clerk
    for kind, (value, _) in metadata.items():
        if kind in changed:
            enqueue_metadata_edit(user, kind, value)
    return changed


MAX_METADATA_BYTES = 8 * 1024  # Clerk's limit for each metadata object, serialised


class MetadataError(UserError):
    field = "value"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


def metadata_size(value: dict) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def with_dashboard_keys(kind: str, value: dict, stored: dict) -> dict:
    """Public metadata keeps the role and status the dashboard wrote there: an edit cannot set them."""
    if kind != "public_metadata":
        return value
    value = {k: v for k, v in value.items() if k not in DASHBOARD_METADATA_KEYS}
    return {**value, **{k: stored[k] for k in DASHBOARD_METADATA_KEYS if k in stored}}


def stored_metadata(user: User, kind: str) -> dict:
    try:
        value = json.loads(getattr(user, kind) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def new_null(value: dict, stored: object, path: str = "") -> str | None:
    """The first key (a dotted path) `value` sets to null where `stored` does not hold null.

    Clerk's metadata update is a deep merge in which null removes a key (docs/clerk.md §7): Clerk
    would drop the key while the dashboard kept it, and the two would disagree from then on. A null
    Clerk already holds is left alone by the merge, so it may stay."""
    stored = stored if isinstance(stored, dict) else {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if item is None and not (key in stored and stored[key] is None):
            return where
        if isinstance(item, dict) and (found := new_null(item, stored.get(key), where)):
            return found
    return None


def _metadata_to_store(user: User, kind: str, value: dict | str | None) -> tuple[dict, str]:
    """The object to store and send (the dashboard's public keys kept), and its text; refuses > 8 KiB.

    `value` may be the edit form's text (already checked to be a JSON object) or blank for {}.
    """
    if isinstance(value, str) or value is None:
        value = json.loads(value) if value else {}
    if not isinstance(value, dict):
        raise MetadataError('Metadata must be a JSON object, like {"plan": "pro"}.', kind)
    stored = stored_metadata(user, kind)
    value = with_dashboard_keys(kind, value, stored)
    if path := new_null(value, stored):
        raise MetadataError(
            f'"{path}" is null: Clerk removes a key set to null, so it would not be kept. '
            'Remove the key, or give it a value ("", false, 0 or {}).',
            kind,
        )
    if metadata_size(value) > MAX_METADATA_BYTES:
        raise MetadataError(
            f"Metadata is at most {MAX_METADATA_BYTES // 1024} KiB once serialised (Clerk's limit).", kind
        )
    return value, json.dumps(value, sort_keys=True, ensure_ascii=False)


def set_metadata(user: User, kind: str, value: dict, *, actor: Actor, expected: str | None = None) -> dict:
    """Replace one metadata object (a JSON object of at most 8 KiB) and make Clerk hold it too.

    `expected` is the stored text when the form was opened: a webhook or another admin that changed
    it since makes this a conflict, with nothing overwritten.
    """
    if kind not in METADATA_KINDS:
        raise UserError(f"There is no metadata called {kind!r}.")
    ensure_editable(user)
    ensure(actor, "users.edit", user)
    if not isinstance(value, dict):
        raise MetadataError('Metadata must be a JSON object, like {"plan": "pro"}.')
    if expected is not None and expected != (getattr(user, kind) or ""):
        raise EditConflict("The metadata changed after you opened it; nothing was overwritten.")
    value, text = _metadata_to_store(user, kind, value)
    changed = update_user_fields(user, {kind: text}, actor=actor, action="user.metadata")
    if changed:
        enqueue_metadata_edit(user, kind, value)
    return changed


def ensure_in_clerk(user: User, what: str) -> None:
    if not clerk_connected():
        raise UserError(f"Clerk is not connected (CLERK_SECRET_KEY is not set): {what} happens in Clerk.")
    if not is_clerk_user(user):
        raise UserError(f"{user.label} has no user in Clerk yet: there is nothing to {what}.")


def unlock_user(user: User, *, actor: Actor) -> dict:
    """Lift Clerk's lockout after too many failed sign-in attempts."""
    ensure_editable(user)
    ensure(actor, "users.unlock", user)
    if not user.locked:
        raise UserError(f"{user.label} is not locked.")
    ensure_in_clerk(user, "unlocking")
    changed = update_user_fields(user, {"locked": False}, actor=actor, action="user.unlock")
    enqueue_user_call(user, UNLOCK)
    return changed


def sign_out_everywhere(user: User, *, actor: Actor) -> None:
    """Revoke every active Clerk session of the user (through the outbox: Clerk may be down now);
    a staff member's dashboard sessions end too."""
    ensure_editable(user)
    ensure(actor, "users.sessions", user)
    ensure_in_clerk(user, "signing out")
    record("user.sessions_revoke", actor=actor, target=user, changes={})
    if user.is_staff:
        end_sessions(user, actor=actor)  # and their sessions in this dashboard
    enqueue_user_call(user, REVOKE_SESSIONS)


def deletion_word(user: User) -> str:
    """What the person must type to confirm a deletion: the email, or the Clerk id when there is none."""
    return user.email or user.clerk_id


def delete_user(user: User, confirm: str, *, actor: Actor) -> dict:
    """Super admins only: the tombstone a Clerk deletion leaves, the user's key-value data removed
    (the audit trail keeps it), and the user deleted in Clerk (or its invitation revoked)."""
    ensure_editable(user)
    ensure_can_delete(actor, user)
    ensure_a_super_admin_remains(user, role=user.role, status=UserStatus.INACTIVE)
    word = deletion_word(user)
    if normalise_email(confirm or "").casefold() != word.casefold():
        raise DeletionNotConfirmed(f"Type {word} exactly to confirm; nothing was deleted.")
    invited = has_open_invitation(user)
    lock_clerk_user_id(user.clerk_id)  # before the user's row, as every path that ends memberships
    data = {f"data.{item.key}": [item.value, None] for item in user.data}
    if data:
        record("user_data.delete", actor=actor, target=user, changes=data)
        for item in list(user.data):
            db.session.delete(item)
    changed = update_user_fields(user, {"deleted_at": utcnow()}, actor=actor, action="user.delete")
    # Clerk ends their memberships with the user; here too, at once.
    end_memberships_of_user(user, actor=actor, action="membership.user_deleted")
    if invited:
        enqueue_revocation(user)
    else:
        enqueue_user_call(user, DELETE_USER)
    return changed


class DeletionNotConfirmed(UserError):
    field = "confirm"


def set_status(user: User, status: UserStatus, *, actor: Actor) -> dict:
    """Suspend, reactivate or mark inactive; `invited` is reached only by inviting."""
    if status not in STATUS_ACTIONS:
        raise UserError(f"A user cannot be set to {status.value!r} here.")
    ensure_status_change(user, status, actor=actor)
    status_before = user.status
    changed = update_user_fields(user, {"status": status}, actor=actor, action=STATUS_ACTIONS[status])
    enqueue_role_and_status(user, role_before=user.role, status_before=status_before)
    return changed


def has_open_invitation(user: User) -> bool:
    """An invited row still waiting for its Clerk user (its invitation can be revoked or resent)."""
    return user.deleted_at is None and user.status == UserStatus.INVITED and waits_for_clerk_user(user)


def can_invite_again(user: User) -> bool:
    """A row whose invitation was revoked (now inactive, still without a Clerk user)."""
    return user.deleted_at is None and user.status == UserStatus.INACTIVE and waits_for_clerk_user(user)


def revoke_invitation(user: User, *, actor: Actor) -> dict:
    """Withdraw an invitation: the row becomes inactive and Clerk's invitation is revoked."""
    ensure_editable(user)
    ensure(actor, "users.invite", user)
    if not has_open_invitation(user):
        raise UserError("Only a user who is still invited has an invitation to revoke.")
    changed = update_user_fields(user, {"status": UserStatus.INACTIVE}, actor=actor, action="user.invitation_revoke")
    enqueue_revocation(user)
    return changed


def resend_invitation(user: User, *, actor: Actor) -> None:
    """Send the invitation again: Clerk has no resend, so the old one is revoked and a new one made."""
    ensure_editable(user)
    ensure(actor, "users.invite", user)
    if not (has_open_invitation(user) or can_invite_again(user)):
        raise UserError("Only an invited user, or one whose invitation was revoked, can be invited again.")
    if not clerk_connected():
        raise UserError("Clerk is not connected (CLERK_SECRET_KEY is not set): there is no invitation to send.")
    if user.status == UserStatus.INVITED:
        enqueue_revocation(user)  # Clerk refuses a second pending invitation for one email
        record("user.invitation_resend", actor=actor, target=user, changes={})
    else:
        update_user_fields(user, {"status": UserStatus.INVITED}, actor=actor, action="user.invitation_resend")
    enqueue_invitation(user)


def locked_user(user_id: str) -> User | None:
    """The user's row, locked until the commit, as it is now (another writer's change included).

    The lock first, then the row: loading the entity FOR UPDATE would refuse a newer version than
    one this session already holds (the signed-in person acting on themselves) as stale.
    """
    db.session.execute(sa.select(User.id).where(User.id == user_id).with_for_update())
    return db.session.get(User, user_id, populate_existing=True)


MAX_BULK = 1000


@dataclass
class BulkResult:
    changed: list[User] = field(default_factory=list)  # changed (or, in a preview, would change)
    unchanged: list[User] = field(default_factory=list)  # already in that status
    refused: dict[str, str] = field(default_factory=dict)  # label: why, for each user left alone


def _bulk_targets(user_ids: list[str], *, lock: bool) -> tuple[list[str], list[User]]:
    ids = list(dict.fromkeys(i for i in user_ids if isinstance(i, str) and i))[:MAX_BULK]
    query = sa.select(User).where(User.id.in_(ids)).order_by(User.id)
    return ids, list(db.session.scalars(query.with_for_update() if lock else query))


def preview_bulk_status(user_ids: list[str], status: UserStatus, *, actor: Actor) -> BulkResult:
    """What `bulk_set_status` would do, user by user, without writing: for the confirmation."""
    return _bulk(user_ids, status, actor=actor, write=False)


def bulk_set_status(user_ids: list[str], status: UserStatus, *, actor: Actor) -> BulkResult:
    """Set many users' status in the caller's transaction; each user refused is named with the reason."""
    return _bulk(user_ids, status, actor=actor, write=True)


def _bulk(user_ids: list[str], status: UserStatus, *, actor: Actor, write: bool) -> BulkResult:
    if status not in STATUS_ACTIONS:
        raise UserError(f"A user cannot be set to {status.value!r} here.")
    ensure(actor, "users.suspend")  # the whole request is refused, before any user is read
    ids, users = _bulk_targets(user_ids, lock=write)
    result = BulkResult()
    for missing in sorted(set(ids) - {user.id for user in users}):
        result.refused[missing] = "there is no user with this id"
    for user in users:
        if user.status == status and user.deleted_at is None:
            result.unchanged.append(user)
            continue
        try:  # set_status checks the same rules as a preview, then writes
            (set_status if write else ensure_status_change)(user, status, actor=actor)
        except (UserError, NotAllowed) as refused:
            result.refused[user.label] = str(refused)
        else:
            result.changed.append(user)
    return result


def _ensure_data_current(item: UserData, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != item.version:
        raise DataConflict(f"Someone else changed {item.key} after you opened it; nothing was overwritten.")


def add_user_data(user: User, key: str, value: str, *, actor: Actor) -> UserData:
    ensure_editable(user)
    ensure(actor, "user_data.edit", user)
    _ensure_key_free(user, key)
    item = UserData(user_id=user.id, key=key, value=value)
    try:
        # A savepoint, so a concurrent insert of the same key fails alone, with a clear message.
        with db.session.begin_nested():
            db.session.add(item)
    except IntegrityError as exc:
        raise DuplicateKey(f"This user already has a key named {key!r}.") from exc
    record("user_data.add", actor=actor, target=user, changes={f"data.{key}": [None, value]})
    return item


def update_user_data(
    item: UserData, key: str, value: str, *, actor: Actor, expected_version: int | None = None
) -> dict:
    """Save a pair, unless someone changed it since the form was opened (the same check users have)."""
    ensure_editable(item.user)
    ensure(actor, "user_data.edit", item.user)
    _ensure_data_current(item, expected_version)
    if key != item.key:
        _ensure_key_free(item.user, key)
    changes: dict = {}
    if key != item.key:
        changes[f"data.{item.key}"] = [item.value, None]
        changes[f"data.{key}"] = [None, value]
    elif value != item.value:
        changes[f"data.{key}"] = [item.value, value]
    if not changes:
        return {}
    try:
        with db.session.begin_nested():
            item.key, item.value = key, value
    except IntegrityError as exc:
        raise DuplicateKey(f"This user already has a key named {key!r}.") from exc
    except StaleDataError as exc:  # changed between our read and our write
        raise DataConflict(f"Someone else changed {key} at the same moment; nothing was overwritten.") from exc
    record("user_data.update", actor=actor, target=item.user, changes=changes)
    return changes


def delete_user_data(item: UserData, *, actor: Actor, expected_version: int | None = None) -> None:
    user = item.user
    ensure_editable(user)
    ensure(actor, "user_data.edit", user)
    _ensure_data_current(item, expected_version)
    record("user_data.delete", actor=actor, target=user, changes={f"data.{item.key}": [item.value, None]})
    db.session.delete(item)
    try:
        db.session.flush()
    except StaleDataError as exc:
        raise DataConflict(f"Someone else changed {item.key} at the same moment; nothing was deleted.") from exc


def _ensure_key_free(user: User, key: str) -> None:
    taken = db.session.scalar(sa.select(UserData.id).where(UserData.user_id == user.id, UserData.key == key))
    if taken is not None:
        raise DuplicateKey(f"This user already has a key named {key!r}.")
