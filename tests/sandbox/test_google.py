"""The Google stand-in, driven only through the real client libraries.

google-api-python-client built from the packaged discovery documents with ``rootUrl`` pointed at
the sandbox (apis.md recipe 2) and google-auth service-account credentials with domain-wide
delegation. Keys are generated at run time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import socket
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from sandbox.google import start
from sandbox.org import REFERENCE_TIME, Org, Share
from sandbox.server import FaultRule
from sandbox.truth import counts

S = "https://www.googleapis.com/auth/"
DIR_SCOPES = [S + "admin.directory.user.readonly", S + "admin.directory.group.readonly",
              S + "admin.directory.group.member.readonly", S + "admin.directory.rolemanagement.readonly"]
DRIVE_SCOPES = [S + "drive.readonly", S + "drive.metadata.readonly"]
DRIVE_META = [S + "drive.metadata.readonly"]
MY_DRIVE_Q = "'me' in owners and trashed = false"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any name lookup other than the loopback fails loudly: nothing may reach Google."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"offline test tried to resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


_DOCS: dict[str, dict] = {}


def _doc(name: str, base: str) -> dict:
    if name not in _DOCS:
        path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{name}.json"
        _DOCS[name] = json.loads(path.read_text(encoding="utf-8"))
    doc = copy.copy(_DOCS[name])
    doc["rootUrl"] = base + "/"
    return doc


class Env:
    def __init__(self, org: Org, **options):
        self.org = org
        self.server, self.standin = start(org, **options)
        self.base = self.server.url
        self.info = self.standin.service_account_info()
        self.admin = org.person(0).email

    def creds(self, scopes, subject=None, info=None):
        c = service_account.Credentials.from_service_account_info(info or self.info, scopes=scopes)
        return c.with_subject(subject) if subject else c

    def directory(self, subject=None, scopes=DIR_SCOPES):
        return build_from_document(_doc("admin.directory_v1", self.base), credentials=self.creds(scopes, subject or self.admin))

    def drive(self, subject=None, scopes=DRIVE_SCOPES):
        return build_from_document(_doc("drive.v3", self.base), credentials=self.creds(scopes, subject or self.admin))

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def env():
    e = Env(Org(seed=1, users="small"))
    yield e
    e.close()


@pytest.fixture
def clean(env):
    """Reset counters and faults around a test that reads them."""
    env.standin.stats.reset()
    env.standin.set_faults([])
    yield env
    env.standin.set_faults([])
    env.standin.throttle_style = "429"


def walk(request_fn, next_fn, key):
    """Every item of a paginated list, and the number of pages."""
    items, pages = [], 0
    req = request_fn()
    while req is not None:
        resp = req.execute()
        pages += 1
        items.extend(resp.get(key, []))
        req = next_fn(req, resp)
    return items, pages


def visible(shares):
    return [s for s in shares if s.expiration is None or s.expiration > REFERENCE_TIME]


# -- token flow ------------------------------------------------------------------------------


def test_impersonation_token_carries_subject_and_scopes(env):
    d = env.directory(subject=env.admin, scopes=[S + "admin.directory.user.readonly"])
    resp = d.users().list(customer="my_customer", maxResults=1).execute()
    assert resp["users"][0]["primaryEmail"] == env.admin
    grant = env.standin.grants[-1]
    assert grant["sub"] == env.admin
    assert grant["scopes"] == [S + "admin.directory.user.readonly"]
    assert grant["iss"] == env.info["client_email"]

    other = env.org.person(5).email
    drv = env.drive(subject=other, scopes=DRIVE_META)
    files = drv.files().list(q=MY_DRIVE_Q, fields="files(owners(emailAddress))").execute()["files"]
    assert files and all(f["owners"][0]["emailAddress"] == other for f in files)
    assert env.standin.grants[-1]["sub"] == other


def test_ungranted_scope_is_unauthorized_client(env):
    d = env.directory(scopes=[S + "admin.directory.user"])  # read-write: not delegated
    with pytest.raises(RefreshError) as exc:
        d.users().list(customer="my_customer").execute()
    assert "unauthorized_client" in str(exc.value)
    assert exc.value.args[1]["error"] == "unauthorized_client"


def test_unknown_subject_is_invalid_grant(env):
    d = env.directory(subject="nobody.99999@example.co.jp")
    with pytest.raises(RefreshError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.args[1] == {"error": "invalid_grant", "error_description": "Invalid email or User ID"}


def test_suspended_subject_allowed_or_refused(env):
    suspended = next(p for p in env.org.people() if p.suspended)
    files = env.drive(subject=suspended.email, scopes=DRIVE_META).files().list(q=MY_DRIVE_Q).execute()["files"]
    assert [f["name"] for f in files] == [f.name for f in env.org.user_files(suspended.index)][:100]
    refusing = Env(env.org, suspended_subjects="refuse")
    try:
        with pytest.raises(RefreshError) as exc:
            refusing.drive(subject=suspended.email, scopes=DRIVE_META).files().list(q=MY_DRIVE_Q).execute()
        assert exc.value.args[1] == {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
    finally:
        refusing.close()


def test_forged_signature_is_rejected(env):
    forged = dict(env.info)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged["private_key"] = other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode()
    creds = env.creds(DIR_SCOPES, env.admin, info=forged)
    d = build_from_document(_doc("admin.directory_v1", env.base), credentials=creds)
    with pytest.raises(RefreshError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.args[1]["error"] == "invalid_grant"
    assert "Signature" in exc.value.args[1]["error_description"]


def test_missing_scope_for_method_is_insufficient_permissions(env):
    d = env.directory(scopes=[S + "admin.directory.group.readonly"])
    with pytest.raises(HttpError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.status_code == 403
    body = json.loads(exc.value.content)
    assert body["error"]["errors"][0]["reason"] == "insufficientPermissions"


def test_directory_needs_an_admin_subject(env):
    d = env.directory(subject=env.org.person(5).email)
    with pytest.raises(HttpError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.status_code == 403
    assert exc.value.reason == "Not Authorized to access this resource/api"


# -- full walk against the truth --------------------------------------------------------------


def test_walk_every_endpoint_matches_truth(clean):
    env, org = clean, clean.org
    truth = counts(org)
    d = env.directory()
    users, pages = walk(lambda: d.users().list(customer="my_customer", maxResults=7, projection="basic"),
                        d.users().list_next, "users")
    assert len(users) == truth["people"] and pages == 3
    assert len({u["id"] for u in users}) == truth["people"]
    assert all(len(u["id"]) == 21 and u["id"].isdigit() for u in users)
    assert {u["primaryEmail"] for u in users} == {p.email for p in org.people()}
    by_email = {u["primaryEmail"]: u for u in users}
    assert by_email[org.person(0).email]["name"]["fullName"] == org.person(0).name_ja  # Japanese round-trips
    never = next(p for p in org.people() if p.last_login is None)
    assert by_email[never.email]["lastLoginTime"] == "1970-01-01T00:00:00.000Z"
    assert sum(u["isAdmin"] for u in users) == truth["admins"]

    groups, _ = walk(lambda: d.groups().list(customer="my_customer", maxResults=3), d.groups().list_next, "groups")
    assert len(groups) == truth["groups"]
    memberships = 0
    for g in groups:
        members, _ = walk(lambda g=g: d.members().list(groupKey=g["id"], maxResults=5), d.members().list_next, "members")
        expected = list(org.group_members(next(x for x in org.groups() if x.email == g["email"])))
        assert [(m["email"], m["role"]) for m in members] == expected
        assert int(g["directMembersCount"]) == len(members)
        assert all(m["type"] == "USER" and m["id"] for m in members)
        memberships += len(members)
    assert memberships == truth["group_memberships"]

    drv = env.drive()
    drives, _ = walk(lambda: drv.drives().list(useDomainAdminAccess=True, pageSize=2), drv.drives().list_next, "drives")
    assert len(drives) == truth["shared_drives"]
    assert [x["name"] for x in drives] == [x.name for x in org.drives()]

    drive_members = 0
    file_shares = 0
    drive_files = 0
    for dr in drives:
        members, _ = walk(lambda dr=dr: drv.permissions().list(
            fileId=dr["id"], useDomainAdminAccess=True, supportsAllDrives=True, pageSize=2,
            fields="nextPageToken,permissions(id,type,role,emailAddress,permissionDetails)"),
            drv.permissions().list_next, "permissions")
        drive_members += len(members)
        organizer = next(m["emailAddress"] for m in members if m["role"] == "organizer" and m["type"] == "user")
        member_drv = env.drive(subject=organizer)
        files, _ = walk(lambda dr=dr, member_drv=member_drv: member_drv.files().list(
            corpora="drive", driveId=dr["id"], includeItemsFromAllDrives=True, supportsAllDrives=True, pageSize=7,
            fields="nextPageToken,files(id,name,hasAugmentedPermissions,permissionIds,driveId)"),
            member_drv.files().list_next, "files")
        drive_files += len(files)
        results = {}
        batch = member_drv.new_batch_http_request(callback=lambda rid, resp, exc, results=results: results.__setitem__(rid, (resp, exc)))
        for f in files:
            batch.add(member_drv.permissions().list(fileId=f["id"], supportsAllDrives=True,
                                                     fields="permissions(id,role,permissionDetails)"), request_id=f["id"])
        batch.execute()
        for f in files:
            resp, exc = results[f["id"]]
            assert exc is None
            own = [p for p in resp["permissions"] if not p["permissionDetails"][0]["inherited"]]
            inherited = [p for p in resp["permissions"] if p["permissionDetails"][0]["inherited"]]
            assert len(inherited) == len(members)
            assert all(p["permissionDetails"][0]["inheritedFrom"] == dr["id"] for p in inherited)
            assert f["hasAugmentedPermissions"] == bool(own)
            assert sorted(f["permissionIds"]) == sorted(p["id"] for p in resp["permissions"])
            file_shares += len(own)
    assert drive_members == truth["shared_drive_members"]
    assert drive_files == truth["shared_drive_files"]
    assert file_shares == truth["shared_drive_file_shares"]

    # My Drive: one impersonation per person, suspended people included (the default).
    my_files = my_shares = 0
    reachable = list(org.people())
    for p in reachable:
        pd = env.drive(subject=p.email, scopes=DRIVE_META)
        files, _ = walk(lambda pd=pd: pd.files().list(
            q=MY_DRIVE_Q, pageSize=5,
            fields="nextPageToken,files(id,name,owners(emailAddress),permissions(id,type,role,emailAddress,domain,"
                   "allowFileDiscovery,expirationTime,deleted))"),
            pd.files().list_next, "files")
        my_files += len(files)
        for f in files:
            owners = [x for x in f["permissions"] if x["role"] == "owner"]
            assert len(owners) == 1 and owners[0]["emailAddress"] == p.email
            my_shares += len(f["permissions"]) - 1
        assert [f["name"] for f in files] == [f.name for f in org.user_files(p.index)]
    expired = sum(len(f.shares) - len(visible(f.shares)) for p in reachable for f in org.user_files(p.index))
    assert expired >= 1  # the planted expired share exists and is not served (Google deletes it)
    assert my_files == truth["my_drive_files"]
    assert my_shares + expired == truth["my_drive_shares"]

    stats = env.standin.stats.snapshot()
    assert stats["calls"]["batch"] == truth["shared_drives"]
    assert stats["units"]["batch"] == 0


def test_roles_and_assignments(env):
    d = env.directory()
    roles = d.roles().list(customer="my_customer").execute()["items"]
    seed = next(r for r in roles if r["roleName"] == "_SEED_ADMIN_ROLE")
    assert seed["isSuperAdminRole"] is True
    helpdesk = next(r for r in roles if r["roleName"] == "_HELP_DESK_ADMIN_ROLE")
    items, _ = walk(lambda: d.roleAssignments().list(customer="my_customer", maxResults=1),
                    d.roleAssignments().list_next, "items")
    users = {u["id"]: u for u in d.users().list(customer="my_customer", maxResults=500).execute()["users"]}
    supers = {users[a["assignedTo"]]["primaryEmail"] for a in items if a["roleId"] == seed["roleId"]}
    assert supers == {p.email for p in env.org.people() if p.admin}
    delegated = {users[a["assignedTo"]]["primaryEmail"] for a in items if a["roleId"] == helpdesk["roleId"]}
    assert delegated == {p.email for p in env.org.people() if p.delegated_admin}
    with pytest.raises(HttpError) as exc:
        d.roleAssignments().list(customer="my_customer", maxResults=201).execute()
    assert exc.value.status_code == 400


def test_tokens_list_needs_the_security_scope():
    e = Env(Org(seed=1, users="small"),
            granted_scopes=["admin.directory.user.readonly", "admin.directory.user.security"])
    try:
        d = e.directory(scopes=[S + "admin.directory.user.readonly"])
        with pytest.raises(HttpError) as exc:
            d.tokens().list(userKey=e.org.person(2).email).execute()
        assert exc.value.status_code == 403
        d = e.directory(scopes=[S + "admin.directory.user.security"])
        items = d.tokens().list(userKey=e.org.person(2).email).execute()["items"]
        assert any(t["anonymous"] and S + "drive" in t["scopes"] for t in items)
        assert any(t["displayText"] == "不明なファイル変換アプリ" for t in items)
    finally:
        e.close()


# -- fields, inline permissions -----------------------------------------------------------------


def test_fields_partial_response(env):
    drv = env.drive()
    only_ids = drv.files().list(q=MY_DRIVE_Q, fields="files(id)").execute()
    assert set(only_ids) == {"files"}
    assert all(set(f) == {"id"} for f in only_ids["files"])

    default = drv.files().list(q=MY_DRIVE_Q, pageSize=2).execute()
    assert set(default) == {"kind", "incompleteSearch", "nextPageToken", "files"}
    assert all(set(f) == {"kind", "id", "name", "mimeType"} for f in default["files"])

    nested = drv.files().list(q=MY_DRIVE_Q, fields="files(id,owners/emailAddress,permissions(role))").execute()
    f = nested["files"][1]
    assert set(f) == {"id", "owners", "permissions"}
    assert f["owners"] == [{"emailAddress": env.admin}]
    assert all(set(p) == {"role"} for p in f["permissions"])

    star = drv.files().get(fileId=f["id"], fields="*").execute()
    assert {"permissions", "owners", "size", "modifiedTime", "webViewLink"} <= set(star)

    with pytest.raises(HttpError) as exc:
        drv.files().list(q=MY_DRIVE_Q, fields="files(id,capabilities,canAddChildren)").execute()
    assert exc.value.status_code == 400 and exc.value.reason == "Invalid field selection canAddChildren"

    d = env.directory()
    users = d.users().list(customer="my_customer", maxResults=3, fields="users(primaryEmail,name/fullName)").execute()
    assert set(users) == {"users"}
    assert all(set(u) == {"primaryEmail", "name"} and set(u["name"]) == {"fullName"} for u in users["users"])


def test_inline_permissions_only_for_my_drive_sharers(env):
    org = env.org
    wanted = "files(id,permissions,hasAugmentedPermissions,permissionIds,shared,driveId)"
    mine = env.drive().files().list(q=MY_DRIVE_Q, fields=wanted).execute()["files"]
    assert mine and all("permissions" in f and "hasAugmentedPermissions" not in f and "driveId" not in f for f in mine)
    assert all(f["permissionIds"] == [p["id"] for p in f["permissions"]] for f in mine)

    organizer = org.drive(0).members[0].email
    sd = env.drive(subject=organizer).files().list(
        corpora="drive", driveId=org.drive(0).id, includeItemsFromAllDrives=True, supportsAllDrives=True,
        fields=wanted).execute()["files"]
    assert sd and all("permissions" not in f and "shared" not in f and "hasAugmentedPermissions" in f for f in sd)
    assert any(f["hasAugmentedPermissions"] for f in sd)

    # a reader of someone else's file sees it but cannot share it: no inline permissions
    f = next(f for p in org.people() for f in org.user_files(p.index)
             for s in visible(f.shares) if s.type == "user" and s.role == "reader" and org.is_internal(s.email)
             and not org.person_by_email(s.email).suspended)
    reader = next(s.email for s in f.shares if s.type == "user" and s.role == "reader")
    got = env.drive(subject=reader).files().get(fileId=f.id, fields="id,permissions,permissionIds,shared").execute()
    assert "permissions" not in got and got["shared"] is True and got["permissionIds"]


def test_shared_drive_items_need_supports_all_drives(env):
    org = env.org
    organizer = org.drive(0).members[0].email
    drv = env.drive(subject=organizer)
    with pytest.raises(HttpError) as exc:
        drv.files().get(fileId="df00000x0001").execute()
    assert exc.value.status_code == 404 and exc.value.reason == "File not found: df00000x0001."
    assert drv.files().get(fileId="df00000x0001", supportsAllDrives=True).execute()["id"] == "df00000x0001"
    with pytest.raises(HttpError) as exc:
        drv.files().list(corpora="drive", driveId=org.drive(0).id, supportsAllDrives=True).execute()
    assert exc.value.status_code == 403
    with pytest.raises(HttpError) as exc:
        drv.files().list(q="name contains '資料'").execute()
    assert exc.value.status_code == 400 and json.loads(exc.value.content)["error"]["errors"][0]["location"] == "q"
    children = drv.files().list(q="'df00000x0000' in parents and trashed = false", includeItemsFromAllDrives=True,
                                supportsAllDrives=True, corpora="allDrives", pageSize=1000).execute()["files"]
    assert len(children) == org.drive(0).files - 1


def test_expired_shares_follow_the_option(env):
    org = env.org
    f, share = next((f, s) for p in org.people() for f in org.user_files(p.index)
                    for s in f.shares if s.expiration is not None and s.expiration <= REFERENCE_TIME)
    owner = org.person(f.owner).email
    drv = env.drive(subject=owner)
    ids = [p["id"] for p in drv.permissions().list(fileId=f.id).execute()["permissions"]]
    assert share.id not in ids
    env.standin.expired_shares = "show"
    try:
        perms = drv.permissions().list(fileId=f.id, fields="permissions(id,expirationTime)").execute()["permissions"]
        assert {"id": share.id, "expirationTime": share.expiration.strftime("%Y-%m-%dT%H:%M:%S.000Z")} in perms
    finally:
        env.standin.expired_shares = "hide"


# -- batch ------------------------------------------------------------------------------------


def _shared_drive_file_ids(org, n):
    ids = [f.id for d in org.drives() for f in org.drive_files(d.index)]
    return (ids * (n // len(ids) + 1))[:n]


def test_batch_of_100_is_one_http_call(clean):
    env = clean
    admin = env.org.person(0).email  # organizer of drive 0 and member of the others
    drv = env.drive(subject=admin)
    drv.files().list(q=MY_DRIVE_Q, pageSize=1, fields="files(id)").execute()  # token fetched before counting
    env.standin.stats.reset()
    ids = [f.id for f in env.org.drive_files(0)]
    ids = (ids * 5)[:100]
    results = {}
    batch = drv.new_batch_http_request(callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)))
    assert batch._batch_uri == env.base + "/batch/drive/v3"
    for k, fid in enumerate(ids):
        batch.add(drv.permissions().list(fileId=fid, supportsAllDrives=True), request_id=str(k))
    batch.execute()
    assert len(results) == 100 and all(exc is None for _, exc in results.values())
    stats = env.standin.stats.snapshot()
    assert stats["calls"] == {"batch": 1, "drive.permissions.list": 100}
    assert stats["units"]["drive.permissions.list"] == 100 and stats["units"]["batch"] == 0


def test_inner_429_reaches_only_its_callback(clean):
    env = clean
    drv = env.drive()
    drv.files().list(q=MY_DRIVE_Q, pageSize=1, fields="files(id)").execute()
    env.standin.set_faults([FaultRule(endpoint="drive.permissions.list", throttle_next=1, retry_after_s=7)])
    results = {}
    batch = drv.new_batch_http_request(callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)))
    for k, fid in enumerate([f.id for f in env.org.drive_files(0)][:10]):
        batch.add(drv.permissions().list(fileId=fid, supportsAllDrives=True), request_id=str(k))
    batch.execute()
    failed = {rid: exc for rid, (_, exc) in results.items() if exc is not None}
    assert list(failed) == ["0"]
    assert failed["0"].status_code == 429 and failed["0"].resp["retry-after"] == "7"
    assert failed["0"].error_details[0]["reason"] == "rateLimitExceeded"
    assert sum(1 for resp, exc in results.values() if exc is None and resp["permissions"]) == 9
    stats = env.standin.stats.snapshot()
    assert stats["throttled"] == {"drive.permissions.list": 1}


def test_batch_over_the_drive_limit_is_refused(clean):
    env = clean
    drv = env.drive()
    batch = drv.new_batch_http_request()
    for k in range(101):
        batch.add(drv.files().get(fileId="uf000000x0001"), request_id=str(k))
    with pytest.raises(HttpError) as exc:
        batch.execute()
    assert exc.value.status_code == 400
    assert "drive.files.get" not in env.standin.stats.snapshot()["calls"]


def test_directory_batch_follows_batch_path(clean):
    env = clean
    d = env.directory()
    groups = d.groups().list(customer="my_customer").execute()["groups"]
    results = {}
    batch = d.new_batch_http_request(callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)))
    assert batch._batch_uri == env.base + "/batch"
    for g in groups:
        batch.add(d.members().list(groupKey=g["email"]), request_id=g["id"])
    batch.execute()
    assert {rid for rid, (resp, exc) in results.items() if exc is None} == {g["id"] for g in groups}
    assert env.standin.stats.snapshot()["calls"]["directory.members.list"] == len(groups)


# -- changes feed ------------------------------------------------------------------------------


def test_changes_feed_reports_exactly_the_mutations():
    e = Env(Org(seed=1, users="small"))
    try:
        org = e.org
        owner = org.person(5)
        drv = e.drive(subject=owner.email, scopes=DRIVE_META)
        start_token = drv.changes().getStartPageToken().execute()["startPageToken"]
        files = list(org.user_files(5))
        shared, deleted = files[2], files[3]
        org.share(shared.id, Share(f"{shared.id}p9", "anyone", "reader"))
        org.delete_file(deleted.id)
        org.set_person(7, suspended=True)  # not a Drive change
        org.share("uf000006x0003", Share("uf000006x0003p9", "anyone", "reader"))  # someone else's file

        fields = "nextPageToken,newStartPageToken,changes(fileId,removed,file(id,permissions(id,type)))"
        resp = drv.changes().list(pageToken=start_token, pageSize=1, fields=fields).execute()
        got = resp["changes"]
        assert "newStartPageToken" not in resp
        resp = drv.changes().list(pageToken=resp["nextPageToken"], pageSize=1, fields=fields).execute()
        got += resp["changes"]
        while "nextPageToken" in resp:
            resp = drv.changes().list(pageToken=resp["nextPageToken"], pageSize=1, fields=fields).execute()
            got += resp["changes"]
        assert [c["fileId"] for c in got] == [shared.id, deleted.id]
        assert got[0]["removed"] is False
        assert {"id": f"{shared.id}p9", "type": "anyone"} in got[0]["file"]["permissions"]
        assert got[1] == {"fileId": deleted.id, "removed": True}
        new_token = resp["newStartPageToken"]

        again = drv.changes().list(pageToken=new_token).execute()
        assert again["changes"] == [] and again["newStartPageToken"]

        # a shared drive's feed sees only that drive
        organizer = org.drive(0).members[0].email
        ddrv = e.drive(subject=organizer)
        dtok = ddrv.changes().getStartPageToken(driveId=org.drive(0).id, supportsAllDrives=True).execute()["startPageToken"]
        org.unshare("df00000x0001", "df00000x0001p1")
        org.delete_file("uf000005x0001")
        dres = ddrv.changes().list(pageToken=dtok, driveId=org.drive(0).id, supportsAllDrives=True,
                                   includeItemsFromAllDrives=True, fields="changes(fileId,driveId,file(hasAugmentedPermissions))").execute()
        assert dres["changes"] == [{"fileId": "df00000x0001", "driveId": org.drive(0).id,
                                    "file": {"hasAugmentedPermissions": False}}]
        with pytest.raises(HttpError) as exc:  # a drive token is not a user token
            ddrv.changes().list(pageToken=dtok).execute()
        assert exc.value.status_code == 400
    finally:
        e.close()


# -- throttling and expiry --------------------------------------------------------------------


def test_throttle_shapes(clean):
    env = clean
    d = env.directory()
    d.users().list(customer="my_customer", maxResults=1).execute()
    env.standin.set_faults([FaultRule(endpoint="directory.users.list", throttle_next=1, retry_after_s=3)])
    with pytest.raises(HttpError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.status_code == 429 and exc.value.reason == "Rate Limit Exceeded"
    assert exc.value.error_details[0] == {"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}
    assert exc.value.resp["retry-after"] == "3"

    env.standin.throttle_style = "403"
    env.standin.set_faults([FaultRule(endpoint="directory.users.list", throttle_next=1, retry_after_s=2)])
    with pytest.raises(HttpError) as exc:
        d.users().list(customer="my_customer").execute()
    assert exc.value.status_code == 403 and exc.value.reason == "User Rate Limit Exceeded"
    assert exc.value.error_details[0]["reason"] == "userRateLimitExceeded"
    assert exc.value.resp["retry-after"] == "2"

    # the library recognises the shape as retryable: with num_retries it succeeds
    env.standin.set_faults([FaultRule(endpoint="directory.users.list", throttle_next=1)])
    req = d.users().list(customer="my_customer", maxResults=2)
    req._sleep = lambda seconds: None
    assert len(req.execute(num_retries=1)["users"]) == 2
    assert env.standin.stats.snapshot()["throttled"] == {"directory.users.list": 3}


def test_expired_token_gets_401_and_google_auth_refreshes():
    e = Env(Org(seed=1, users="small"), token_ttl_s=1.0)
    try:
        d = e.directory()
        d.users().list(customer="my_customer", maxResults=1).execute()
        grants = len(e.standin.grants)
        old = d._http.credentials.token
        time.sleep(1.1)
        raw = requests.get(e.base + "/admin/directory/v1/users", params={"customer": "my_customer"},
                           headers={"Authorization": f"Bearer {old}"})
        assert raw.status_code == 401
        assert raw.json()["error"]["errors"][0] == {"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                                                    "location": "Authorization", "locationType": "header"}
        assert raw.json()["error"]["status"] == "UNAUTHENTICATED"
        resp = d.users().list(customer="my_customer", maxResults=1).execute()  # 401 -> refresh -> retry
        assert resp["users"]
        assert len(e.standin.grants) == grants + 1 and d._http.credentials.token != old
    finally:
        e.close()


# -- size -------------------------------------------------------------------------------------


def test_medium_users_in_one_page_of_500():
    e = Env(Org(seed=1, users="medium"))
    try:
        d = e.directory()
        resp = d.users().list(customer="my_customer", maxResults=500, fields="nextPageToken,users(id)").execute()
        assert len(resp["users"]) == 500 and "nextPageToken" not in resp
        with pytest.raises(HttpError) as exc:
            d.users().list(customer="my_customer", maxResults=501).execute()
        assert exc.value.status_code == 400
        drv = e.drive()
        drives, pages = walk(lambda: drv.drives().list(useDomainAdminAccess=True, pageSize=1000),
                             drv.drives().list_next, "drives")
        assert len(drives) == e.org.n_drives and pages == 1  # pageSize coerced to 100
    finally:
        e.close()


def test_user_corpus_is_own_plus_shared_with_me(env):
    org = env.org
    p = org.person(5)
    group = next(g.email for g in org.groups() if g.kind == "department" and g.department == p.department)
    expected = [f.id for f in org.user_files(5)] + [
        f.id for q in org.people() if q.index != 5 for f in org.user_files(q.index)
        if any((s.type == "user" and s.email == p.email) or (s.type == "group" and s.email == group) for s in visible(f.shares))]
    drv = env.drive(subject=p.email, scopes=DRIVE_META)
    files, pages = walk(lambda: drv.files().list(pageSize=4, fields="nextPageToken,files(id)"), drv.files().list_next, "files")
    assert [f["id"] for f in files] == expected and pages > 1


def test_batch_inner_401_is_refreshed_by_the_library(clean):
    env = clean
    drv = env.drive()
    drv.files().list(q=MY_DRIVE_Q, pageSize=1, fields="files(id)").execute()
    grants = len(env.standin.grants)
    env.standin.expire_tokens()
    results = {}
    batch = drv.new_batch_http_request(callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)))
    for f in list(env.org.user_files(0))[:3]:
        batch.add(drv.files().get(fileId=f.id), request_id=f.id)
    batch.execute()
    assert all(exc is None for _, exc in results.values()) and len(results) == 3
    assert len(env.standin.grants) == grants + 1
    assert env.standin.stats.snapshot()["calls"]["batch"] == 2  # the first batch came back 401 inside


def test_reports_drive_activity_names_owner_drive_and_document():
    org = Org(seed=3, users="small")
    e = Env(org)
    try:
        org.share("uf000002x0003", Share("uf000002x0003p9", "anyone", "reader"))
        org.share("df00001x0003", Share("df00001x0003p9", "anyone", "reader"))
        org.delete_file("uf000005x0001")
        creds = e.creds([S + "admin.reports.audit.readonly"], e.admin)
        reports = build_from_document(_doc("admin.reports_v1", e.base), credentials=creds)
        items, pages = walk(lambda: reports.activities().list(userKey="all", applicationName="drive", maxResults=2,
                                                              startTime="2026-01-01T00:00:00Z"),
                            reports.activities().list_next, "items")
        assert pages == 2 and [i["id"]["uniqueQualifier"] for i in items] == ["3", "2", "1"]  # newest first
        params = [{p["name"]: p.get("value", p.get("boolValue")) for p in i["events"][0]["parameters"]} for i in items]
        assert params[0] == {"doc_id": "uf000005x0001", "owner": org.person(5).email, "owner_is_shared_drive": False}
        assert items[0]["events"][0]["name"] == "delete"
        assert params[1]["shared_drive_id"] == org.drive(1).id and params[1]["owner_is_shared_drive"] is True
        assert items[2]["events"][0]["name"] == "change_user_access"
        later = reports.activities().list(userKey="all", applicationName="drive", startTime="2099-01-01T00:00:00Z").execute()
        assert later.get("items", []) == []
        with pytest.raises(HttpError) as exc:  # an admin API: other subjects are refused
            user = build_from_document(_doc("admin.reports_v1", e.base),
                                       credentials=e.creds([S + "admin.reports.audit.readonly"], org.person(5).email))
            user.activities().list(userKey="all", applicationName="drive").execute()
        assert exc.value.resp.status == 403
    finally:
        e.close()
