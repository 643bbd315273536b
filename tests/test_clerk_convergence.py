"""The two sides converge: whatever admins edit, whenever Clerk is down, and in whatever order and
how often Clerk's webhooks arrive, the local row ends equal to Clerk's user (DESIGN §7, §8).

Each seed plays a random story against the fake Clerk on loopback, driven by the real SDK:
admins edit names, username, external id, email, metadata and status; the user changes their own
name in Clerk; Clerk goes down and comes back, or answers 500; the outbox pushes; and every state
Clerk passes through is sent as a signed `user.updated`, delivered late, shuffled and duplicated.

After every step the row must be exactly one of Clerk's states (the one its `clerk_updated_at`
names), except the fields an admin changed that Clerk does not hold yet, which keep the admin's
value: no stale webhook undoes an edit, and no edit Clerk took is undone either. At the end,
with Clerk up and every delivery in, the row equals Clerk's user.
"""

from __future__ import annotations

import copy
import json
import random
import time

import pytest

from app.audit.services import Actor
from app.clerk.outbox import OPEN_STATES, fields_waiting
from app.clerk.outbox.delivery import deliver_due
from app.models import ClerkCall, User, UserRole, UserStatus
from app.users.services import edit_user, set_metadata, set_status
from tests.clerk_payloads import envelope, sign
from tests.fake_clerk import bapi_user, connected_fake_clerk

SEEDS = range(12)
STEPS = 40
COMPARED = ("first_name", "last_name", "username", "external_id", "email", "locked")
METADATA = ("public_metadata", "private_metadata", "unsafe_metadata")


class Story:
    def __init__(self, rng: random.Random, app, client, db, fake, user: User, admin: User) -> None:
        self.rng, self.app, self.client, self.db, self.fake = rng, app, client, db, fake
        self.user_id, self.clerk_id, self.admin_id = user.id, user.clerk_id, admin.id
        self.webhooks: list = []  # signed deliveries not sent yet (Svix may send any of them later)
        self.sent: list = []  # sent once: Svix may send them again
        self.serial = 0
        self.intended: dict[str, object] = {}  # each field's value as the admin last saved it
        self.states: dict[int, dict] = {}  # every state Clerk's user passed through, by updated_at
        self.record_clerk_states()

    def record_clerk_states(self) -> None:
        """Keep each state the fake's user passes through, also inside one push (email: two calls)."""
        change = self.fake._change

        def recording(*args, **kwargs):
            answer = change(*args, **kwargs)
            self.remember_state()
            return answer

        self.fake._change = recording
        self.remember_state()

    def remember_state(self) -> None:
        clerk_user = self.fake.user(self.clerk_id)
        if clerk_user is not None:
            self.states[clerk_user["updated_at"]] = copy.deepcopy(clerk_user)

    def saved(self, *fields: str) -> None:
        user = self.user()
        for name in fields:
            self.intended[name] = getattr(user, name)

    def check(self) -> None:
        """The row is Clerk's state at its clerk_updated_at, but for the admin's edits Clerk lacks."""
        user = self.user()
        waiting = fields_waiting([user.id]).get(user.id, set())
        ours, clerks = local_and_clerk(user, self.states[user.clerk_updated_at])
        for name, value in ours.items():
            if name in waiting:
                assert getattr(user, name) == self.intended[name], f"{name}: an edit not in Clerk yet was undone"
            else:
                assert value == clerks[name], f"{name}: not Clerk's value at version {user.clerk_updated_at}"

    # --- the actors ----------------------------------------------------------------------------

    def user(self) -> User:
        self.db.session.rollback()
        return self.db.session.get(User, self.user_id, populate_existing=True)

    def actor(self) -> Actor:
        return Actor.staff(self.db.session.get(User, self.admin_id))

    def word(self) -> str:
        self.serial += 1
        return self.rng.choice(["Ada", "Grace", "Edsger", "Barbara", "Ken"]) + str(self.serial)

    def admin_edits(self) -> None:
        user, field = self.user(), self.rng.choice(["first_name", "last_name", "username", "external_id", "email"])
        value = f"{self.word().lower()}@example.com" if field == "email" else self.word()
        if field == "username":
            value = value.lower()
        edit_user(user, {field: value}, expected_version=None, actor=self.actor())
        self.db.session.commit()
        self.saved(field)

    def admin_edits_metadata(self) -> None:
        user, kind = self.user(), self.rng.choice(METADATA)
        value = json.loads(getattr(user, kind) or "{}")
        if value and self.rng.random() < 0.4:
            value.pop(self.rng.choice(sorted(value)))  # a removed key must go in Clerk too
        value[self.rng.choice(["plan", "seats", "tags", "nested"])] = self.rng.choice(
            [self.word(), self.serial, [self.serial, "x"], {"depth": {"n": self.serial}}, True]
        )
        set_metadata(user, kind, value, actor=self.actor())
        self.db.session.commit()
        self.saved(kind)

    def admin_toggles_suspension(self) -> None:
        user = self.user()
        target = UserStatus.ACTIVE if user.status == UserStatus.SUSPENDED else UserStatus.SUSPENDED
        set_status(user, target, actor=self.actor())
        self.db.session.commit()

    def user_edits_in_clerk(self) -> None:
        """The user changes their own name (or Clerk-side metadata) in Clerk: a new state."""
        clerk_user = self.fake.user(self.clerk_id)
        field = self.rng.choice(["first_name", "last_name", "unsafe_metadata"])
        with self.fake._lock:
            if field == "unsafe_metadata":
                clerk_user[field] = {**(clerk_user.get(field) or {}), "theme": self.word()}
            else:
                clerk_user[field] = self.word()
            clerk_user["updated_at"] += 1
        self.remember_state()
        self.clerk_state_is_sent()

    def clerk_goes_down_or_up(self) -> None:
        if self.fake._server is None:
            self.fake.start()
        elif self.rng.random() < 0.5:
            self.fake.stop()
        else:
            self.fake.fail_next.append((self.rng.choice([500, 502, 503, 429]), {"Retry-After": "1"}))

    def push(self) -> None:
        self.clerk_state_is_sent()  # Clerk's state before the push ...
        deliver_due(50, deadline=time.monotonic() + 5, timeout_ms=2_000, user_ids=[self.user_id], actor=Actor.cli())
        self.clerk_state_is_sent()  # ... and after it: both reach us, in any order

    # --- webhooks --------------------------------------------------------------------------------

    def clerk_state_is_sent(self) -> None:
        if self.fake.user(self.clerk_id) is None:
            return
        self.webhooks.append(sign(envelope("user.updated", self.fake.webhook_data(self.clerk_id))))

    def webhooks_arrive(self, everything: bool = False) -> None:
        self.rng.shuffle(self.webhooks)
        count = len(self.webhooks) if everything else self.rng.randint(0, len(self.webhooks))
        arriving, self.webhooks = self.webhooks[:count], self.webhooks[count:]
        if self.sent and self.rng.random() < 0.5:
            arriving.append(self.rng.choice(self.sent))  # Svix sends one again
        for signed in arriving:
            response = signed.post(self.client)
            assert response.status_code == 200, response.get_data(as_text=True)
            self.sent.append(signed)

    # --- the story ---------------------------------------------------------------------------------

    def play(self) -> None:
        moves = [
            (self.admin_edits, 4),
            (self.admin_edits_metadata, 3),
            (self.admin_toggles_suspension, 1),
            (self.user_edits_in_clerk, 2),
            (self.clerk_goes_down_or_up, 2),
            (self.push, 3),
            (self.webhooks_arrive, 3),
        ]
        for _ in range(STEPS):
            move = self.rng.choices([m for m, _ in moves], weights=[w for _, w in moves])[0]
            move()
            self.check()
        # Clerk comes back for good; the outbox drains; every delivery arrives, shuffled, some twice.
        if self.fake._server is None:
            self.fake.start()
        self.fake.fail_next.clear()
        for _ in range(20):
            self.push()
            if not self.open_calls():
                break
        assert not self.open_calls(), "the outbox did not drain with Clerk up"
        self.webhooks_arrive(everything=True)
        for signed in self.rng.sample(self.sent, min(5, len(self.sent))):
            assert signed.post(self.client).status_code == 200
        self.check()

    def open_calls(self) -> list[ClerkCall]:
        self.db.session.rollback()
        calls = self.db.session.query(ClerkCall).filter(ClerkCall.state.in_(OPEN_STATES)).all()
        assert all(c.state == "pending" for c in calls), [(c.operation, c.last_error) for c in calls]
        return calls


def local_and_clerk(user: User, clerk_user: dict) -> tuple[dict, dict]:
    from app.clerk.sync import clerk_user_from_dict

    theirs = clerk_user_from_dict(clerk_user).fields
    ours = {name: getattr(user, name) for name in COMPARED}
    clerks = {name: theirs.get(name) for name in COMPARED}
    for name in METADATA:
        ours[name] = json.loads(getattr(user, name) or "{}")
        clerks[name] = json.loads(theirs.get(name) or "{}")
    return ours, clerks


@pytest.mark.parametrize("seed", SEEDS)
def test_the_local_row_ends_equal_to_clerks_user(seed, app, client, db, make_user, signing_secret):
    start = bapi_user(
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        username="ada",
        public_metadata={"plan": "free"},
    )
    with connected_fake_clerk(app, [start]) as fake:
        app.config["CLERK_OUTBOX_REQUEST_BUDGET_MS"] = 300
        admin = make_user(email=f"root{seed}@staff.example", role=UserRole.SUPER_ADMIN)
        user = make_user(email="ada@example.com", clerk_id=start["id"])
        assert sign(envelope("user.created", fake.webhook_data(start["id"]))).post(client).status_code == 200
        story = Story(random.Random(seed), app, client, db, fake, user, admin)
        story.play()

        ours, clerks = local_and_clerk(story.user(), fake.user(start["id"]))
        assert ours == clerks, f"seed {seed}"
        if "status" in ours["public_metadata"]:  # the dashboard's keys reach Clerk too
            assert ours["public_metadata"]["status"] == story.user().status.value
