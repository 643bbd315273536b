"""Shuffled, duplicated and concurrent deliveries of users, organizations, memberships, invitations
and deletions converge to Clerk's final state, for every seed (issue 15, DESIGN §7).

A random history is played against a model of Clerk: users join and leave, organizations are made,
renamed and deleted, members are added, re-roled, removed and re-added (a new membership id),
invitations are sent, accepted and revoked. Each change is the event Clerk would send, shaped as it
sends them. Every event is then delivered, some twice (the same Svix id, as Svix resends), in a
shuffled order, by 8 threads at once, each with its own connection. PostgreSQL only: SQLite has one
writer, so nothing races there (the same rules are tested in order in test_webhooks_organizations.py).
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from app.models import Membership, Organization, OrganizationInvitation, User
from app.records import counts
from tests.clerk_payloads import (
    BASE_MS,
    Signed,
    clerk_membership,
    clerk_org_invitation,
    clerk_organization,
    clerk_user,
    envelope,
    organization_deleted,
    sign,
    user_created,
    user_deleted,
)

pytestmark = [pytest.mark.postgresql, pytest.mark.usefixtures("signing_secret")]

THREADS = 8
STEPS = 70
ROLES = ("org:admin", "org:member", "org:billing")


@dataclass
class ClerkModel:
    """Clerk's state as the history leaves it, and the events it sent on the way."""

    rng: random.Random
    clock: int = BASE_MS
    users: dict[str, dict] = field(default_factory=dict)  # live users
    deleted_users: set[str] = field(default_factory=set)
    orgs: dict[str, dict] = field(default_factory=dict)  # live organizations
    deleted_orgs: set[str] = field(default_factory=set)
    members: dict[tuple[str, str], dict] = field(default_factory=dict)  # (org id, user id): live membership
    invitations: dict[str, dict] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    serial: int = 0

    def tick(self) -> int:
        self.clock += self.rng.randint(1, 3) * 1000
        return self.clock

    def name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    # -- the steps --

    def add_user(self) -> None:
        user = clerk_user(email=f"{self.name('u')}@example.com", created_at=self.tick())
        self.users[user["id"]] = user
        self.events.append(user_created(user))

    def delete_user(self) -> None:
        user_id = self.rng.choice(sorted(self.users))
        del self.users[user_id]
        self.deleted_users.add(user_id)
        at = self.tick()
        for key in [key for key in self.members if key[1] == user_id]:
            membership = self.members.pop(key)
            if self.rng.random() < 0.5:  # whether Clerk says so per membership is not documented
                self.events.append(envelope("organizationMembership.deleted", {**membership, "updated_at": at}))
        self.events.append(user_deleted(user_id, timestamp=at))

    def add_org(self) -> None:
        n = self.name("org")
        org = clerk_organization(name=f"Org {n}", slug=n, created_at=self.tick())
        self.orgs[org["id"]] = org
        self.events.append(envelope("organization.created", org))  # shuffled: often after its memberships

    def rename_org(self) -> None:
        org_id = self.rng.choice(sorted(self.orgs))
        org = {**self.orgs[org_id], "name": self.name("Renamed "), "updated_at": self.tick()}
        self.orgs[org_id] = org
        self.events.append(envelope("organization.updated", org))

    def delete_org(self) -> None:
        org_id = self.rng.choice(sorted(self.orgs))
        del self.orgs[org_id]
        self.deleted_orgs.add(org_id)
        at = self.tick()
        for key in [key for key in self.members if key[0] == org_id]:
            membership = self.members.pop(key)
            if self.rng.random() < 0.5:
                self.events.append(envelope("organizationMembership.deleted", {**membership, "updated_at": at}))
        for invitation in self.invitations.values():
            if invitation["organization_id"] == org_id and invitation["status"] == "pending":
                invitation["status"] = "revoked"  # gone with it; Clerk sends no event for these
        self.events.append(organization_deleted(org_id, timestamp=at))

    def add_member(self) -> None:
        candidates = [(o, u) for o in sorted(self.orgs) for u in sorted(self.users) if (o, u) not in self.members]
        if not candidates:
            return
        org_id, user_id = self.rng.choice(candidates)
        at = self.tick()
        membership = clerk_membership(
            self.orgs[org_id],
            user_id,
            role=self.rng.choice(ROLES),
            created_at=at,
            identifier=self.users[user_id]["email_addresses"][-1]["email_address"],
        )
        self.members[org_id, user_id] = membership
        self.events.append(envelope("organizationMembership.created", membership))

    def change_role(self) -> None:
        key = self.rng.choice(sorted(self.members))
        membership = {
            **self.members[key],
            "role": self.rng.choice(ROLES),
            "organization": self.orgs[key[0]],
            "updated_at": self.tick(),
        }
        self.members[key] = membership
        self.events.append(envelope("organizationMembership.updated", membership))

    def remove_member(self) -> None:
        key = self.rng.choice(sorted(self.members))
        membership = {**self.members.pop(key), "updated_at": self.tick()}
        self.events.append(envelope("organizationMembership.deleted", membership))

    def invite(self) -> None:
        org_id = self.rng.choice(sorted(self.orgs))
        invitation = clerk_org_invitation(self.orgs[org_id], f"{self.name('inv')}@example.com", created_at=self.tick())
        self.invitations[invitation["id"]] = invitation
        self.events.append(envelope("organizationInvitation.created", invitation))

    def settle_invitation(self) -> None:
        pending = [i for i in sorted(self.invitations) if self.invitations[i]["status"] == "pending"]
        pending = [i for i in pending if self.invitations[i]["organization_id"] in self.orgs]
        if not pending:
            return
        invitation_id = self.rng.choice(pending)
        status = self.rng.choice(("accepted", "revoked"))
        invitation = {**self.invitations[invitation_id], "status": status, "updated_at": self.tick()}
        self.invitations[invitation_id] = invitation
        self.events.append(envelope(f"organizationInvitation.{status}", invitation))

    def step(self) -> None:
        choices = [self.add_user, self.add_org]
        if self.users:
            choices += [self.delete_user] if len(self.users) > 3 else []
        if self.orgs:
            choices += [self.rename_org, self.invite, self.add_member, self.add_member]
            choices += [self.delete_org] if len(self.orgs) > 2 else []
        if self.members:
            choices += [self.change_role, self.change_role, self.remove_member]
        if any(i["status"] == "pending" for i in self.invitations.values()):
            choices += [self.settle_invitation]
        self.rng.choice(choices)()


def history(seed: int) -> ClerkModel:
    model = ClerkModel(random.Random(seed))
    for _ in range(4):
        model.add_user()
    for _ in range(2):
        model.add_org()
    for _ in range(STEPS):
        model.step()
    return model


def deliver_concurrently(app, deliveries: list[Signed]) -> list[int]:
    """8 workers take deliveries from one queue, each with its own client, session and connection."""
    work: queue.Queue[Signed] = queue.Queue()
    for signed in deliveries:
        work.put(signed)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = app.test_client()
        while True:
            try:
                signed = work.get_nowait()
            except queue.Empty:
                return
            response = signed.post(client)
            with lock:
                statuses.append(response.status_code)
            response.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return statuses


def assert_converged(db, model: ClerkModel) -> None:
    db.session.rollback()
    db.session.expire_all()
    users = {u.clerk_id: u for u in db.session.scalars(sa.select(User))}
    assert set(users) == set(model.users) | model.deleted_users  # one row per Clerk user, never two
    assert {c for c, u in users.items() if u.deleted_at is None} == set(model.users)

    orgs = {o.clerk_id: o for o in db.session.scalars(sa.select(Organization))}
    live_orgs = {c for c, o in orgs.items() if o.deleted_at is None}
    assert live_orgs == set(model.orgs)
    assert model.deleted_orgs <= set(orgs)
    for org_id, org in model.orgs.items():
        assert (orgs[org_id].name, orgs[org_id].slug) == (org["name"], org["slug"])
    expected_members = {(org_id, user_id, m["id"], m["role"]) for (org_id, user_id), m in model.members.items()}
    rows = db.session.execute(
        sa.select(
            Organization.clerk_id, Membership.clerk_user_id, Membership.clerk_id, Membership.role, Membership.user_id
        )
        .join(Organization, Membership.organization_id == Organization.id)
        .where(Membership.deleted_at.is_(None))
    ).all()
    assert {(o, u, m, r) for o, u, m, r, _ in rows} == expected_members
    assert all(user_id == users[clerk_user].id for _, clerk_user, _, _, user_id in rows)  # each linked to its user
    for org_id in orgs:
        expected = sum(1 for (o, _) in model.members if o == org_id)
        assert orgs[org_id].members_count == expected, org_id

    stored = {i.clerk_id: i.status for i in db.session.scalars(sa.select(OrganizationInvitation))}
    for invitation_id, invitation in model.invitations.items():
        if invitation["organization_id"] in model.orgs:
            assert stored[invitation_id] == invitation["status"], invitation_id
        else:  # its organization is gone: nothing of it is pending here
            assert stored.get(invitation_id) != "pending", invitation_id

    found = counts.read_counts([counts.ORGANIZATIONS, counts.MEMBERSHIPS])
    actual = {k: n for k, n in counts.recount().items() if k[0] in (counts.ORGANIZATIONS, counts.MEMBERSHIPS)}
    assert dict(found) == actual


@pytest.mark.parametrize("seed", range(8))
def test_shuffled_duplicated_concurrent_deliveries_converge(app, db, seed):
    model = history(seed)
    rng = random.Random(seed * 7919)
    signed = [sign(event) for event in model.events]
    deliveries = signed + [rng.choice(signed) for _ in range(len(signed) // 3)]  # Svix resends some
    rng.shuffle(deliveries)

    statuses = deliver_concurrently(app, deliveries)

    assert statuses.count(200) == len(deliveries), sorted(set(statuses))
    assert_converged(db, model)


def test_the_model_exercises_every_event_type():
    """The histories above are worth something only if they hold every kind of event."""
    seen: set[str] = set()
    for seed in range(8):
        seen |= {event["type"] for event in history(seed).events}
    assert seen >= {
        "user.created",
        "user.deleted",
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organizationMembership.created",
        "organizationMembership.updated",
        "organizationMembership.deleted",
        "organizationInvitation.created",
        "organizationInvitation.accepted",
        "organizationInvitation.revoked",
    }
