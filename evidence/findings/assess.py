"""Judge the bags selected for a date: run every rule, merge, map to controls, apply exceptions.

Memory: each bag is read stream by stream, never held whole. What is kept is proportional to
what needs attention or is small by nature: accounts' e-mail facts for the cross-source joins,
the members of the groups a register entry allows, shared locations and their owner grants,
resources owned by people who left, the register's accessors, and the findings themselves.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterator, Sequence

from collector.context import Context
from evidence.findings import rules as R
from evidence.findings.model import (
    SEVERITIES, Accessor, Assessment, Finding, JudgedBundle, PrivilegedHolder, RegisterView, Settings,
)
from evidence.vault import Vault


def settings_from_config(config: Any) -> Settings:
    f = getattr(config.main, "findings", None)
    return Settings(**f.model_dump()) if f is not None else Settings()


def _world(vault: Vault, bundles: Sequence[JudgedBundle], context: Context, as_of: datetime, settings: Settings,
           domains: tuple[str, ...]) -> R.World:
    world = R.World(as_of=as_of, settings=settings, context=context, domains=domains)
    world.departed.update(e for p in context.roster if p.status == "leaver" for e in p.emails)
    identity = [R.Source(vault, b) for b in bundles if b.connector_type in R.IDENTITY_TYPES]
    for source in identity:
        for _key, p in source.records("principals"):
            email = R.email_of(p.get("id"), p.get("email"))
            if email and R.is_account(source, p) and p.get("enabled") is False:
                world.departed.add(email)
    wanted = {f"group:{a.split(':', 1)[1]}" for entry in context.register for a in entry.allowed if a.startswith("group:")}
    if wanted:
        # groups nested in the allowed ones first (group-to-group edges are few), then only their members
        nested = R.group_index(((m["group_id"], m["member_id"]) for s in identity for _k, m in s.records("memberships")
                                if m["member_id"].startswith("group:")), wanted)
        reach = wanted.union(*nested.values())
        pairs = [(m["group_id"], m["member_id"]) for s in identity for _k, m in s.records("memberships")
                 if m["group_id"] in reach]
        world.group_members = R.group_index(pairs, wanted)
    return world


@dataclass
class _SourceState:
    """What one pass over a bag's resources keeps for its pass over grants."""

    locations: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)     # id -> (key, resource)
    owner_grants: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    departed_owned: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # id -> (key, owner, name)
    shared_departed: dict[str, tuple[str, str, str | None, str]] = field(default_factory=dict)
    register: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)  # id -> narrowing locations it is in
    everywhere: tuple[tuple[int, int], ...] = ()      # locations naming the whole connector: every resource is in them


def assess(vault: Vault, bundles: Sequence[JudgedBundle], context: Context, *, as_of: datetime, settings: Settings,
           catalogue: Any, organization: str, domains: Sequence[str]) -> Assessment:
    """Every finding about ``bundles`` as of ``as_of`` (aware), with controls and exception status.
    ``domains``: the organisation's own (``[organization] domains``); every other one is external."""
    world = _world(vault, bundles, context, as_of, settings, tuple(domains))
    found: list[Finding] = []
    privileged: list[PrivilegedHolder] = []
    accessors: dict[tuple[int, int], dict[str, Accessor]] = defaultdict(dict)
    resources_matched: dict[int, int] = defaultdict(int)
    for b in bundles:
        found.extend(R.collection_rules(b))
        source = R.Source(vault, b)
        if not source.readable:
            continue
        found.extend(_judge_principals(source, world, privileged))
        for key, m in source.records("memberships"):
            found.extend(R.membership_rules(source, key, m, world))
        state = _read_resources(source, context, world, resources_matched)
        found.extend(_named(source, list(_judge_grants(source, state, world, accessors))))
    findings = sorted(_finish(found + _register_findings(context, accessors), context, catalogue, as_of), key=_order)
    return Assessment(
        as_of=as_of, organization=organization, bundles=tuple(bundles), findings=tuple(findings),
        privileged=tuple(privileged), register=_register_views(context, accessors, resources_matched),
        settings=asdict(settings),
    )


def _judge_principals(source: R.Source, world: R.World, privileged: list[PrivilegedHolder]) -> Iterator[Finding]:
    holders: list[tuple[str, str]] = []
    for key, p in source.records("principals"):
        yield from R.account_rules(source, key, p, world)
        if not R.is_account(source, p):
            continue
        eligible = tuple(f"{r} (eligible)" for r in (p.get("attributes") or {}).get("eligible_roles") or ())
        top = R.top_admin(source, p) and R.active(source, p)
        if top:
            holders.append((p["id"], key))
        if p.get("admin") or eligible:
            privileged.append(PrivilegedHolder(
                connector_id=source.id, principal=p["id"], email=R.email_of(p["id"], p.get("email")),
                display_name=p.get("display_name"), roles=tuple(p.get("roles") or ()) + eligible, top=top,
                enabled=R.active(source, p), mfa=p.get("mfa"), evidence=source.ref("principals", key)))
    if source.type in R.IDENTITY_TYPES:
        account = next(((r["id"], k) for k, r in source.records("resources") if r.get("kind") == "account"), None)
        yield from R.admin_count_rules(source, account, holders, world)


def _read_resources(source: R.Source, context: Context, world: R.World, matched: dict[int, int]) -> _SourceState:
    state = _SourceState()
    locs = [(i, j, loc) for i, e in enumerate(context.register) for j, loc in enumerate(e.locations)
            if loc.connector == source.id]
    narrowing = [(i, j, loc) for i, j, loc in locs if R.location_label(loc) != "*"]
    state.everywhere = tuple((i, j) for i, j, loc in locs if R.location_label(loc) == "*")
    shared_hits: dict[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = {}
    for key, r in source.records("resources"):
        rid = r["id"]
        if R.is_location(r):  # its managers are judged by rule 9, not as the owner of a shared file
            state.locations[rid] = (key, {"id": rid, "name": r.get("name"), "kind": r.get("kind")})
        elif (owner := R.departed_owner(r, world)) is not None:
            state.departed_owned[rid] = (key, owner, r.get("name"))
        hits = tuple((i, j) for i, j, loc in narrowing if R.location_matches(loc, r))
        if hits:
            state.register[rid] = shared_hits.setdefault(hits, hits)  # one tuple per distinct set of locations
        for i in {i for i, _j in hits + state.everywhere}:
            matched[i] += 1
    return state


def _named(source: R.Source, found: list[Finding]) -> list[Finding]:
    """Fill ``resource_name`` from the bag's resources, reading them once for the findings only."""
    need = {f.resource for f in found if f.resource and f.resource_name is None}
    if not need:
        return found
    names = {r["id"]: r.get("name") for _k, r in source.records("resources") if r["id"] in need}
    return [f.with_(resource_name=names.get(f.resource)) if f.resource in names and f.resource_name is None else f
            for f in found]


def _judge_grants(source: R.Source, state: _SourceState, world: R.World,
                  accessors: dict[tuple[int, int], dict[str, Accessor]]) -> Iterator[Finding]:
    for key, g in source.records("grants"):
        rid = g["resource_id"]
        yield from R.grant_rules(source, key, g, world)
        direct = not g.get("inherited_from") and R.live(g, world)
        if direct and rid in state.locations and g.get("role") == "owner":
            state.owner_grants[rid].append((g["principal_id"], key))
        if direct and rid in state.departed_owned and rid not in state.shared_departed:
            rkey, owner, name = state.departed_owned[rid]
            if g["principal_id"] != owner and g.get("role") != "owner":
                state.shared_departed[rid] = (rkey, owner, name, key)
        slots = state.register.get(rid, ()) + state.everywhere
        if slots and R.live(g, world):
            for slot in slots:
                seen = accessors[slot]
                if g["principal_id"] not in seen:
                    pid = g["principal_id"]
                    seen[pid] = Accessor(
                        principal=pid, email=R.email_of(pid, g.get("principal_email")), role=g.get("role") or "",
                        allowed=R.allowed(world.context.register[slot[0]], pid, R.domain_of(g), world),
                        via=g.get("via") or "", resource=rid, evidence=source.ref("grants", key))
    for rid, (rkey, r) in state.locations.items():
        yield from R.owner_rules(source, rkey, r, state.owner_grants.get(rid, []), world)
    for rid, (rkey, owner, name, gkey) in state.shared_departed.items():
        yield Finding("leaver_owns_shared", R.RULES["leaver_owns_shared"].severity, source.id, resource=rid,
                      principal=owner, resource_name=name, principal_email=R.email_of(owner),
                      detail={"owner": owner}, evidence=(source.ref("resources", rkey), source.ref("grants", gkey)))


def _register_views(context: Context, accessors: dict[tuple[int, int], dict[str, Accessor]],
                    matched: dict[int, int]) -> tuple[RegisterView, ...]:
    out = []
    for i, entry in enumerate(context.register):
        found: dict[str, Accessor] = {}
        for j in range(len(entry.locations)):
            for pid, a in accessors.get((i, j), {}).items():
                found.setdefault(pid, a)
        out.append(RegisterView(
            name=entry.name, responsible=entry.responsible,
            locations=tuple(f"{loc.connector}: {R.location_label(loc)}" for loc in entry.locations),
            allowed=tuple(entry.allowed), accessors=tuple(sorted(found.values(), key=lambda a: (a.allowed, a.principal))),
            resources=matched.get(i, 0)))
    return tuple(out)


def _register_findings(context: Context, accessors: dict[tuple[int, int], dict[str, Accessor]]) -> list[Finding]:
    """Rule 10: everyone who reaches a registered location and is not allowed there."""
    out = []
    for (i, j), seen in sorted(accessors.items()):
        entry = context.register[i]
        loc = entry.locations[j]
        for pid, a in sorted(seen.items()):
            if a.allowed:
                continue
            out.append(Finding("register_drift", R.RULES["register_drift"].severity, loc.connector,
                               resource=f"{loc.connector}:{R.location_label(loc)}", resource_name=entry.name,
                               principal=pid, principal_email=a.email,
                               detail={"register_entry": entry.name, "role": a.role, "via": a.via, "reaches": a.resource},
                               evidence=(a.evidence,)))
    return out


def _finish(found: list[Finding], context: Context, catalogue: Any, as_of: datetime) -> list[Finding]:
    """Merge findings with one id (several records saying the same thing), then controls and exceptions."""
    merged: dict[str, Finding] = {}
    for f in found:
        prev = merged.get(f.id)
        if prev is None:
            merged[f.id] = f
            continue
        worse = f.severity if SEVERITIES.index(f.severity) < SEVERITIES.index(prev.severity) else prev.severity
        merged[f.id] = prev.with_(severity=worse, evidence=prev.evidence + tuple(e for e in f.evidence if e not in prev.evidence))
    out = []
    numbers = {id(e): n for n, e in enumerate(context.exceptions, 1)}
    for f in merged.values():
        controls = tuple(catalogue.controls_for(f.rule)) if catalogue is not None else ()
        exc, expired = context.exception_for(f.rule, f.resource, f.principal, on=as_of.date())
        if exc is None:
            out.append(f.with_(controls=controls))
        else:
            out.append(f.with_(controls=controls, status="exception_expired" if expired else "excepted",
                               exception=numbers[id(exc)], exception_until=exc.valid_until))
    return out


def _order(f: Finding) -> tuple[Any, ...]:
    return (SEVERITIES.index(f.severity), f.rule, f.connector_id, f.resource or "", f.principal or "")


