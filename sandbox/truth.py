"""The organisation's truth: counts in source terms and every planted problem.

Computed from :class:`sandbox.org.Org` alone (never from a stand-in's responses), so a test that
walks the stand-ins and compares with it checks the servers, and a test that compares a
connector's records with it checks the connector. Also writes the organisation's own context
files (contractors, roster, register) in the formats of ``config/``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, TextIO

from sandbox.org import DEPARTMENTS, REFERENCE_TIME, Org, iso

INACTIVE_DAYS = 90


def problems(org: Org) -> Iterator[dict[str, Any]]:
    """Every planted problem, in source terms: ``{"kind", "subject", "where", "detail"}``."""
    ref = REFERENCE_TIME
    for p in org.people():
        enabled = not p.suspended
        if p.admin and not p.mfa:
            yield {"kind": "admin_without_mfa", "subject": p.email, "where": "directory"}
        if p.status == "leaver" and enabled:
            yield {"kind": "leaver_enabled", "subject": p.email, "where": "directory", "detail": f"left {p.end}"}
        if p.status == "contractor" and p.end and p.end < ref.date() and enabled:
            yield {"kind": "contractor_after_contract_end", "subject": p.email, "where": "directory", "detail": f"contract ended {p.end}"}
        if enabled and (p.last_login is None or p.last_login < ref - timedelta(days=INACTIVE_DAYS)):
            yield {"kind": "inactive_account", "subject": p.email, "where": "directory", "detail": iso(p.last_login) or "never"}
        if not p.mfa and not p.admin and enabled:
            yield {"kind": "no_mfa", "subject": p.email, "where": "directory"}
    for g in org.guests():
        if g.invited_by is None:
            yield {"kind": "guest_without_sponsor", "subject": g.email, "where": "directory"}
        if g.last_login is None or g.last_login < ref - timedelta(days=INACTIVE_DAYS):
            yield {"kind": "guest_inactive", "subject": g.email, "where": "directory", "detail": iso(g.last_login) or "never"}
        if not g.partner.approved:
            yield {"kind": "guest_unapproved_domain", "subject": g.email, "where": "directory"}
    for group in org.groups():
        for email, _ in org.group_members(group):
            domain = email.rsplit("@", 1)[1]
            if domain != org.domain:
                partner = org.partner_for_domain(domain)
                kind = "group_external_member" if partner and partner.approved else "group_unapproved_member"
                yield {"kind": kind, "subject": email, "where": group.email}
    for d in org.drives():
        organizers = [m for m in d.members if m.role == "organizer"]
        if len(organizers) == 1:  # one manager: the drive depends on one person
            yield {"kind": "single_owner", "subject": organizers[0].email, "where": d.id}
        for m in d.members:
            if m.email and not org.is_internal(m.email):
                yield {"kind": _external_kind(org, m.email), "subject": m.email, "where": d.id, "detail": m.role}
        for f in org.drive_files(d.index):
            yield from _file_problems(org, f)
    for p in org.people():
        for f in org.user_files(p.index):
            yield from _file_problems(org, f)
            live = [s for s in f.shares if s.expiration is None or s.expiration > REFERENCE_TIME]
            if p.suspended and live:
                yield {"kind": "suspended_owner_share", "subject": p.email, "where": f.id,
                       "detail": ", ".join(sorted({s.type for s in live}))}


def _external_kind(org: Org, email: str) -> str:
    partner = org.partner_for_domain(email.rsplit("@", 1)[1])
    return "share_external" if partner and partner.approved else "share_unapproved_domain"


def _file_problems(org: Org, f) -> Iterator[dict[str, Any]]:
    for s in f.shares:
        if s.type == "anyone":
            yield {"kind": "anyone_link", "subject": "anyone", "where": f.id, "detail": s.role}
        elif s.type == "user" and s.email and not org.is_internal(s.email):
            kind = _external_kind(org, s.email)
            if s.expiration is not None and s.expiration <= REFERENCE_TIME:
                kind = "share_expired"
            yield {"kind": kind, "subject": s.email, "where": f.id, "detail": f"{s.role}, expires {iso(s.expiration) or 'never'}"}


def counts(org: Org) -> dict[str, int]:
    """Source-term counts every stand-in must agree with."""
    c: Counter[str] = Counter()
    for p in org.people():
        c["people"] += 1
        c["aws_users"] += p.aws
        c["admins"] += p.admin
        c["my_drive_files"] += sum(1 for _ in org.user_files(p.index))
    c["guests"] = org.n_guests
    for g in org.groups():
        c["groups"] += 1
        c["group_memberships"] += sum(1 for _ in org.group_members(g))
    for d in org.drives():
        c["shared_drives"] += 1
        c["shared_drive_members"] += len(d.members)
        for f in org.drive_files(d.index):
            c["shared_drive_files"] += 1
            c["shared_drive_files_with_own_shares"] += bool(f.shares)
            c["shared_drive_file_shares"] += len(f.shares)
    for p in org.people():
        for f in org.user_files(p.index):
            c["my_drive_shares"] += len(f.shares)
    return dict(sorted(c.items()))


def truth(org: Org) -> dict[str, Any]:
    found = list(problems(org))
    return {
        "seed": org.seed,
        "users": org.n,
        "domain": org.domain,
        "reference_time": iso(REFERENCE_TIME),
        "counts": counts(org),
        "problem_counts": dict(sorted(Counter(p["kind"] for p in found).items())),
        "problems": found,
    }


# -- the organisation's own context files ------------------------------------------------------


def contractors_toml(org: Org) -> str:
    from sandbox.aws.plan import canonical_id  # the partner's S3 canonical id, as the sandbox's bucket ACL names it

    out = ["# Approved contractors (委託先). Written by the shoseki sandbox.\n"]
    for p in org.partners:
        if not p.approved:
            continue
        out.append(
            "[[contractor]]\n"
            f'name = "{p.name}"\n'
            f'domains = ["{p.domain}"]\n'
            f'purpose = "{p.purpose}"\n'
            f"contract_end = {p.contract_end.isoformat()}\n"
            + (f'aws_accounts = ["{p.aws_account_id}"]\n' if p.aws_account_id else "")
            + (f'aws_canonical_ids = ["{canonical_id(p.aws_account_id)}"]\n' if p.aws_account_id else "")
            + f'responsible = "{org.person(0).email}"\n\n'
        )
    return "".join(out)


def write_roster(org: Org, out: TextIO) -> None:
    """The roster (``roster.csv``): one row per person, leavers and contractors included."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["email", "name", "department", "manager", "status", "start", "end"])
    for p in org.people():
        manager = org.person(p.manager).email if p.manager is not None else ""
        w.writerow([p.email, p.name_ja, p.department.name_ja, manager, p.status, p.start.isoformat(), p.end.isoformat() if p.end else ""])


def register_toml(org: Org) -> str:
    hr = next(d for d in DEPARTMENTS if d.key == "jinji")
    drive = next(d for d in org.drives() if d.department == hr)
    bpo = next(p for p in org.partners if p.key == "bpo")
    return (
        "# Personal-information register (個人情報管理台帳). Written by the shoseki sandbox.\n"
        "[[entry]]\n"
        'name = "従業員の人事・給与情報 / employee HR and payroll data"\n'
        f'locations = [{{ connector = "google-drive", resource_prefix = "{drive.id}" }}]\n'
        f'allowed = ["group:{hr.key}@{org.domain}", "contractor:{bpo.domain}"]\n'
        f'responsible = "{org.person(1).email}"\n'
    )


def write_truth(org: Org, path: Path) -> None:
    """:func:`truth` as a JSON file, streamed: a 100k-user tenant's problems never sit in memory."""
    kinds: Counter[str] = Counter()
    with open(path, "w", encoding="utf-8") as f:
        head = {"seed": org.seed, "users": org.n, "domain": org.domain, "reference_time": iso(REFERENCE_TIME), "counts": counts(org)}
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ',\n"problems": [\n')
        for n, problem in enumerate(problems(org)):
            kinds[problem["kind"]] += 1
            f.write(("," if n else "") + json.dumps(problem, ensure_ascii=False) + "\n")
        f.write('],\n"problem_counts": ' + json.dumps(dict(sorted(kinds.items())), ensure_ascii=False) + "}\n")


def write_context(org: Org, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "contractors.toml": contractors_toml(org),
        "register.toml": register_toml(org),
    }
    written = []
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
        written.append(directory / name)
    with open(directory / "roster.csv", "w", encoding="utf-8", newline="") as f:
        write_roster(org, f)
    write_truth(org, directory / "sandbox-truth.json")
    return written + [directory / "roster.csv", directory / "sandbox-truth.json"]
