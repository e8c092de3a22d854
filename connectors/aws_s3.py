"""Amazon S3: every bucket's policy, ACL, public access blocks and ownership, and the account's block.

What it reads, per account (apis.md §1.5):

* ``sts:GetCallerIdentity``; the account's public access block (``s3control:GetPublicAccessBlock``;
  none configured is a fact);
* ``ListBuckets`` paginated to the end (``MaxBuckets`` 1000, ``ContinuationToken``); each bucket's
  region from the listing's ``BucketRegion`` or, where the service does not give it (moto,
  older S3-compatible stores), from ``GetBucketLocation``;
* per bucket, through a client in the bucket's own region and ``workers`` at a time:
  ``GetBucketPolicy``, ``GetBucketPolicyStatus`` (only when there is a policy: without one there is
  nothing it could say), ``GetBucketAcl``, ``GetPublicAccessBlock`` and
  ``GetBucketOwnershipControls``. "Not configured" answers (``NoSuchBucketPolicy``,
  ``NoSuchPublicAccessBlockConfiguration``, ``OwnershipControlsNotFoundError``) are facts. A
  refused read (``AccessDenied`` on one bucket) is reported for that bucket and the run seals
  ``partial`` naming it; the other buckets are read. Object ACLs are not read: the bucket's object
  ownership (recorded) says whether they can exist (``BucketOwnerEnforced``: ACLs are disabled).

Mapping onto the record model:

* resources: the account ``aws-account:<id>`` (kind account: its public access block) and each
  bucket ``arn:aws:s3:::<name>`` (kind bucket): region, creation time, owner, the policy (parsed;
  the document when under 8,000 characters), the policy status, the public access block (the
  four settings, or ``null`` = none), object ownership, ACL grant count, ``shared`` = any grant
  to anyone or outside the organisation's accounts.
* grants on the bucket:
    - each principal of each Allow statement of the bucket policy (``raw_role`` the actions,
      ``grant_id`` ``policy:<Sid or index>``, ``role`` from the actions: ``s3:*`` / ``*`` admin, any
      write editor, reads viewer). ``Principal: "*"`` (or ``{"AWS": "*"}``) is ``anyone``:
      ``link_scope`` ``anyone`` without a restricting condition, ``organization`` when an
      ``aws:PrincipalOrgID`` / account condition narrows it, ``specific`` for an IP / VPC / ARN
      condition; the condition is kept in the attributes;
    - each ACL grant (``raw_role`` the permission, ``grant_id`` ``acl``): ``AllUsers`` → ``anyone``
      and ``AuthenticatedUsers`` → ``aws-authenticated-users`` (any AWS account), both
      ``link_scope`` ``anyone``; the owner's canonical id → ``aws-account:<id>`` (role owner);
      any other canonical id → ``aws-canonical:<id>`` (external); the log-delivery group →
      ``aws-service:logging.s3.amazonaws.com``.
* principals: the pseudo-principals and outside principals those grants name.

Needs (all in the AWS managed policy ``SecurityAudit``): see ``permissions``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

from pydantic import Field

from connectors._aws import (
    AwsAccount,
    AwsClients,
    AwsConnector,
    AwsSettings,
    Probe,
    as_list,
    aws_time,
    condition_scope,
    document,
    principal_entries,
    statement_level,
    statements,
    who,
)
from connectors.base import (
    AuthenticationError,
    Cancelled,
    PermissionDenied,
    RunContext,
    SourceError,
)
from evidence.model import Grant, Principal, RawPage, Record, Resource, canonical_json

DOC_MAX = 8000
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
ACL_ROLES = {"FULL_CONTROL": "admin", "WRITE_ACP": "admin", "WRITE": "editor", "READ": "viewer", "READ_ACP": "viewer"}


class AwsS3Config(AwsSettings):
    """The AWS settings plus the bucket listing's page size and the per-bucket concurrency."""

    page_size: int = Field(1000, ge=1, le=10000, description="MaxBuckets of ListBuckets")
    workers: int = Field(8, ge=1, le=64, description="buckets read at once")


@dataclass
class _Bucket:
    """What one bucket's reads produced (built in a worker thread, yielded in listing order)."""

    name: str
    records: list[Record] = field(default_factory=list)
    principals: list[Principal] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    vanished: bool = False
    region_from: str | None = None   # "listing" | "get_bucket_location"


class AwsS3Connector(AwsConnector):
    """Bucket policies, ACLs, public access blocks and ownership of every S3 bucket of one or more accounts."""

    kind = "aws_s3"
    Config = AwsS3Config
    streams = ("principals", "resources", "grants")
    permissions = (
        "s3:ListAllMyBuckets", "s3:GetBucketLocation", "s3:GetBucketPolicy", "s3:GetBucketPolicyStatus",
        "s3:GetBucketAcl", "s3:GetBucketPublicAccessBlock", "s3:GetBucketOwnershipControls",
        "s3:GetAccountPublicAccessBlock",
        "sts:AssumeRole (only with assume_roles: on each listed role, granted by its trust policy)",
    )
    description = (
        "Snapshots every S3 bucket's access: bucket policies (public statements are grants to anyone), ACL grants "
        "(all users, any AWS account, other accounts), bucket and account public access blocks and object "
        "ownership, each bucket read in its own region."
    )

    config: AwsS3Config

    # -- check ----------------------------------------------------------------------------------
    def check_probes(self, clients: AwsClients, ctx: RunContext) -> list[tuple[str, Probe]]:
        first: dict[str, str | None] = {}

        def listing(a: AwsAccount) -> str:
            s3 = clients.client(a.key, "s3")
            page = clients.call(ctx, a, s3, "list_buckets", where="check", MaxBuckets=1) or {}
            buckets = page.get("Buckets") or []
            first[a.account_id] = buckets[0]["Name"] if buckets else None
            return "ListBuckets answered" + ("" if buckets else " (no buckets)")

        def account_block(a: AwsAccount) -> str:
            s3c = clients.client(a.key, "s3control")
            got = clients.call(ctx, a, s3c, "get_public_access_block", where="check", AccountId=a.account_id,
                               missing=("NoSuchPublicAccessBlockConfiguration",))
            return "GetPublicAccessBlock answered" + ("" if got else " (none configured)")

        def bucket(a: AwsAccount) -> str:
            name = first.get(a.account_id)
            if not name:
                return "no bucket to read"
            region = _region(clients.call(ctx, a, clients.client(a.key, "s3"), "get_bucket_location", where="check", Bucket=name))
            clients.call(ctx, a, clients.client(a.key, "s3", region), "get_bucket_acl", where="check", Bucket=name)
            return f"GetBucketLocation and GetBucketAcl answered for {name}"

        return [
            ("bucket listing (resources)", listing),
            ("account public access block (resources)", account_block),
            ("bucket settings (resources, grants)", bucket),
        ]

    # -- snapshot ---------------------------------------------------------------------------------
    def snapshot(self, ctx: RunContext) -> Iterator[Record | RawPage]:
        clients: AwsClients = self.ensure_clients()
        clients.bind(ctx)
        seen: set[str] = set()
        stats = {"buckets": 0, "regions_from_listing": 0, "regions_from_get_bucket_location": 0}
        try:
            with ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="shoseki-s3") as pool:
                yield from self.each_account(ctx, clients, lambda account, internal: self._account(
                    ctx, clients, pool, account, internal, seen, stats))
        finally:
            ctx.note("s3", stats)
            clients.note_requests(ctx)

    def _account(self, ctx: RunContext, clients: AwsClients, pool: ThreadPoolExecutor, a: AwsAccount,
                 internal: frozenset[str], seen: set[str], stats: dict[str, int]) -> Iterator[Record]:
        acct = a.account_id
        s3c = clients.client(a.key, "s3control")
        where = f"account {acct} public access block"
        ctx.source(endpoint="s3control.GetPublicAccessBlock", account=acct)
        block: dict[str, Any] | None = None
        readable = True
        try:
            answer = clients.call(ctx, a, s3c, "get_public_access_block", where=where, AccountId=acct,
                                  missing=("NoSuchPublicAccessBlockConfiguration",))
            block = (answer or {}).get("PublicAccessBlockConfiguration") if answer else None
        except PermissionDenied as exc:
            ctx.error(where, str(exc))
            readable = False
        yield Resource(id=a.resource_id, kind="account", name=acct,
                       attributes={"account_id": acct, "partition": a.partition, "read_as": a.identity,
                                   "public_access_block": _block(block) if readable else None,
                                   "public_access_block_configured": (block is not None) if readable else None}).record()
        if a.resource_id not in seen:
            seen.add(a.resource_id)
            yield Principal(id=a.resource_id, kind="domain", display_name=f"AWS account {acct}", external=False,
                            attributes={"account_id": acct, "source": "the account read"}).record()

        s3 = clients.client(a.key, "s3")
        params = {"MaxBuckets": self.config.page_size}
        ctx.source(endpoint="s3.ListBuckets", account=acct, **params)
        ctx.source(endpoint="s3 per bucket", account=acct, calls=["GetBucketPolicy", "GetBucketPolicyStatus (with a policy)",
                                                                   "GetBucketAcl", "GetPublicAccessBlock",
                                                                   "GetBucketOwnershipControls"],
                   region_from="ListBuckets BucketRegion, else GetBucketLocation", workers=self.config.workers)
        for page in clients.pages(ctx, a, s3, "list_buckets", where=f"account {acct} bucket listing",
                                  token_in="ContinuationToken", token_out="ContinuationToken", **params):
            buckets = page.get("Buckets") or []
            if len(buckets) == self.config.page_size and not page.get("ContinuationToken"):
                ctx.logger.warning("account %s: a full ListBuckets page (%d) came without a ContinuationToken; some "
                                   "S3-compatible services truncate silently", acct, len(buckets))
                ctx.note("list_buckets_full_page_without_token", True)
            owner = page.get("Owner") or {}
            for result in pool.map(lambda b: self._bucket(ctx, clients, a, b, owner, internal), buckets):
                ctx.raise_if_cancelled(f"bucket {result.name}")
                for where, message in result.errors:
                    ctx.error(where, message)
                if result.vanished:  # deleted between the listing and its reads: not part of the state any more
                    ctx.logger.info("bucket %s was deleted while the run read it; not recorded", result.name)
                    continue
                stats["buckets"] += 1
                if result.region_from:
                    stats[f"regions_from_{result.region_from}"] += 1
                for p in result.principals:
                    if p.id not in seen:
                        seen.add(p.id)
                        yield p.record()
                yield from result.records

    # -- one bucket (runs in a worker thread; never yields, never raises but for auth/cancel) --------
    def _bucket(self, ctx: RunContext, clients: AwsClients, a: AwsAccount, b: dict[str, Any], owner: dict[str, Any],
                internal: frozenset[str]) -> _Bucket:
        name = b["Name"]
        out = _Bucket(name)
        where = f"bucket {name}"
        unreadable: list[str] = []

        def read(client: Any, method: str, missing: tuple[str, ...] = (), **params: Any) -> dict[str, Any] | None:
            try:
                return clients.call(ctx, a, client, method, where=where, missing=missing, Bucket=name, **params)
            except (AuthenticationError, Cancelled):
                raise
            except (PermissionDenied, SourceError) as exc:
                if isinstance(exc, SourceError) and exc.status == 404 and "NoSuchBucket" in str(exc):
                    out.vanished = True
                    return None
                unreadable.append(method)
                out.errors.append((where, str(exc)))
                return None

        region = b.get("BucketRegion")
        if region:
            out.region_from = "listing"
        else:
            location = read(clients.client(a.key, "s3"), "get_bucket_location")
            if out.vanished:
                return out
            if location is None:  # refused: read it through the home region, as well as may be
                region = None
            else:
                region = _region(location)
                out.region_from = "get_bucket_location"
        s3 = clients.client(a.key, "s3", region)
        policy_answer = read(s3, "get_bucket_policy", ("NoSuchBucketPolicy",))
        policy_denied = "get_bucket_policy" in unreadable
        policy = document(policy_answer.get("Policy")) if policy_answer else None
        status = None
        if policy_answer is not None:
            got = read(s3, "get_bucket_policy_status", ("NoSuchBucketPolicy",))
            status = (got or {}).get("PolicyStatus") if got is not None else None
        acl = read(s3, "get_bucket_acl")
        block = read(s3, "get_public_access_block", ("NoSuchPublicAccessBlockConfiguration",))
        block_denied = "get_public_access_block" in unreadable
        ownership = read(s3, "get_bucket_ownership_controls", ("OwnershipControlsNotFoundError",))
        ownership_denied = "get_bucket_ownership_controls" in unreadable
        if out.vanished:
            return out

        rid = f"arn:{a.partition}:s3:::{name}"
        grants: list[Grant] = []
        owner_id = ((acl or {}).get("Owner") or owner).get("ID")
        if policy:
            grants.extend(self._policy_grants(rid, policy, internal, out))
        if acl is not None:
            grants.extend(self._acl_grants(rid, acl, owner_id, a, out))
        rules = ((ownership or {}).get("OwnershipControls") or {}).get("Rules") or []
        object_ownership = rules[0].get("ObjectOwnership") if rules else None
        policy_text = canonical_json(policy) if policy else ""
        out.records.append(Resource(
            id=rid, kind="bucket", name=name, path=f"s3://{name}", owners=(a.resource_id,),
            shared=any(g.link_scope == "anyone" or g.external for g in grants),
            web_url=f"https://s3.console.aws.amazon.com/s3/buckets/{name}?region={region or ''}" if a.partition == "aws" else None,
            attributes={
                "account_id": a.account_id, "region": region, "created": aws_time(b.get("CreationDate")),
                "owner_canonical_id": owner_id,
                "policy_present": None if policy_denied else policy_answer is not None,
                "policy": policy if policy and len(policy_text) <= DOC_MAX else None,
                "policy_omitted": f"{len(policy_text)} characters: see the raw pages" if len(policy_text) > DOC_MAX else None,
                "policy_statements": len(statements(policy)) if policy else 0,
                "policy_status_is_public": (status or {}).get("IsPublic"),
                "acl_grants": len((acl or {}).get("Grants") or []) if acl is not None else None,
                "public_access_block": None if block_denied else _block((block or {}).get("PublicAccessBlockConfiguration")),
                "public_access_block_configured": None if block_denied else block is not None,
                "object_ownership": None if ownership_denied else object_ownership,
                "ownership_controls_configured": None if ownership_denied else ownership is not None,
                "acls_enabled": None if ownership_denied else object_ownership != "BucketOwnerEnforced",
                "unreadable": sorted(unreadable),
            },
        ).record())
        out.records.extend(g.record() for g in grants)
        return out

    @staticmethod
    def _policy_grants(rid: str, policy: dict[str, Any], internal: frozenset[str], out: _Bucket) -> Iterator[Grant]:
        for n, s in enumerate(statements(policy)):
            if s.get("Effect") != "Allow":
                continue
            if "NotPrincipal" in s:  # Allow + NotPrincipal: everyone but the named ones
                entries, negated = [("AWS", "*")], True
            elif "Principal" in s:
                entries, negated = principal_entries(s.get("Principal")), False
            else:
                continue
            actions = sorted(str(x) for x in as_list(s.get("Action")))
            raw_role = ",".join(actions) if actions else "NotAction:" + ",".join(sorted(str(x) for x in as_list(s.get("NotAction"))))
            level = statement_level(s, admin_services=("s3",), scope="resource")
            scope, keys = condition_scope(s.get("Condition"))
            for ptype, value in entries:
                w = who(ptype, value, internal)
                public = w.kind == "anyone"
                out.principals.append(_principal(w.id, w.kind, w.display_name, True if public else w.external,
                                                 {"account_id": w.account, "principal": w.raw, "source": "bucket policy"}))
                yield Grant(
                    resource_id=rid, principal_id=w.id, principal_kind=w.kind, role=level,  # type: ignore[arg-type]
                    raw_role=raw_role, via="direct",
                    external=(True if scope == "anyone" else None) if public else w.external,
                    link_scope=scope if public else None,  # type: ignore[arg-type]
                    grant_id=f"policy:{s.get('Sid') or n}",
                    attributes={"source": "bucket policy", "sid": s.get("Sid") or None, "principal": w.raw,
                                "principal_type": ptype, "account_id": w.account, "not_principal": negated or None,
                                "resources": sorted(str(r) for r in as_list(s.get("Resource") or s.get("NotResource"))),
                                "condition": s.get("Condition"), "restricted_by": keys},
                )

    @staticmethod
    def _acl_grants(rid: str, acl: dict[str, Any], owner_id: str | None, a: AwsAccount, out: _Bucket) -> Iterator[Grant]:
        done: set[tuple[str, str]] = set()
        for g in acl.get("Grants") or []:
            grantee, permission = g.get("Grantee") or {}, str(g.get("Permission") or "")
            gtype = grantee.get("Type") or ("Group" if grantee.get("URI") else "AmazonCustomerByEmail"
                                            if grantee.get("EmailAddress") else "CanonicalUser")
            uri, cid = grantee.get("URI"), grantee.get("ID")
            role, scope, external = ACL_ROLES.get(permission, "other"), None, None
            if gtype == "Group" and uri == ALL_USERS:
                pid, kind, display, scope, external = "anyone", "anyone", "anyone (public)", "anyone", True
            elif gtype == "Group" and uri == AUTHENTICATED_USERS:
                pid, kind, display, scope, external = ("aws-authenticated-users", "anyone", "any AWS account (AuthenticatedUsers)",
                                                       "anyone", True)
            elif gtype == "Group" and uri == LOG_DELIVERY:
                pid, kind, display = "aws-service:logging.s3.amazonaws.com", "service_account", "S3 log delivery"
            elif gtype == "CanonicalUser" and cid and cid == owner_id:
                pid, kind, display, external = a.resource_id, "domain", f"AWS account {a.account_id}", False
                role = "owner" if permission == "FULL_CONTROL" else role
            elif gtype == "CanonicalUser" and cid:
                pid, kind, display, external = f"aws-canonical:{cid}", "domain", grantee.get("DisplayName") or f"canonical user {cid[:12]}…", True
            elif gtype == "AmazonCustomerByEmail":
                email = str(grantee.get("EmailAddress") or "").lower()
                pid, kind, display = f"aws-email:{email}", "user", email
            else:
                pid, kind, display = f"aws-grantee:{uri or cid}", "unknown", str(uri or cid)
            if (pid, permission) in done:
                continue
            done.add((pid, permission))
            if pid != a.resource_id:
                out.principals.append(_principal(pid, kind, display, external,
                                                 {"canonical_id": cid, "uri": uri, "source": "bucket ACL"}))
            yield Grant(resource_id=rid, principal_id=pid, principal_kind=kind, role=role, raw_role=permission,  # type: ignore[arg-type]
                        via="direct", external=external, link_scope=scope, grant_id="acl",  # type: ignore[arg-type]
                        attributes={"source": "bucket ACL", "grantee_type": gtype, "canonical_id": cid, "uri": uri,
                                    "display_name": grantee.get("DisplayName")})


def _principal(pid: str, kind: str, display: str, external: bool | None, attributes: dict[str, Any]) -> Principal:
    return Principal(id=pid, kind=kind, display_name=display, external=external,  # type: ignore[arg-type]
                     attributes={k: v for k, v in attributes.items() if v is not None})


def _region(location: dict[str, Any] | None) -> str:
    """GetBucketLocation's answer as a region name (None means us-east-1, "EU" eu-west-1)."""
    value = (location or {}).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(value, value)


def _block(config: dict[str, Any] | None) -> dict[str, bool] | None:
    if config is None:
        return None
    return {k: bool(config.get(k)) for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")}
