"""The organization pages' forms: each rule shown by its field, the roles offered, the email kept in
its one spelling, the user named by id or email; and CLERK_ORGANIZATION_ROLES read from the
environment. What the services do with the values is in test_organizations_services.py.
"""

from __future__ import annotations

import pytest

from app.config import ConfigError, from_environment, organization_roles
from app.models import UserRole, utcnow
from app.organizations.forms import (
    AddMemberForm,
    MemberRoleForm,
    OrganizationEditForm,
    OrganizationInviteForm,
)
from app.organizations.services import role_label
from tests.org_factories import make_organization


def posted(app, form_class, data: dict, **kwargs):
    """The form as a POST of `data` fills it, validated (no CSRF: the pages' tests cover it)."""
    with app.test_request_context("/", method="POST", data=data):
        form = form_class(meta={"csrf": False}, **kwargs)
        form.validate()
        return form


def opened(app, form_class, **kwargs):
    with app.test_request_context("/"):
        return form_class(meta={"csrf": False}, **kwargs)


# --- OrganizationEditForm ---------------------------------------------------------------------------


def test_a_good_name_and_slug_pass_trimmed(app):
    form = posted(app, OrganizationEditForm, {"name": "  Acme Corp ", "slug": " acme-corp ", "version": "3"})
    assert form.errors == {}
    assert (form.name.data, form.slug_value(), form.expected_version()) == ("Acme Corp", "acme-corp", 3)


@pytest.mark.parametrize(
    "name", ["A", "  A  ", "", "x" * 257, "Acme\nCorp", "Acme\x07", "Acme\u202eproC", "\u2067Acme"]
)
def test_a_bad_name_is_the_name_fields_error(app, name):
    form = posted(app, OrganizationEditForm, {"name": name, "slug": "acme"})
    assert list(form.errors) == ["name"]


@pytest.mark.parametrize("name", ["AB", "x" * 256, "Ünïcödé GmbH", "株式会社"])
def test_names_of_2_to_256_characters_pass(app, name):
    assert posted(app, OrganizationEditForm, {"name": name, "slug": "acme"}).errors == {}


@pytest.mark.parametrize("slug", ["Acme", "acme corp", "acme_corp", "---", "-", "acmé", "a.b", "a/b", "a" * 257])
def test_a_malformed_slug_is_the_slug_fields_error(app, slug):
    form = posted(app, OrganizationEditForm, {"name": "Acme", "slug": slug})
    assert list(form.errors) == ["slug"]
    assert "Lowercase letters, digits and hyphens" in form.slug.errors[0] or "At most" in form.slug.errors[0]


@pytest.mark.parametrize("slug", ["acme", "acme-corp", "a1", "-acme-", "2024", "a" * 256])
def test_slugs_as_clerk_takes_them_pass(app, slug):
    assert posted(app, OrganizationEditForm, {"name": "Acme", "slug": slug}).errors == {}


def test_a_blank_slug_is_left_to_the_service_and_a_bad_version_is_none(app):
    form = posted(app, OrganizationEditForm, {"name": "Acme", "slug": "  ", "version": "x"})
    assert form.errors == {}
    assert (form.slug_value(), form.expected_version()) == (None, None)


def test_the_edit_form_opens_with_the_organizations_values(app, db):
    organization = make_organization(name="Acme", slug="acme")
    with app.test_request_context("/"):
        form = OrganizationEditForm(meta={"csrf": False})
        form.fill_from(organization)
        assert (form.name.data, form.slug.data, form.version.data) == ("Acme", "acme", organization.version)


# --- roles ------------------------------------------------------------------------------------------


def test_roles_offered_are_the_configured_ones_labelled(app):
    form = opened(app, OrganizationInviteForm)
    assert [(c.value, c.label) for c in form.role.choices] == [("org:admin", "Admin"), ("org:member", "Member")]
    assert form.role.data == "org:member"
    assert role_label("org:billing_manager") == "Billing manager"
    assert role_label("basic_member") == "basic_member"


def test_an_unknown_role_is_the_role_fields_error(app):
    for form_class, data in (
        (OrganizationInviteForm, {"email": "a@example.com", "role": "org:owner"}),
        (AddMemberForm, {"user": "nobody", "role": "org:owner"}),
        (MemberRoleForm, {"role": "org:owner"}),
        (OrganizationInviteForm, {"email": "a@example.com"}),  # none sent: no silent default
    ):
        form = posted(app, form_class, data)
        assert "role" in form.errors, form_class


def test_a_members_current_role_is_offered_to_them_alone(app):
    assert posted(app, MemberRoleForm, {"role": "org:billing"}, current_role="org:billing").errors == {}
    assert "role" in posted(app, MemberRoleForm, {"role": "org:billing"}, current_role="org:member").errors
    form = opened(app, MemberRoleForm, current_role="org:billing")
    assert [c.value for c in form.role.choices] == ["org:admin", "org:member", "org:billing"]
    assert form.role.data == "org:billing"


def test_configured_roles_replace_the_default_ones(app):
    app.config["CLERK_ORGANIZATION_ROLES"] = ["org:admin", "org:viewer"]
    form = posted(app, OrganizationInviteForm, {"email": "a@example.com", "role": "org:viewer"})
    assert form.errors == {}
    assert "role" in posted(app, OrganizationInviteForm, {"email": "a@example.com", "role": "org:member"}).errors


# --- AddMemberForm ----------------------------------------------------------------------------------


def test_a_member_is_named_by_email_id_or_clerk_id(app, db, make_user):
    grace = make_user(email="grace@example.com")
    for named in ("Grace@Example.com", f" {grace.id} ", grace.clerk_id):
        form = posted(app, AddMemberForm, {"user": named, "role": "org:admin"})
        assert form.errors == {} and form.member.id == grace.id, named


def test_a_user_nobody_has_is_the_user_fields_error(app, db, make_user):
    make_user(email="gone@example.com", deleted_at=utcnow())
    for named in ("", "nobody@example.com", "gone@example.com", "not an id", "a\x07b"):
        form = posted(app, AddMemberForm, {"user": named, "role": "org:member"})
        assert list(form.errors) == ["user"], named
        assert form.member is None


def test_a_staff_email_finds_the_staff_row(app, db, make_user):
    staff = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    assert posted(app, AddMemberForm, {"user": "boss@example.com", "role": "org:member"}).member.id == staff.id


# --- OrganizationInviteForm ---------------------------------------------------------------------------


def test_the_email_is_kept_in_its_one_spelling(app):
    form = posted(app, OrganizationInviteForm, {"email": "  New.Person@EXAMPLE.com ", "role": "org:admin"})
    assert form.errors == {}
    assert (form.email.data, form.role.data) == ("new.person@example.com", "org:admin")
    assert posted(app, OrganizationInviteForm, {"email": "a@BÜCHER.de", "role": "org:member"}).email.data == (
        "a@bücher.de"
    )


@pytest.mark.parametrize("email", ["", "not-an-email", "a@b", "two@@example.com", "a\u202e@example.com", "x" * 330])
def test_an_address_that_is_not_one_is_the_email_fields_error(app, email):
    form = posted(app, OrganizationInviteForm, {"email": email, "role": "org:member"})
    assert list(form.errors) == ["email"]


# --- CLERK_ORGANIZATION_ROLES -----------------------------------------------------------------------


def test_organization_roles_come_from_the_environment():
    assert from_environment({})["CLERK_ORGANIZATION_ROLES"] == ["org:admin", "org:member"]
    assert organization_roles(" org:admin , org:billing,,org:admin ") == ["org:admin", "org:billing"]
    assert organization_roles("") == ["org:admin", "org:member"]
    for bad in ("admin", "org:", "org:a b", "org:admin,member"):
        with pytest.raises(ConfigError, match="CLERK_ORGANIZATION_ROLES"):
            organization_roles(bad)


def test_a_form_shown_again_during_a_post_still_preselects_the_role(app):
    with app.test_request_context("/", method="POST", data={"name": "x"}):
        assert OrganizationInviteForm(formdata=None, meta={"csrf": False}).role.data == "org:member"
        assert AddMemberForm(formdata=None, meta={"csrf": False}).role.data == "org:member"
        assert MemberRoleForm(formdata=None, current_role="org:admin", meta={"csrf": False}).role.data == "org:admin"
