"""The Microsoft stand-in, driven only by the real msal and plain requests, over HTTPS.

The CA is always configured explicitly (a ``requests.Session`` with ``verify=<ca>`` and
``trust_env=False``); an autouse fixture points ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` at a
file that does not exist, so every test proves the explicit session wins over the environment.
Keys, certificates and secrets are all generated at run time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import Counter
from pathlib import Path

import msal
import pytest
import requests

from sandbox import truth
from sandbox.microsoft import GLOBAL_ADMIN, GRAPH_SCOPE, USER_ADMIN, start
from sandbox.org import Org, Share
from sandbox.server import FaultRule

PREFER = "hierarchicalsharing, deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges"


# -- fixtures and a thin Graph client (requests only) ---------------------------------------------------


@pytest.fixture(autouse=True)
def bogus_ca_env(monkeypatch, tmp_path):
    """If anything fell back to the environment's CA settings, TLS would fail loudly."""
    bogus = str(tmp_path / "no-such-ca-bundle.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bogus)
    monkeypatch.setenv("CURL_CA_BUNDLE", bogus)
    return bogus


def explicit_session(ca_file: Path) -> requests.Session:
    s = requests.Session()
    s.verify = str(ca_file)
    s.trust_env = False
    return s


def msal_app(ms, credential=None, client_id=None) -> msal.ConfidentialClientApplication:
    info = ms.app_info()
    return msal.ConfidentialClientApplication(
        client_id or info.client_id,
        authority=f"{ms.base_url}/{info.tenant_id}",
        client_credential=credential if credential is not None else info.client_secret,
        instance_discovery=False,
        http_client=explicit_session(ms.ca_file),
    )


def acquire(ms, credential=None) -> str:
    result = msal_app(ms, credential).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    return result["access_token"]


class Graph:
    def __init__(self, ms, token: str | None = None):
        self.ms = ms
        self.s = explicit_session(ms.ca_file)
        self.base = ms.app_info().graph_url
        self.s.headers["Authorization"] = f"Bearer {token or acquire(ms)}"

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.base + path

    def get(self, path: str, params=None, headers=None, expect: int | None = 200) -> requests.Response:
        r = self.s.get(self.url(path), params=params, headers=headers)
        if expect is not None:
            assert r.status_code == expect, (r.status_code, r.text[:500])
        return r

    def all(self, path: str, params=None, headers=None) -> tuple[list[dict], int]:
        items, pages, url, first = [], 0, self.url(path), True
        while url:
            body = self.get(url, params=params if first else None, headers=headers).json()
            items += body["value"]
            pages += 1
            first = False
            url = body.get("@odata.nextLink")
        return items, pages

    def delta(self, path: str, params=None, headers=None) -> tuple[list[dict], str, int]:
        items, pages, url, first = [], 0, self.url(path), True
        while True:
            body = self.get(url, params=params if first else None, headers=headers).json()
            items += body["value"]
            pages += 1
            first = False
            if "@odata.deltaLink" in body:
                return items, body["@odata.deltaLink"], pages
            url = body["@odata.nextLink"]

    def batch(self, reqs: list[dict]) -> requests.Response:
        return self.s.post(self.base + "/$batch", json={"requests": reqs})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    org = Org(seed=7, users="small")
    server, ms = start(org, workdir=tmp_path_factory.mktemp("ms-small"))
    yield org, ms
    server.close()


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    org = Org(seed=3, users="medium")
    server, ms = start(org, workdir=tmp_path_factory.mktemp("ms-medium"))
    yield org, ms
    server.close()


@pytest.fixture
def fresh(tmp_path):
    """A server of its own (for tests that mutate the org or the stand-in)."""
    servers = []

    def make(users="small", **options):
        org = Org(seed=11, users=users)
        server, ms = start(org, workdir=tmp_path / f"ms{len(servers)}", **options)
        servers.append(server)
        return org, ms

    yield make
    for s in servers:
        s.close()


# -- identity ------------------------------------------------------------------------------------------


def test_secret_and_both_certificate_forms_get_tokens_without_the_env_ca(small, tmp_path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, ms = small
    info = ms.app_info()
    assert info.authority.startswith("https://127.0.0.1:") and len(info.tenant_id) == 36
    assert Path(ms.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")

    app = msal_app(ms)
    first = app.acquire_token_for_client([GRAPH_SCOPE])
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3599
    assert app.acquire_token_for_client([GRAPH_SCOPE])["token_source"] == "cache"

    # the certificate credential, as a deployment would hold it: PEM files on disk
    (tmp_path / "app.key").write_text(info.private_key_pem)
    (tmp_path / "app.crt").write_text(info.certificate_pem)
    key, crt = (tmp_path / "app.key").read_text(), (tmp_path / "app.crt").read_text()
    sha1 = hashlib.sha1(base64.b64decode("".join(crt.strip().splitlines()[1:-1]))).hexdigest()
    assert sha1.upper() == info.thumbprint
    rs256 = msal_app(ms, {"private_key": key, "thumbprint": sha1}).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in rs256, rs256
    ps256 = msal_app(ms, {"private_key": key, "public_certificate": crt}).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in ps256, ps256
    for token in (first["access_token"], rs256["access_token"], ps256["access_token"]):
        assert Graph(ms, token).get("/users", params={"$top": 1}).json()["value"]


def test_the_explicit_session_wins_over_a_bogus_env_ca(small, bogus_ca_env):
    _, ms = small
    assert acquire(ms)  # explicit session: fine
    trap = requests.Session()
    trap.verify = str(ms.ca_file)  # trust_env left on: REQUESTS_CA_BUNDLE silently takes over
    with pytest.raises(OSError):
        trap.get(f"{ms.authority}/v2.0/.well-known/openid-configuration")


def _token_post(ms, **form) -> requests.Response:
    return explicit_session(ms.ca_file).post(ms.token_endpoint, data=form)


def test_credential_errors_carry_aadsts_codes(small):
    _, ms = small
    info = ms.app_info()
    wrong = msal_app(ms, "not-the-secret").acquire_token_for_client([GRAPH_SCOPE])
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]
    assert wrong["error_description"].startswith("AADSTS7000215:")
    unknown = msal_app(ms, client_id="00000000-0000-0000-0000-000000000001").acquire_token_for_client([GRAPH_SCOPE])
    assert unknown["error"] == "unauthorized_client" and unknown["error_codes"] == [700016]
    scope = _token_post(ms, grant_type="client_credentials", client_id=info.client_id,
                        client_secret=info.client_secret, scope="User.Read.All")
    assert scope.status_code == 400 and scope.json()["error_codes"] == [1002012]
    ok = _token_post(ms, grant_type="client_credentials", client_id=info.client_id,
                     client_secret=info.client_secret, scope=GRAPH_SCOPE)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"


def test_tampered_or_foreign_assertions_are_refused(small):
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    _, ms = small
    info = ms.app_info()
    x5t = base64.urlsafe_b64encode(bytes.fromhex(info.thumbprint)).decode()
    claims = {"aud": ms.token_endpoint, "iss": info.client_id, "sub": info.client_id,
              "exp": int(time.time()) + 600, "iat": int(time.time()), "jti": "x"}

    def post(assertion: str) -> requests.Response:
        return _token_post(ms, grant_type="client_credentials", client_id=info.client_id, scope=GRAPH_SCOPE,
                           client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                           client_assertion=assertion)

    good = jwt.encode(claims, info.private_key_pem, algorithm="RS256", headers={"x5t": x5t})
    assert post(good).status_code == 200
    h, p, sig = good.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "someone-else"}).encode()).decode().rstrip("=")
    tampered = post(f"{h}.{forged}.{sig}")
    assert tampered.status_code == 401 and tampered.json()["error_codes"] == [700027]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    foreign = post(jwt.encode(claims, other, algorithm="RS256", headers={"x5t": x5t}))
    assert foreign.status_code == 401 and foreign.json()["error_codes"] == [700027]
    expired = post(jwt.encode({**claims, "exp": int(time.time()) - 5}, info.private_key_pem, algorithm="RS256", headers={"x5t": x5t}))
    assert expired.json()["error_codes"] == [700024]
    wrong_aud = post(jwt.encode({**claims, "aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"},
                                info.private_key_pem, algorithm="RS256", headers={"x5t": x5t}))
    assert wrong_aud.status_code == 401


def test_an_expired_access_token_gets_graphs_401(fresh):
    _, ms = fresh(token_ttl_s=2)  # long enough for the first call on a loaded machine
    result = msal_app(ms).acquire_token_for_client([GRAPH_SCOPE])
    assert result["expires_in"] == 2
    g = Graph(ms, result["access_token"])
    g.get("/users", params={"$top": 1})
    time.sleep(2.1)
    r = g.get("/users", params={"$top": 1}, expect=401)
    err = r.json()["error"]
    assert err["code"] == "InvalidAuthenticationToken"
    assert err["message"] == "Access token has expired or is not yet valid."
    assert set(err["innerError"]) >= {"date", "request-id", "client-request-id"}
    assert "WWW-Authenticate" in r.headers
    g2 = Graph(ms)  # a new token works until the stand-in expires every token
    g2.get("/users", params={"$top": 1})
    ms.expire_tokens()
    assert g2.get("/users", params={"$top": 1}, expect=401).json()["error"]["code"] == "InvalidAuthenticationToken"
    assert g2.get("/users", params={"$top": 1}, headers={"Authorization": ""}, expect=401).json()["error"]["message"] == "Access token is empty."


# -- directory ---------------------------------------------------------------------------------------


def test_users_paged_to_the_end_match_truth(medium):
    org, ms = medium
    g = Graph(ms)
    counts = truth.counts(org)
    select = "id,userPrincipalName,displayName,userType,accountEnabled,createdDateTime,externalUserState,creationType,mail"
    big, big_pages = g.all("/users", {"$select": select, "$top": 999})
    small_, small_pages = g.all("/users", {"$select": select, "$top": 37})
    assert len(big) == counts["people"] + counts["guests"] == org.n + org.n_guests
    assert big_pages == 1 and small_pages == -(-len(big) // 37)
    assert [u["id"] for u in big] == [u["id"] for u in small_]
    assert len({u["id"] for u in big}) == len(big)
    by_upn = {u["userPrincipalName"]: u for u in big}
    for p in org.people():
        u = by_upn[p.email]
        assert u["userType"] == "Member" and u["accountEnabled"] is (not p.suspended) and u["mail"] == p.email
    default, _ = g.all("/users", {"$top": 999})  # no $select: the documented default set only
    assert "accountEnabled" not in default[0] and {"id", "displayName", "userPrincipalName", "mail"} <= set(default[0])
    assert g.get("/users", params={"$top": 1000}, expect=400).json()["error"]["code"] == "Request_UnsupportedQuery"
    assert g.get("/users", params={"$select": "nope"}, expect=400).json()["error"]["code"] == "Request_BadRequest"

    disabled, _ = g.all("/users", {"$filter": "accountEnabled eq false", "$select": "id,userPrincipalName", "$top": 50})
    assert {u["userPrincipalName"] for u in disabled} == {p.email for p in org.people() if p.suspended}


def test_guests_via_filter_with_sponsors(small):
    org, ms = small
    g = Graph(ms)
    guests, _ = g.all("/users", {"$filter": "userType eq 'Guest'", "$expand": "sponsors",
                                 "$select": "id,userPrincipalName,mail,userType,externalUserState,creationType"})
    assert len(guests) == org.n_guests == truth.counts(org)["guests"]
    for u in guests:
        guest = next(x for x in org.guests() if x.email == u["mail"])
        local = guest.email.replace("@", "_")
        assert u["userPrincipalName"] == f"{local}#EXT#@{ms.tenant_domain}"
        assert u["creationType"] == "Invitation" and u["externalUserState"] == guest.state
        sponsors = [s["userPrincipalName"] for s in u["sponsors"]]
        assert sponsors == ([] if guest.invited_by is None else [org.person(guest.invited_by).email])
        assert g.get(f"/users/{u['id']}/sponsors").json()["value"] == u["sponsors"]
    assert any(not u["sponsors"] for u in guests)  # guest 3: the planted sponsor-less guest


def test_signin_activity_needs_auditlog_and_premium(fresh):
    org, ms = fresh()
    g = Graph(ms)
    rows, _ = g.all("/users", {"$select": "id,userPrincipalName,signInActivity", "$top": 500})
    assert len(rows) == org.n + org.n_guests
    never = [r for r in rows if r["signInActivity"] is None]
    assert {r["userPrincipalName"] for r in never} >= {org.person(8).email}
    too_big = g.get("/users", params={"$select": "id,signInActivity", "$top": 501}, expect=400).json()["error"]
    assert "500 users" in too_big["message"]
    cutoff = "2026-08-03T00:00:00Z"  # 90 days before the reference time
    stale, _ = g.all("/users", {"$select": "id,userPrincipalName,signInActivity",
                                "$filter": f"signInActivity/lastSignInDateTime le {cutoff}"})
    assert org.person(7).email in {r["userPrincipalName"] for r in stale}
    assert all(r["signInActivity"]["lastSignInDateTime"] <= cutoff for r in stale)

    ms.premium = False
    err = g.get("/users", params={"$select": "id,signInActivity"}, expect=403).json()["error"]
    assert err["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
    err = g.get("/reports/authenticationMethods/userRegistrationDetails", expect=403).json()["error"]
    assert err["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
    assert g.get("/users", params={"$select": "id,accountEnabled"}).status_code == 200  # the rest still works
    ms.premium = True

    ms.set_app_roles(["User.Read.All"])
    g2 = Graph(ms)
    assert g2.get("/users", params={"$select": "id,signInActivity"}, expect=403).json()["error"]["code"] == "Authentication_MSGraphPermissionMissing"
    assert g2.get("/groups", expect=403).json()["error"]["code"] == "Authorization_RequestDenied"
    assert g2.get("/sites/getAllSites", expect=403).json()["error"]["code"] == "accessDenied"
    assert g.get("/groups").status_code == 200  # tokens keep the roles they were issued with


def test_registration_details_exclude_disabled_users(medium):
    org, ms = medium
    g = Graph(ms)
    rows, pages = g.all("/reports/authenticationMethods/userRegistrationDetails")
    enabled = [p for p in org.people() if not p.suspended]
    assert len(rows) == len(enabled) + org.n_guests
    assert pages > 1  # server-chosen page size (report_page_size) → nextLink
    by_upn = {r["userPrincipalName"]: r for r in rows}
    for p in org.people():
        if p.suspended:
            assert p.email not in by_upn
            continue
        r = by_upn[p.email]
        assert r["isMfaRegistered"] is p.mfa and r["isAdmin"] is (p.admin or p.delegated_admin)
        assert r["userType"] == "member" and isinstance(r["methodsRegistered"], list)
    assert by_upn[org.person(1).email]["isAdmin"] and not by_upn[org.person(1).email]["isMfaRegistered"]


def test_group_members_by_delta_and_by_members_agree_with_truth(medium):
    org, ms = medium
    g = Graph(ms)
    groups, _ = g.all("/groups", {"$select": "id,displayName,mail"})
    assert len(groups) == truth.counts(org)["groups"]
    delta, link, pages = g.delta("/groups/delta", {"$select": "id,displayName,mail,securityEnabled,groupTypes,members"})
    assert "$deltatoken=" in link and pages > 1
    via_delta: dict[str, list[str]] = {}
    seen_pages: Counter[str] = Counter()
    for row in delta:
        seen_pages[row["id"]] += 1
        via_delta.setdefault(row["id"], []).extend(m["id"] for m in row.get("members@delta", []))
    all_staff = next(x["id"] for x in groups if x["mail"].startswith("all-staff@"))
    assert len(via_delta[all_staff]) == org.n > 20 and seen_pages[all_staff] > 1  # split across pages

    via_members: dict[str, list[str]] = {}
    for start_ in range(0, len(groups), 20):  # $batch of 20 groups/{id}/members
        chunk = groups[start_:start_ + 20]
        r = g.batch([{"id": str(k), "method": "GET", "url": f"/groups/{x['id']}/members?$select=id&$top=999"}
                     for k, x in enumerate(chunk)])
        assert r.status_code == 200
        for resp in r.json()["responses"]:
            assert resp["status"] == 200
            gid = chunk[int(resp["id"])]["id"]
            members = [m["id"] for m in resp["body"]["value"]]
            url = resp["body"].get("@odata.nextLink")
            while url:
                body = g.get(url).json()
                members += [m["id"] for m in body["value"]]
                url = body.get("@odata.nextLink")
            via_members[gid] = members
    assert {k: sorted(v) for k, v in via_delta.items()} == {k: sorted(v) for k, v in via_members.items()}
    assert sum(len(v) for v in via_members.values()) == truth.counts(org)["group_memberships"]
    partner = next(x["id"] for x in groups if x["mail"].startswith("partner-collab@"))
    guest_ids = {u["id"] for u in g.all("/users", {"$filter": "userType eq 'Guest'", "$select": "id"})[0]}
    assert guest_ids <= set(via_members[partner])
    owners = g.get(f"/groups/{all_staff}/owners").json()["value"]
    assert [o["userPrincipalName"] for o in owners] == [org.person(0).email]


def test_directory_roles_and_pim(small):
    org, ms = small
    g = Graph(ms)
    defs = g.get("/roleManagement/directory/roleDefinitions").json()["value"]
    assert any(d["templateId"] == GLOBAL_ADMIN and d["displayName"] == "Global Administrator" for d in defs)
    rows, _ = g.all("/roleManagement/directory/roleAssignments", {"$expand": "principal"})
    ga = {r["principal"]["userPrincipalName"] for r in rows if r["roleDefinitionId"] == GLOBAL_ADMIN}
    assert ga == {p.email for p in org.people() if p.admin} and len(ga) == truth.counts(org)["admins"]
    assert {r["principal"]["userPrincipalName"] for r in rows if r["roleDefinitionId"] == USER_ADMIN} == {org.person(2).email}
    assert all(r["principal"]["@odata.type"] == "#microsoft.graph.user" for r in rows)
    eligible = g.get("/roleManagement/directory/roleEligibilitySchedules", params={"$expand": "principal"}).json()["value"]
    assert len(eligible) == 1 and eligible[0]["roleDefinitionId"] == GLOBAL_ADMIN and eligible[0]["memberType"] == "Direct"


# -- OneDrive / SharePoint ---------------------------------------------------------------------------------


def _drive_walk(g: Graph, drive_id: str) -> tuple[list[dict], str]:
    items, link, _ = g.delta(f"/drives/{drive_id}/root/delta",
                             {"$select": "id,name,parentReference,file,folder,shared,deleted,lastModifiedDateTime,root",
                              "$top": 5}, headers={"Prefer": PREFER})
    return items, link


def test_walk_every_endpoint_at_small_matches_truth(small):
    org, ms = small
    g = Graph(ms)
    counts = truth.counts(org)
    users, _ = g.all("/users", {"$select": "id,userType", "$top": 999})
    assert Counter(u["userType"] for u in users) == {"Member": counts["people"], "Guest": counts["guests"]}
    sites, _ = g.all("/sites/getAllSites", {"$select": "id,webUrl,isPersonalSite", "$top": 7})
    assert Counter(s["isPersonalSite"] for s in sites) == {True: org.n, False: counts["shared_drives"]}
    team, _ = g.all("/sites/getAllSites", {"$filter": "isPersonalSite eq false"})
    assert len(team) == counts["shared_drives"]

    # drives: /sites/{id}/drives batched 20 at a time, and /users/{id}/drive for each person
    drives: dict[str, dict] = {}
    for k in range(0, len(sites), 20):
        chunk = sites[k:k + 20]
        r = g.batch([{"id": str(n), "method": "GET", "url": f"/sites/{s['id']}/drives"} for n, s in enumerate(chunk)])
        for resp in r.json()["responses"]:
            assert resp["status"] == 200 and len(resp["body"]["value"]) == 1
            drives[resp["body"]["value"][0]["id"]] = {**resp["body"]["value"][0], "personal": chunk[int(resp["id"])]["isPersonalSite"]}
    members = [u for u in users if u["userType"] == "Member"]
    personal = {g.get(f"/users/{u['id']}/drive").json()["id"] for u in members}
    assert personal == {d for d, v in drives.items() if v["personal"]}
    assert all(v["driveType"] == ("business" if v["personal"] else "documentLibrary") for v in drives.values())
    guest = next(u for u in users if u["userType"] == "Guest")
    assert g.get(f"/users/{guest['id']}/drive", expect=404).json()["error"]["code"] == "ResourceNotFound"

    files = {True: 0, False: 0}
    shares = {True: 0, False: 0}
    site_members = 0
    kinds: Counter[str] = Counter()
    for did, drive in drives.items():
        items, link = _drive_walk(g, did)
        assert "token=" in link
        root = next(i for i in items if "root" in i)
        files[drive["personal"]] += len(items) - 1
        shared = [i for i in items if i.get("shared") and "root" not in i]
        root_perms = g.get(f"/drives/{did}/items/{root['id']}/permissions").json()["value"]
        if not drive["personal"]:
            site_members += len(root_perms)
        else:
            assert [p["roles"] for p in root_perms] == [["owner"]] and "user" in root_perms[0]["grantedToV2"]
        # permissions only for the explicitly shared items, 20 per $batch
        folder_perm_ids: dict[str, set[str]] = {}
        for k in range(0, len(shared), 20):
            chunk = shared[k:k + 20]
            r = g.batch([{"id": str(n), "method": "GET", "url": f"/drives/{did}/items/{i['id']}/permissions"}
                         for n, i in enumerate(chunk)])
            for resp in r.json()["responses"]:
                assert resp["status"] == 200
                item = chunk[int(resp["id"])]
                inherited = {p["id"] for p in root_perms} | folder_perm_ids.get(item["parentReference"].get("id", ""), set())
                own = [p for p in resp["body"]["value"] if p["id"] not in inherited]
                if "folder" in item:
                    folder_perm_ids[item["id"]] = {p["id"] for p in own}
                shares[drive["personal"]] += len(own)
                for p in own:
                    kinds[p.get("link", {}).get("scope") or ("invitation" if "invitation" in p else next(iter(p.get("grantedToV2", {"?": 0}))))] += 1
                    assert p["roles"][0] in ("read", "write", "owner")
    assert files == {True: counts["my_drive_files"], False: counts["shared_drive_files"]}
    assert shares == {True: counts["my_drive_shares"], False: counts["shared_drive_file_shares"]}
    assert site_members == counts["shared_drive_members"]
    assert kinds["anonymous"] and kinds["users"] and kinds["user"] and kinds["group"] and kinds["organization"]


def test_sharing_shapes_of_planted_files(small):
    org, ms = small
    g = Graph(ms)
    did = ms.drive_id("od", 2)
    perms = lambda fid: g.get(f"/drives/{did}/items/{ms.item_id(fid)}/permissions").json()["value"]
    anyone = [p for p in perms("uf000002x0001") if "link" in p]
    assert anyone[0]["link"]["scope"] == "anonymous" and anyone[0]["link"]["type"] in ("view", "edit")
    assert anyone[0]["hasPassword"] is False
    unapproved = [p for p in perms("uf000002x0002") if "link" in p or "invitation" in p]
    assert unapproved[0]["link"]["scope"] == "users"
    assert unapproved[0]["grantedToIdentitiesV2"][0]["user"]["email"].endswith("@freemail.example.com")
    assert unapproved[0]["invitation"]["email"].endswith("@freemail.example.com")  # guest 0 never accepted
    expiring = [p for p in g.get(f"/drives/{ms.drive_id('od', 3)}/items/{ms.item_id('uf000003x0001')}/permissions").json()["value"]
                if "expirationDateTime" in p]
    assert expiring and expiring[0]["expirationDateTime"] == "2026-12-01T00:00:00Z"
    owner = perms("uf000002x0001")[0]
    assert owner["roles"] == ["owner"] and owner["grantedToV2"]["user"]["email"] == org.person(2).email
    assert "inheritedFrom" not in owner  # as documented for OneDrive for Business / SharePoint


def test_batch_limits_and_an_inner_throttle(fresh):
    org, ms = fresh()
    g = Graph(ms)
    uid = ms.user_id(org.person(0))
    twenty = [{"id": str(k), "method": "GET", "url": f"/users/{uid}?$select=id"} for k in range(20)]
    r = g.batch(twenty)
    assert r.status_code == 200 and [x["status"] for x in r.json()["responses"]] == [200] * 20
    over = g.batch(twenty + [{"id": "20", "method": "GET", "url": "/users"}])
    assert over.status_code == 400 and over.json()["error"]["code"] == "BadRequest"

    ms.stats.reset()
    ms.set_faults([FaultRule(endpoint="users.get", throttle_next=1, retry_after_s=7)])
    resps = g.batch(twenty).json()["responses"]
    throttled = [x for x in resps if x["status"] == 429]
    assert len(throttled) == 1 and sum(x["status"] == 200 for x in resps) == 19
    assert throttled[0]["headers"]["Retry-After"] == "7"
    assert throttled[0]["body"]["error"]["code"] == "TooManyRequests"
    snap = ms.stats.snapshot()
    assert snap["throttled"]["users.get"] == 1 and snap["calls"]["users.get"] == 19
    ms.set_faults([])

    dep = g.batch([{"id": "1", "method": "GET", "url": "/groups/not-a-group"},
                   {"id": "2", "dependsOn": ["1"], "method": "GET", "url": "/users?$top=1"}]).json()["responses"]
    assert [x["status"] for x in dep] == [404, 424]


def test_delta_rounds_report_exactly_the_changes(fresh):
    org, ms = fresh()
    g = Graph(ms)
    target = next(f for f in org.user_files(5) if not f.folder and not f.shares)
    other_drive = ms.drive_id("od", 6)
    users0, users_link, _ = g.delta("/users/delta", {"$select": "id,userPrincipalName,accountEnabled"})
    assert len(users0) == org.n + org.n_guests
    groups0, groups_link, _ = g.delta("/groups/delta", {"$select": "id,displayName,members"})
    items0, drive_link = _drive_walk(g, ms.drive_id("od", 5))
    _, other_link = _drive_walk(g, other_drive)
    assert all("@microsoft.graph.sharedChanged" not in i for i in items0)

    org.share(target.id, Share(f"{target.id}p9", "anyone", "reader"))
    org.set_person(4, suspended=True)
    dept = next(x for x in org.groups() if x.kind == "department")
    leaving = next(e for e, _ in org.group_members(dept) if e != org.person(0).email)
    org.remove_member(dept.key, leaving)
    org.add_member(dept.key, org.person(1).email)

    users1, users_link, _ = g.delta(users_link)
    assert users1 == [{"id": ms.user_id(org.person(4)), "userPrincipalName": org.person(4).email, "accountEnabled": False}]
    items1, drive_link, _ = g.delta(drive_link, headers={"Prefer": PREFER})
    changed = [i for i in items1 if i.get("@microsoft.graph.sharedChanged") == "True"]
    assert [i["id"] for i in changed] == [ms.item_id(target.id)]
    assert changed[0]["shared"]["scope"] == "anonymous"
    assert {i["id"] for i in items1} <= {ms.item_id(target.id), ms.item_id(target.parent), ms.item_id(ms.root_item_key("od", 5))}
    assert g.delta(other_link, headers={"Prefer": PREFER})[0] == []
    perms = g.get(f"/drives/{ms.drive_id('od', 5)}/items/{ms.item_id(target.id)}/permissions").json()["value"]
    assert any(p.get("link", {}).get("scope") == "anonymous" for p in perms)
    groups1, groups_link, _ = g.delta(groups_link)
    assert len(groups1) == 1 and groups1[0]["displayName"] == dept.name
    delta_members = groups1[0]["members@delta"]
    assert {m["id"] for m in delta_members if "@removed" in m} == {ms.user_id(org.person_by_email(leaving))}
    assert {m["id"] for m in delta_members if "@removed" not in m} == {ms.user_id(org.person(1))}

    # quiet round, then sharing removed (empty facet), then a deletion (deleted facet)
    assert g.delta(users_link)[0] == [] and g.delta(groups_link)[0] == []
    org.unshare(target.id, f"{target.id}p9")
    items2, drive_link, _ = g.delta(drive_link, headers={"Prefer": PREFER})
    again = next(i for i in items2 if i["id"] == ms.item_id(target.id))
    assert again["shared"] == {} and again["@microsoft.graph.sharedChanged"] == "True"
    org.delete_file(target.id)
    items3, drive_link, _ = g.delta(drive_link, headers={"Prefer": PREFER})
    gone = next(i for i in items3 if i["id"] == ms.item_id(target.id))
    assert gone["deleted"] == {"state": "deleted"}

    # an invalidated token: 410 Gone, resync, Location starts a fresh enumeration
    ms.invalidate_delta_tokens(ms.drive_id("od", 5))
    r = g.get(drive_link, headers={"Prefer": PREFER}, expect=410)
    err = r.json()["error"]
    assert err["code"] == "resyncRequired" and err["innerError"]["code"] == "resyncChangesApplyDifferences"
    fresh_items, _, _ = g.delta(r.headers["Location"], headers={"Prefer": PREFER})
    assert len(fresh_items) == len(items0) - 1  # the deleted file is gone
    assert g.delta(other_link, headers={"Prefer": PREFER})[0] == []  # other drives unaffected
    ms.delta_horizon_s = 0  # and a token older than the horizon
    assert g.get(other_link, expect=410).json()["error"]["code"] == "resyncRequired"


def test_resource_units_and_a_unit_quota(fresh):
    org, ms = fresh()
    g = Graph(ms)
    did = ms.drive_id("od", 2)
    item = ms.item_id("uf000002x0001")
    ms.stats.reset()
    r = g.get(f"/drives/{did}/items/{item}/permissions")
    assert r.headers["x-ms-resource-unit"] == "5"
    assert ms.stats.snapshot()["total_units"] == 5 and ms.stats.snapshot()["units"] == {"items.permissions": 5}
    gid = ms.guid("group", 0)
    cost = lambda path, params=None, headers=None: int(g.get(path, params=params, headers=headers).headers["x-ms-resource-unit"])
    assert cost("/users") == 2 and cost("/users", {"$select": "id"}) == 1
    assert cost("/users", {"$select": "id", "$expand": "sponsors"}) == 2
    assert cost(f"/groups/{gid}/members") == 3 and cost(f"/groups/{gid}/members", {"$select": "id"}) == 2
    assert cost("/groups") == 1
    first = g.get(f"/drives/{did}/root/delta")
    assert int(first.headers["x-ms-resource-unit"]) == 2
    assert cost(first.json()["@odata.deltaLink"]) == 1

    ms.stats.reset()
    ms.set_faults([FaultRule(quota=11, quota_units=True, quota_window_s=60, quota_per="global")])
    assert g.get(f"/drives/{did}/items/{item}/permissions").status_code == 200
    assert g.get(f"/drives/{did}/items/{item}/permissions").status_code == 200
    throttled = g.get(f"/drives/{did}/items/{item}/permissions", expect=429)
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "activityLimitReached"  # SharePoint's throttle code
    assert g.get("/users", expect=429).json()["error"]["code"] == "TooManyRequests"  # 2 RU no longer fit
    assert g.get("/users", params={"$select": "id"}).status_code == 200  # 1 RU still does
    assert ms.stats.snapshot()["units"]["items.permissions"] == 10


def test_error_shapes(fresh):
    org, ms = fresh()
    g = Graph(ms)
    err = g.get("/nosuchthing", expect=400).json()["error"]
    assert err["code"] == "BadRequest" and set(err["innerError"]) >= {"request-id", "date"}
    ms.set_faults([FaultRule(endpoint="groups.list", fail_next=1)])
    r = g.get("/groups", expect=503)
    assert r.json()["error"]["code"] == "serviceNotAvailable" and r.headers["Retry-After"] == "1"
    assert g.get("/groups").status_code == 200
    assert g.get(f"/users/{ms.guid('user', 10_000)}", expect=404).json()["error"]["code"] == "Request_ResourceNotFound"
    ms.set_faults([FaultRule(throttle_next=5)])  # "*" rules are Graph's: the token endpoint is not hit
    assert acquire(ms)


def test_member_paging_is_index_arithmetic_and_agrees_with_the_org(fresh):
    org, ms = fresh(users="medium")
    dept = next(x for x in org.groups() if x.kind == "department")
    org.remove_member(dept.key, next(e for e, _ in org.group_members(dept)))
    org.add_member(dept.key, "stranger@unknown.example")
    for grp in org.groups():
        assert list(ms._members_from(grp, 0)) == list(org.group_members(grp))
        assert list(ms._members_from(grp, 5)) == list(org.group_members(grp))[5:]
    g = Graph(ms)
    gid = ms.guid("group", [x.key for x in org.groups()].index(dept.key))
    members, pages = g.all(f"/groups/{gid}/members", {"$top": 9, "$select": "id,mail"})
    assert pages > 1 and len(members) == sum(1 for _ in org.group_members(dept))
    assert "stranger@unknown.example" in {m.get("mail") for m in members}
    items, _, pages = g.delta(f"/drives/{ms.drive_id('od', 0)}/root/delta", {"$top": 2})
    assert pages == -(-(1 + org.file_count(0)) // 2)  # $top survives in the nextLink token


def test_a_large_tenant_costs_no_memory_and_deep_pages_are_cheap(fresh):
    org, ms = fresh(users="large")
    all_staff = next(x for x in org.groups() if x.kind == "all")
    t0 = time.perf_counter()
    tail = list(ms._members_from(all_staff, org.n - 999))
    assert len(tail) == 999 and time.perf_counter() - t0 < 1.0
    g = Graph(ms)
    body = g.get("/users", params={"$filter": "userType eq 'Guest'", "$top": 999, "$select": "id"}).json()
    assert len(body["value"]) == 999 and "@odata.nextLink" in body
    sites = g.get("/sites/getAllSites", params={"$filter": "isPersonalSite eq false", "$top": 999}).json()
    assert len(sites["value"]) == 999 and not any(x["isPersonalSite"] for x in sites["value"])
    last = g.get(f"/users/{ms.user_id(org.person(org.n - 1))}/drive").json()
    assert last["driveType"] == "business"


# -- throughput ---------------------------------------------------------------------------------------------


def test_throughput_of_a_users_page_over_https(medium, capsys):
    org, ms = medium
    token = acquire(ms)
    url = f"{ms.graph_url}/users?$top=100"

    def run(n: int, out: list[int]) -> None:
        s = explicit_session(ms.ca_file)
        s.headers["Authorization"] = f"Bearer {token}"
        ok = 0
        for _ in range(n):
            r = s.get(url)
            ok += r.status_code == 200 and len(r.json()["value"]) == 100
        out.append(ok)

    results = {}
    for threads in (1, 4):
        done: list[int] = []
        workers = [threading.Thread(target=run, args=(2000 // threads, done)) for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        assert sum(done) == 2000
        results[threads] = 2000 / elapsed
    with capsys.disabled():
        print(f"\n[microsoft stand-in] users?$top=100 over HTTPS keep-alive: "
              f"1 thread {results[1]:.0f} req/s, 4 threads {results[4]:.0f} req/s")
    assert results[1] > 50
