"""`team list`, `team add` and `team remove`: who may use the staff commands, with which role."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from handlers.errors import Conflict, NotFound
from handlers.models import Role, StaffMember
from handlers.staff.commands import Reply, columns, iso, local_time, register

if TYPE_CHECKING:
    from handlers.services import Tx

_ORDER = {role: i for i, role in enumerate(Role)}


def member(tx: "Tx", slack_user_id: str) -> StaffMember | None:
    return tx.session.scalar(select(StaffMember).where(StaffMember.slack_user_id == slack_user_id))


def _as_json(m: StaffMember) -> dict[str, Any]:
    return {"slack_user_id": m.slack_user_id, "role": m.role.value, "name": m.name, "email": m.email,
            "added_at": iso(m.added_at), "added_by": m.added_by}


def _keep_an_admin(tx: "Tx", leaving: StaffMember) -> None:
    """Refuse to take away the last admin: nobody could add staff from Slack any more."""
    # FOR UPDATE so two admins removing each other at once cannot both succeed (PostgreSQL);
    # SQLite's BEGIN IMMEDIATE already serialises writers.
    admins = tx.session.scalars(
        select(StaffMember.id).where(StaffMember.role == Role.admin).with_for_update()).all()
    if len(admins) <= 1:
        raise Conflict(f"{leaving.slack_user_id} is the last admin; make someone else admin first",
                       hint="team add SLACK_USER_ID admin")


@register("team list")
def team_list(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Everyone on the team, admins first."""
    members = sorted(tx.session.scalars(select(StaffMember)), key=lambda m: (_ORDER[m.role], m.slack_user_id))
    if not members:
        text = "nobody on the team yet; from a shell: renewdesk staff team add SLACK_USER_ID admin"
    else:
        rows = [(m.slack_user_id, m.role.value, m.name or "-", f"added {local_time(tx, m.added_at)} by {m.added_by}")
                for m in members]
        text = "\n".join([f"team ({len(members)})", *columns(rows)])
    return Reply(title="team", text=text, data={"members": [_as_json(m) for m in members]})


@register("team add")
def team_add(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Add a staff member, or change the role of one already on the team."""
    uid, role = args["slack_user_id"], Role(args["role"])
    found = member(tx, uid)
    if found is None:
        found = StaffMember(slack_user_id=uid, role=role, added_at=tx.now, added_by=tx.actor)
        tx.session.add(found)
        tx.session.flush()
        tx.audit("staff.add", subject=found, slack_user_id=uid, role=role.value)
        return Reply(title="team add", text=f"added {uid} as {role.value}",
                     data={**_as_json(found), "changed": True, "previous_role": None})
    previous = found.role
    if previous == role:
        return Reply(title="team add", text=f"{uid} is already {role.value}",
                     data={**_as_json(found), "changed": False, "previous_role": previous.value})
    if previous == Role.admin:
        _keep_an_admin(tx, found)
    found.role = role
    tx.audit("staff.role", subject=found, slack_user_id=uid, previous_role=previous.value, role=role.value)
    return Reply(title="team add", text=f"{uid} is now {role.value} (was {previous.value})",
                 data={**_as_json(found), "changed": True, "previous_role": previous.value})


@register("team remove")
def team_remove(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Take a staff member off the team; the last admin stays."""
    uid = args["slack_user_id"]
    found = member(tx, uid)
    if found is None:
        raise NotFound(f"{uid} is not on the team", hint="team list")
    if found.role == Role.admin:
        _keep_an_admin(tx, found)
    data = _as_json(found)
    tx.audit("staff.remove", subject=found, slack_user_id=uid, role=found.role.value)
    tx.session.delete(found)
    return Reply(title="team remove", text=f"removed {uid} ({data['role']})", data={**data, "removed": True})
