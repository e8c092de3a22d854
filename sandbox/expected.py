"""The findings a judge must report about the sandbox organisation, derived from the Org alone.

:func:`expected_findings` walks :class:`sandbox.org.Org` (and the AWS plan) in source terms, the
way :mod:`sandbox.truth` does, and says which finding each planted problem must become in each
connector's evidence: ``(rule, connector id, resource, principal)``. It never reads records or a
stand-in's answers, so a test comparing it with :func:`evidence.findings.assess` over collected
bags checks the connectors *and* the rules. Its reading of the rules is the one the README
documents (judged where a share is made, expired shares ignored, one sharing finding per grant,
grace for accounts created within the inactivity window, contractors by domain and AWS account).

The organisation's context files (:mod:`sandbox.truth`: contractors, roster, register) say the
same as the Org: approved partners are the contractors, every person is on the roster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator, Mapping

from sandbox.org import DEPARTMENTS, File, Org, Share

Key = tuple[str, str, str | None, str | None]   # (rule, connector id, resource, principal)
#: rules whose resource is the tenant / account object: compared without the resource
TENANT_RULES = ("privileged_too_few", "privileged_too_many")


@dataclass(frozen=True)
class Thresholds:
    inactive_days: int = 90
    guest_inactive_days: int = 90
    top_admins_min: int = 2
    top_admins_max: int = 4


def expected_findings(
    org: Org, *, as_of: datetime, connectors: Mapping[str, str], thresholds: Thresholds = Thresholds(),
    m365_ids: Callable[[File | None, str, int], str] | None = None, aws_account_id: str | None = None,
    sponsors_collected: bool = True,
) -> set[Key]:
    """``connectors``: connector type → connector id, for the sources that were collected.

    ``m365_ids(file, kind, index)``: the Microsoft stand-in's resource id of a file (``file``
    given) or of a drive (``kind`` "sp" for a site, "od" for a OneDrive; ``index``)."""
    e = _Expect(org, as_of, thresholds)
    out: set[Key] = set()
    if "google_directory" in connectors:
        out |= {(r, connectors["google_directory"], res, p) for r, res, p in e.directory(guests=False)}
    if "entra_id" in connectors:
        out |= {(r, connectors["entra_id"], res, p) for r, res, p in e.directory(guests=True, sponsors=sponsors_collected)}
    if "google_drive" in connectors:
        out |= {(r, connectors["google_drive"], res, p) for r, res, p in e.drive(lambda f, k, i: f.id if f else org.drive(i).id, guests=False)}
        out |= {(r, connectors["google_drive"], res, p) for r, res, p in e.register("google_drive", connectors["google_drive"])}
    if "m365_files" in connectors and m365_ids is not None:
        out |= {(r, connectors["m365_files"], res, p) for r, res, p in e.drive(m365_ids, guests=True)}
    if "aws_iam" in connectors:
        out |= {(r, connectors["aws_iam"], res, p) for r, res, p in e.iam(aws_account_id)}
    if "aws_s3" in connectors:
        out |= {(r, connectors["aws_s3"], res, p) for r, res, p in e.s3(aws_account_id)}
    return out


class _Expect:
    def __init__(self, org: Org, as_of: datetime, t: Thresholds):
        self.org, self.as_of, self.t = org, as_of, t
        self.departed = {p.email for p in org.people() if p.status == "leaver" or p.suspended}

    # -- classification -------------------------------------------------------------------
    def audience(self, email_or_domain: str) -> str:
        domain = email_or_domain.rsplit("@", 1)[-1].lower()
        if domain == self.org.domain:
            return "internal"
        partner = self.org.partner_for_domain(domain)
        if partner is None or not partner.approved:
            return "unapproved"
        return "contractor_ended" if partner.contract_end < self.as_of.date() else "contractor"

    def inactive(self, last: datetime | None, created: datetime, days: int) -> bool:
        limit = self.as_of - timedelta(days=days)
        if last is None:
            return created <= limit
        return last < limit

    def live(self, s: Share) -> bool:
        return s.expiration is None or s.expiration > self.as_of

    # -- identity sources -------------------------------------------------------------------
    def directory(self, *, guests: bool, sponsors: bool = True) -> Iterator[tuple[str, str | None, str | None]]:
        top = 0
        for p in self.org.people():
            uid, active = f"user:{p.email}", not p.suspended
            admin = p.admin or p.delegated_admin
            top += p.admin and active
            if active and admin and not p.mfa:
                yield "admin_without_mfa", None, uid
            elif active and not p.mfa:
                yield "account_without_mfa", None, uid
            if active and self.inactive(p.last_login, p.created, self.t.inactive_days):
                yield "inactive_account", None, uid
            if active and p.status == "leaver":
                yield "leaver_enabled", None, uid
            if active and p.status == "contractor" and p.end and p.end < self.as_of.date():
                yield "contractor_after_end", None, uid
        yield from self._admin_count(top)
        if guests:
            for g in self.org.guests():
                gid = f"user:{g.email}"
                aud = self.audience(g.email)
                if aud == "unapproved":
                    yield "unapproved_domain", None, gid
                elif aud == "contractor_ended":
                    yield "contractor_after_end", None, gid
                if sponsors and g.invited_by is None:
                    yield "guest_without_sponsor", None, gid
                if self.inactive(g.last_login, g.created, self.t.guest_inactive_days):
                    yield "guest_inactive", None, gid
        for group in self.org.groups():
            for email, _role in self.org.group_members(group):
                rule = {"unapproved": "unapproved_domain", "contractor_ended": "contractor_after_end"}.get(self.audience(email))
                if rule:
                    yield rule, f"group:{group.email}", f"user:{email}"

    def _admin_count(self, top: int) -> Iterator[tuple[str, str | None, str | None]]:
        if top < self.t.top_admins_min:
            yield "privileged_too_few", None, None
        elif top > self.t.top_admins_max:
            yield "privileged_too_many", None, None

    # -- drives (Google Drive and OneDrive/SharePoint serve the same files) -----------------
    def drive(self, ids: Callable[[File | None, str, int], str], *, guests: bool) -> Iterator[tuple[str, str | None, str | None]]:
        org = self.org
        for d in org.drives():
            rid = ids(None, "sp", d.index)
            owners = [m.email for m in d.members if m.role == "organizer"]
            if owners and all(o in self.departed for o in owners):
                yield "leaver_only_owner", rid, f"user:{owners[0]}"
            elif len(owners) == 1:
                yield "single_owner", rid, f"user:{owners[0]}"
            for m in d.members:
                yield from self._share(rid, m, guests)
            for f in org.drive_files(d.index):
                yield from self._file(ids(f, "sp", d.index), f, guests)
        for p in org.people():
            for f in org.user_files(p.index):
                rid = ids(f, "od", p.index)
                yield from self._file(rid, f, guests)
                if p.email in self.departed and any(self.live(s) for s in f.shares):
                    yield "leaver_owns_shared", rid, f"user:{p.email}"

    def _file(self, rid: str, f: File, guests: bool) -> Iterator[tuple[str, str | None, str | None]]:
        for s in f.shares:
            yield from self._share(rid, s, guests)

    def _share(self, rid: str, s: Share, guests: bool) -> Iterator[tuple[str, str | None, str | None]]:
        if not self.live(s):
            return
        if s.type == "anyone":
            yield "public_share", rid, "anyone"
            return
        if s.type != "user" or not s.email:
            return
        aud, pid = self.audience(s.email), f"user:{s.email}"
        if aud == "unapproved":
            yield "unapproved_domain", rid, pid
        elif aud == "contractor_ended":
            yield "contractor_after_end", rid, pid
        elif aud == "contractor":
            if s.expiration is None:
                yield "share_without_expiry", rid, pid
            if guests and s.role in ("writer", "fileOrganizer", "organizer") and self.org.guest_by_email(s.email):
                yield "guest_can_edit", rid, pid

    # -- the register (sandbox.truth.register_toml: the HR shared drive) ---------------------
    def register(self, kind: str, connector_id: str) -> Iterator[tuple[str, str | None, str | None]]:
        org = self.org
        hr = next(dept for dept in DEPARTMENTS if dept.key == "jinji")
        drive = next(d for d in org.drives() if d.department == hr)
        group = f"{hr.key}@{org.domain}"
        members = {email for email, _ in org.group_members(org.group(f"dept-{hr.key}"))}
        bpo = next(p for p in org.partners if p.key == "bpo")
        reach: set[str] = set()
        shares = list(drive.members) + [s for f in org.drive_files(drive.index) for s in f.shares]
        for s in shares:
            if not self.live(s):
                continue
            if s.type == "anyone":
                reach.add("anyone")
            elif s.type == "domain":
                reach.add(f"domain:{s.domain}")
            elif s.type == "group":
                reach.add(f"group:{s.email}")
            else:
                reach.add(f"user:{s.email}")
        for pid in sorted(reach):
            email = pid.split(":", 1)[-1]
            ok = (pid == f"group:{group}" or (pid.startswith("user:") and email in members)
                  or (pid.startswith("user:") and email.endswith("@" + bpo.domain) and bpo.contract_end >= self.as_of.date()))
            if not ok:
                yield "register_drift", f"{connector_id}:{drive.id}", pid

    # -- AWS ---------------------------------------------------------------------------------
    def iam(self, account_id: str | None) -> Iterator[tuple[str, str | None, str | None]]:
        from sandbox.aws.plan import ADMINS, aws_plan

        plan = aws_plan(self.org, **({"account_id": account_id} if account_id else {}))
        yield "admin_without_mfa", None, f"arn:aws:iam::{plan.account_id}:root"   # moto's root has no MFA
        top = 0
        for u in plan.users:
            arn, p = plan.user_arn(u.name), self.org.person(u.person)
            admin = ADMINS in u.groups or u.inline_admin
            top += admin and u.active
            if u.active and admin and not u.mfa:
                yield "admin_without_mfa", None, arn
            elif u.active and not u.mfa:
                yield "account_without_mfa", None, arn
            if u.active and u.status == "leaver":
                yield "leaver_enabled", None, arn
            if u.active and u.status == "contractor" and p.end and p.end < self.as_of.date():
                yield "contractor_after_end", None, arn
        yield from self._admin_count(top)
        for role in plan.roles:
            principal = role.principal.get("AWS", "")
            account = principal.split(":")[4] if principal.startswith("arn:aws:iam::") else None
            if role.kind == "partner":
                partner = next(p for p in self.org.partners if p.aws_account_id == account)
                yield self._contracted(partner), plan.role_arn(role.name), f"aws-account:{account}"
            elif role.kind == "unknown":
                yield "unapproved_domain", plan.role_arn(role.name), f"aws-account:{account}"

    def s3(self, account_id: str | None) -> Iterator[tuple[str, str | None, str | None]]:
        from sandbox.aws.plan import aws_plan, canonical_id

        plan = aws_plan(self.org, **({"account_id": account_id} if account_id else {}))
        for b in plan.buckets:
            if b.kind in ("public_policy", "public_acl"):
                yield "public_share", b.arn, "anyone"
            if b.grant_read_to:  # an approved partner's canonical id, listed in contractors.toml: judged by its contract
                partner = next(p for p in self.org.partners if p.aws_account_id and canonical_id(p.aws_account_id) == b.grant_read_to)
                yield self._contracted(partner), b.arn, f"aws-canonical:{b.grant_read_to}"

    def _contracted(self, partner) -> str:
        """The finding on a grant, without expiry, to an approved partner."""
        return "contractor_after_end" if partner.contract_end < self.as_of.date() else "share_without_expiry"
