"""How audit events read on the pages: a label per action, and the stored changes as a dict."""

from __future__ import annotations

import json

ACTION_LABELS = {
    "user.update": "Edited",
    "user.invite": "Invited",
    "user.create_admin": "Made an administrator",
    "user.suspend": "Suspended",
    "user.reactivate": "Reactivated",
    "user.deactivate": "Marked inactive",
    "user_data.add": "Key-value added",
    "user_data.update": "Key-value edited",
    "user_data.delete": "Key-value deleted",
    "auth.sign_in_link_issued": "Sign-in link issued",
    "auth.signed_in": "Signed in to the dashboard",
    "demo.seed": "Demo data seeded",
    "user.claimed": "Joined through Clerk (invitation claimed)",
    "user.invitation_sent": "Invitation sent by Clerk",
    "user.invitation_revoke": "Invitation revoked",
    "user.invitation_resend": "Invitation sent again",
    "clerk.retry": "Call to Clerk retried",
    "auth.sign_in_refused": "Sign-in link refused",
    "auth.signed_out": "Signed out of the dashboard",
    "user.create": "Created from Clerk",
    "user.sign_in": "Signed in",
    "user.metadata": "Metadata edited",
    "user.unlock": "Unlocked",
    "user.sessions_revoke": "Signed out everywhere",
    "user.delete": "Deleted",
    "clerk.email_refused": "Email change refused by Clerk (email put back)",
    "clerk.take_value": "Took Clerk's value",
    "clerk.answer": "Updated from Clerk's answer to a call",
    "organization.create": "Organization created",
    "organization.update": "Organization updated",
    "organization.rename": "Organization renamed",
    "organization.delete": "Organization deleted",
    "membership.create": "Member added",
    "membership.update": "Membership updated",
    "membership.role": "Member's role changed",
    "membership.remove": "Member removed",
    "membership.delete": "Membership ended",
    "membership.claimed": "Membership confirmed by Clerk",
    "membership.replaced": "Membership replaced by a newer one",
    "membership.organization_deleted": "Memberships ended (organization deleted)",
    "organization_invitation.create": "Invited to the organization",
    "organization_invitation.update": "Organization invitation updated",
    "organization_invitation.revoke": "Organization invitation revoked",
    "organization_invitation.claimed": "Organization invitation confirmed by Clerk",
    "organization_invitation.organization_deleted": "Invitation revoked (organization deleted)",
    "staff_group.create": "Staff group created",
    "staff_group.update": "Staff group renamed or described",
    "staff_group.permissions": "Staff group's permissions changed",
    "staff_group.delete": "Staff group deleted",
    "staff_group.member_add": "Added to a staff group",
    "staff_group.member_remove": "Removed from a staff group",
    "maintenance.prune": "Old history pruned (retention)",
}


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action.replace("_", " ").replace(".", ": "))


def parse_changes(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
