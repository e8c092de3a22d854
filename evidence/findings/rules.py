"""The rules: small pure functions from records to findings.

Each rule reads the records of one judged bag (:class:`Source`) and what the organisation told
us (:class:`World`: its domains, contractors, roster, register, and facts joined across the
identity sources by e-mail address), and yields :class:`Finding` objects without controls or
exception status (:mod:`evidence.findings.assess` adds those).

How sharing is judged, once for every rule that looks at grants:

* a share is judged where it was made: grants inherited from a parent (``inherited_from`` set)
  are not findings of their own (one anyone-link on a folder is one finding, not one per file);
* a grant whose expiry has passed gives no access and is not judged;
* the audience of a grant is, in order: ``anyone`` (an anyone / anonymous link or a public
  bucket), internal (the organisation's domains, or an AWS principal the connector marked as not
  external), an approved contractor (``contractors.toml``: by domain, or by AWS account id),
  whose contract may have ended, or unapproved. One grant gives at most one of
  ``public_share`` / ``unapproved_domain`` / ``contractor_after_end`` / ``share_without_expiry``
  (the first that applies); ``guest_can_edit`` is judged beside them for active contractors'
  guests, because edit rights are a separate question from whether the guest should be there.

An *account* is a user, guest or service account of an identity source (Google directory,
Entra ID, AWS IAM); external group members that Google lists as principals are not accounts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping

from collector.context import Context, Contractor
from evidence.findings.model import EvidenceRef, Finding, JudgedBundle, RULES, Settings
from evidence.findings.select import records
from evidence.model import parse_utc
from evidence.vault import Vault

IDENTITY_TYPES = ("google_directory", "entra_id", "aws_iam")
ACCOUNT_KINDS = ("user", "guest", "service_account")
EDIT_ROLES = ("editor", "owner", "admin")
#: resource kinds that are shared locations (a shared drive, a SharePoint site's library, a bucket)
LOCATION_KINDS = ("shared_drive", "site", "bucket")


@dataclass
class Source:
    """One judged bag whose records the rules read."""

    vault: Vault
    bundle: JudgedBundle

    @property
    def id(self) -> str:
        return self.bundle.connector_id

    @property
    def type(self) -> str:
        return self.bundle.connector_type

    @property
    def readable(self) -> bool:
        return self.bundle.bag is not None and self.bundle.status in ("complete", "partial")

    def records(self, stream: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return records(self.vault, self.bundle, stream) if self.readable else iter(())

    def ref(self, stream: str, key: str) -> EvidenceRef:
        return EvidenceRef(self.id, self.bundle.bag or "", self.bundle.digest or "", stream, key)


@dataclass
class World:
    """What every rule may know besides the records of the bag it reads."""

    as_of: datetime
    settings: Settings
    context: Context
    domains: tuple[str, ...]
    departed: set[str] = field(default_factory=set)          # e-mails of leavers and disabled accounts
    group_members: dict[str, set[str]] = field(default_factory=dict)   # group id -> member ids (transitive)

    @property
    def today(self) -> date:
        return self.as_of.date()

    def internal(self, domain: str | None) -> bool:
        if not domain:
            return False
        domain = domain.lower().rsplit("@", 1)[-1]
        return any(domain == d or domain.endswith("." + d) for d in self.domains)

    def older_than(self, stamp: str | None, days: int) -> bool:
        t = parse_utc(stamp)
        return t is None or t < self.as_of - timedelta(days=days)

    def new(self, created: str | None, days: int) -> bool:
        """Created within ``days`` of the judging date (a new account that has not signed in yet)."""
        t = parse_utc(created)
        return t is not None and t > self.as_of - timedelta(days=days)


# -- small facts about records ----------------------------------------------------------------


def email_of(principal_id: str | None, email: str | None = None) -> str | None:
    if email:
        return email.lower()
    if principal_id and principal_id.startswith(("user:", "group:")) and "@" in principal_id:
        return principal_id.split(":", 1)[1].lower()
    return None


def domain_of(grant: Mapping[str, Any]) -> str | None:
    d = grant.get("principal_domain")
    if d:
        return d.lower()
    e = email_of(grant.get("principal_id"), grant.get("principal_email"))
    if e:
        return e.rsplit("@", 1)[1]
    pid = grant.get("principal_id") or ""
    return pid.split(":", 1)[1].lower() if pid.startswith("domain:") else None


def aws_account_of(principal_id: str | None) -> str | None:
    return principal_id.split(":", 1)[1] if principal_id and principal_id.startswith("aws-account:") else None


def is_account(source: Source, p: Mapping[str, Any]) -> bool:
    if source.type not in IDENTITY_TYPES or p.get("kind") not in ACCOUNT_KINDS:
        return False
    return (p.get("attributes") or {}).get("source") != "group membership"


def is_aws_root(p: Mapping[str, Any]) -> bool:
    return str(p.get("id", "")).endswith(":root") and str(p.get("id", "")).startswith("arn:aws:iam::")


def active(source: Source, p: Mapping[str, Any]) -> bool:
    """Can the account be used now: enabled, or for IAM (no such flag) a password or an active key."""
    if p.get("enabled") is not None:
        return bool(p["enabled"])
    if source.type == "aws_iam":
        a = p.get("attributes") or {}
        return is_aws_root(p) or bool(a.get("console_access")) or any(k.get("active") for k in a.get("access_keys") or ())
    return False


def last_activity(source: Source, p: Mapping[str, Any]) -> str | None:
    """The latest sign-in, or for IAM the latest password or access-key use."""
    if source.type != "aws_iam":
        return p.get("last_sign_in")
    a = p.get("attributes") or {}
    stamps = [a.get("password_last_used")] + [k.get("last_used") for k in a.get("access_keys") or () if k.get("active")]
    stamps = [s for s in stamps if s]
    return max(stamps, key=lambda s: parse_utc(s)) if stamps else None


def top_admin(source: Source, p: Mapping[str, Any]) -> bool:
    """Holds the top administrator role of its source."""
    if source.type == "google_directory":
        return bool((p.get("attributes") or {}).get("is_super_admin"))
    if source.type == "entra_id":
        return "Global Administrator" in (p.get("roles") or ())
    if source.type == "aws_iam":
        return bool(p.get("admin")) and p.get("kind") == "user" and not is_aws_root(p)
    return False


def live(grant: Mapping[str, Any], world: World) -> bool:
    expiry = parse_utc(grant.get("expiry"))
    return expiry is None or expiry > world.as_of


@dataclass(frozen=True)
class Audience:
    kind: str                           # anyone | internal | contractor | contractor_ended | unapproved | unknown
    contractor: Contractor | None = None


def audience(grant: Mapping[str, Any], world: World) -> Audience:
    pid = grant.get("principal_id")
    if pid == "anyone":
        return Audience("anyone" if grant.get("link_scope") == "anyone" else "unknown")
    if pid and pid.startswith("aws-canonical:"):  # an S3 canonical user other than the bucket's own account
        if grant.get("external") is False:
            return Audience("internal")
        return _contracted(world.context.contractor_for_canonical_id(pid.removeprefix("aws-canonical:")), world)
    account = aws_account_of(pid)
    if account is not None:
        if grant.get("external") is False:
            return Audience("internal")
        c = world.context.contractor_for_aws_account(account)
        return _contracted(c, world) if grant.get("external") else Audience("unknown")
    domain = domain_of(grant)
    if domain is None:
        return Audience("unknown")
    if world.internal(domain):
        return Audience("internal")
    return _contracted(world.context.contractor_for_domain(domain), world)


def _contracted(c: Contractor | None, world: World) -> Audience:
    if c is None:
        return Audience("unapproved")
    return Audience("contractor_ended" if c.contract_end < world.today else "contractor", c)


def _finding(source: Source, rule: str, stream: str, key: str, *, resource: str | None = None,
             principal: str | None = None, **extra: Any) -> Finding:
    return Finding(rule=rule, severity=RULES[rule].severity, connector_id=source.id, resource=resource,
                   principal=principal, evidence=(source.ref(stream, key),), **extra)


def _contract_detail(a: Audience) -> dict[str, Any]:
    return {"contractor": a.contractor.name, "contract_end": a.contractor.contract_end.isoformat()} if a.contractor else {}


# -- rules over accounts (principals of identity sources) -------------------------------------


def account_rules(source: Source, key: str, p: Mapping[str, Any], world: World) -> Iterator[Finding]:
    """Rules 4–8 and 11 over one account."""
    if not is_account(source, p):
        return
    pid, email = p["id"], email_of(p["id"], p.get("email"))
    base = {"principal": pid, "principal_email": email}
    is_active = active(source, p)
    s = world.settings
    if p["kind"] == "guest":
        yield from _guest_rules(source, key, p, world, base, is_active)
        return
    if is_active and p.get("admin") and p.get("mfa") is False:
        yield _finding(source, "admin_without_mfa", "principals", key, **base, detail={"roles": list(p.get("roles") or ())})
    elif is_active and p["kind"] == "user" and p.get("external") is False and p.get("mfa") is False:
        yield _finding(source, "account_without_mfa", "principals", key, **base, detail={})
    if is_active and p["kind"] == "user" and p.get("external") is False and not is_aws_root(p):
        last = last_activity(source, p)
        if world.older_than(last, s.inactive_days) and not (last is None and world.new(p.get("created"), s.inactive_days)):
            yield _finding(source, "inactive_account", "principals", key, **base,
                           detail={"last_activity": last or "never", "days": s.inactive_days})
    person = world.context.person_by_email(email) if email else None
    if is_active and person is not None:
        if person.status == "leaver":
            yield _finding(source, "leaver_enabled", "principals", key, **base, detail={"left": person.end.isoformat()})
        elif person.status == "contractor" and person.end is not None and person.end < world.today:
            yield _finding(source, "contractor_after_end", "principals", key, **base,
                           detail={"contract_end": person.end.isoformat()})
    if (world.context.roster and p["kind"] == "user" and p.get("external") is False and not is_aws_root(p)
            and person is None):
        yield _finding(source, "not_on_roster", "principals", key, **base,
                       detail={"display_name": p.get("display_name") or ""})


def _guest_rules(source: Source, key: str, p: Mapping[str, Any], world: World, base: dict[str, Any],
                 is_active: bool) -> Iterator[Finding]:
    a = p.get("attributes") or {}
    domain = (base["principal_email"] or "").rsplit("@", 1)[-1] or None
    aud = audience({"principal_id": p["id"], "principal_domain": domain}, world) if domain else Audience("unknown")
    if aud.kind == "unapproved":
        yield _finding(source, "unapproved_domain", "principals", key, **base, detail={"domain": domain})
    elif aud.kind == "contractor_ended" and is_active:
        yield _finding(source, "contractor_after_end", "principals", key, **base, detail=_contract_detail(aud))
    if a.get("sponsors") == []:
        yield _finding(source, "guest_without_sponsor", "principals", key, **base, detail={})
    days = world.settings.guest_inactive_days
    last = p.get("last_sign_in")
    if (is_active and a.get("signin_available", True) is not False and world.older_than(last, days)
            and not (last is None and world.new(p.get("created"), days))):
        yield _finding(source, "guest_inactive", "principals", key, **base,
                       detail={"last_sign_in": last or "never", "state": a.get("external_user_state"), "days": days})


def membership_rules(source: Source, key: str, m: Mapping[str, Any], world: World) -> Iterator[Finding]:
    """A group of an identity source with a member from an unapproved or ended contractor's domain."""
    if source.type not in IDENTITY_TYPES:
        return
    email = email_of(m.get("member_id"))
    if not email:
        return
    aud = audience({"principal_id": m["member_id"], "principal_domain": email.rsplit("@", 1)[1]}, world)
    rule = {"unapproved": "unapproved_domain", "contractor_ended": "contractor_after_end"}.get(aud.kind)
    if rule:
        yield _finding(source, rule, "memberships", key, resource=m["group_id"], principal=m["member_id"],
                       principal_email=email, detail={"role": m.get("role"), **_contract_detail(aud)})


# -- rules over grants --------------------------------------------------------------------------


def grant_rules(source: Source, key: str, g: Mapping[str, Any], world: World) -> Iterator[Finding]:
    """Rules 1–3 and guests' edit rights, over one grant where it was made."""
    if g.get("inherited_from") or not live(g, world):
        return
    aud = audience(g, world)
    base = {"resource": g["resource_id"], "principal": g["principal_id"],
            "principal_email": email_of(g.get("principal_id"), g.get("principal_email"))}
    facts = {"role": g.get("role"), "raw_role": g.get("raw_role"), "via": g.get("via"),
             "link_scope": g.get("link_scope"), "expiry": g.get("expiry") or "none"}
    if aud.kind == "anyone":
        f = _finding(source, "public_share", "grants", key, **base, detail=facts)
        yield f.with_(severity="critical") if g.get("role") in EDIT_ROLES else f
    elif aud.kind == "unapproved":
        yield _finding(source, "unapproved_domain", "grants", key, **base, detail={**facts, "domain": domain_of(g)})
    elif aud.kind == "contractor_ended":
        yield _finding(source, "contractor_after_end", "grants", key, **base, detail={**facts, **_contract_detail(aud)})
    elif aud.kind == "contractor":
        if not g.get("expiry"):
            yield _finding(source, "share_without_expiry", "grants", key, **base, detail={**facts, **_contract_detail(aud)})
        if g.get("principal_kind") == "guest" and g.get("role") in EDIT_ROLES:
            yield _finding(source, "guest_can_edit", "grants", key, **base, detail={**facts, **_contract_detail(aud)})


# -- rules over owners --------------------------------------------------------------------------


def departed_owner(resource: Mapping[str, Any], world: World) -> str | None:
    """The first owner of a resource who has left or whose account is disabled, as a principal id."""
    for owner in resource.get("owners") or ():
        email = email_of(owner)
        if email and owner.startswith("user:") and email in world.departed:
            return owner
    return None


def is_location(resource: Mapping[str, Any]) -> bool:
    kind = resource.get("kind")
    if kind == "drive":  # a SharePoint site's library; a OneDrive belongs to one person by design
        return (resource.get("attributes") or {}).get("location") == "sharepoint"
    return kind in LOCATION_KINDS


def owner_rules(source: Source, location_key: str, resource: Mapping[str, Any], owners: list[tuple[str, str]],
                world: World) -> Iterator[Finding]:
    """Rule 9 for one shared location: ``owners`` are ``(principal id, grant key)`` of its owner grants."""
    people = [(pid, k) for pid, k in owners if pid.startswith("user:")]
    if not owners or len(people) < len(owners):
        return  # no owner grant recorded (a bucket is owned by its account), or a group owns it too
    gone = [pid for pid, _ in people if email_of(pid) in world.departed]
    detail = {"owners": sorted(pid for pid, _ in people), "name": resource.get("name")}
    refs = tuple(source.ref("grants", k) for _, k in people)
    if len(gone) == len(people):
        yield Finding(rule="leaver_only_owner", severity=RULES["leaver_only_owner"].severity, connector_id=source.id,
                      resource=resource["id"], resource_name=resource.get("name"), principal=people[0][0],
                      detail=detail, evidence=(source.ref("resources", location_key),) + refs)
    elif len(people) == 1:
        yield Finding(rule="single_owner", severity=RULES["single_owner"].severity, connector_id=source.id,
                      resource=resource["id"], resource_name=resource.get("name"), principal=people[0][0],
                      detail=detail, evidence=(source.ref("resources", location_key),) + refs)


# -- rules over a whole source -------------------------------------------------------------------


def admin_count_rules(source: Source, account_resource: tuple[str, str] | None, holders: list[tuple[str, str]],
                      world: World) -> Iterator[Finding]:
    """Rule 8: fewer than ``top_admins_min`` or more than ``top_admins_max`` top administrators."""
    if source.type not in IDENTITY_TYPES or not source.readable:
        return
    s = world.settings
    rule = ("privileged_too_few" if len(holders) < s.top_admins_min
            else "privileged_too_many" if len(holders) > s.top_admins_max else None)
    if rule is None:
        return
    resource, rkey = account_resource or (source.id, "")
    refs = ((source.ref("resources", rkey),) if rkey else ()) + tuple(source.ref("principals", k) for _, k in holders)
    yield Finding(rule=rule, severity=RULES[rule].severity, connector_id=source.id, resource=resource,
                  detail={"holders": sorted(pid for pid, _ in holders), "count": len(holders),
                          "min": s.top_admins_min, "max": s.top_admins_max},
                  evidence=refs or (EvidenceRef(source.id, source.bundle.bag or "", source.bundle.digest or "", "run", ""),))


def collection_rules(bundle: JudgedBundle) -> Iterator[Finding]:
    """Rule 12: what the report could not see."""
    ref = (EvidenceRef(bundle.connector_id, bundle.bag, bundle.digest or "", "run", ""),) if bundle.bag else ()
    detail = {"bag": bundle.bag, "status": bundle.status, "collected_to": bundle.collected_to_utc,
              "max_age_hours": round(bundle.max_age_s / 3600, 1), "reasons": list(bundle.reasons[:5])}
    if bundle.bag is None:
        yield Finding("collection_missing", RULES["collection_missing"].severity, bundle.connector_id, detail=detail)
        return
    if bundle.status == "failed":
        yield Finding("collection_failed", RULES["collection_failed"].severity, bundle.connector_id,
                      resource=bundle.bag, detail=detail, evidence=ref)
    elif bundle.status == "partial":
        yield Finding("collection_partial", RULES["collection_partial"].severity, bundle.connector_id,
                      resource=bundle.bag, detail=detail, evidence=ref)
    if bundle.stale:
        yield Finding("collection_stale", RULES["collection_stale"].severity, bundle.connector_id,
                      resource=bundle.bag, detail={**detail, "age_hours": round((bundle.age_s or 0) / 3600, 1)},
                      evidence=ref)


# -- the register ----------------------------------------------------------------------------------


def location_matches(loc: Any, resource: Mapping[str, Any]) -> bool:
    """Whether a register location (``collector.context.Location``) covers a resource of its connector."""
    a = resource.get("attributes") or {}
    if loc.resource_prefix is not None:
        keys = (resource.get("id"), resource.get("path"), a.get("drive_id"))
        if not any(isinstance(k, str) and k.startswith(loc.resource_prefix) for k in keys):
            return False
    if loc.bucket is not None:
        rid = str(resource.get("id", ""))
        if not (rid == f"arn:aws:s3:::{loc.bucket}" or rid.startswith(f"arn:aws:s3:::{loc.bucket}/")):
            return False
    if loc.site is not None:
        site = loc.site.rstrip("/")
        if not any(isinstance(v, str) and (v.rstrip("/") == site) for v in (a.get("site_url"), a.get("site_id"))):
            return False
    return True


def allowed(entry: Any, principal_id: str, principal_domain: str | None, world: World) -> bool:
    """Whether a register entry (``collector.context.RegisterEntry``) allows this principal."""
    email = email_of(principal_id)
    for a in entry.allowed:
        kind, _, value = a.partition(":")
        if kind == "group" and (principal_id == f"group:{value}" or principal_id in world.group_members.get(f"group:{value}", ())):
            return True
        if kind == "person" and email == value:
            return True
        if kind == "principal" and principal_id == value:
            return True
        if kind == "contractor":
            c = world.context.contractor_for_domain(value)
            domain = principal_domain or (email.rsplit("@", 1)[1] if email else None)
            if domain and c is not None and c.covers(domain) and c.contract_end >= world.today:
                return True
    return False


def location_label(loc: Any) -> str:
    return loc.resource_prefix or loc.bucket or loc.site or "*"


def group_index(memberships: Iterable[tuple[str, str]], wanted: Iterable[str]) -> dict[str, set[str]]:
    """Transitive members of the ``wanted`` groups from ``(group id, member id)`` pairs."""
    direct: dict[str, set[str]] = defaultdict(set)
    for group, member in memberships:
        direct[group].add(member)
    out = {}
    for g in wanted:
        seen: set[str] = set()
        todo = [g]
        while todo:
            for m in direct.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    if m.startswith("group:"):
                        todo.append(m)
        out[g] = seen
    return out

