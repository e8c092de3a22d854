"""The synthetic organisation: deterministic, lazy, and planted with every kind of problem."""

import tracemalloc

from sandbox.org import Org, Share
from sandbox.truth import counts, problems, truth

EVERY_PLANTED_KIND = {
    "admin_without_mfa", "leaver_enabled", "contractor_after_contract_end", "inactive_account", "no_mfa",
    "guest_without_sponsor", "guest_inactive", "guest_unapproved_domain", "group_external_member",
    "group_unapproved_member", "single_owner", "anyone_link", "share_external", "share_unapproved_domain",
    "share_expired",
}


def test_same_seed_same_organisation_other_seed_other_people():
    a, b, c = Org(1, "medium"), Org(1, "medium"), Org(2, "medium")
    assert truth(a) == truth(b)
    assert [p.email for p in a.people()] != [p.email for p in c.people()]


def test_a_small_tenant_has_every_kind_of_planted_problem():
    assert {p["kind"] for p in problems(Org(1, "small"))} >= EVERY_PLANTED_KIND


def test_people_are_found_by_email_and_the_same_everywhere():
    org = Org(1, "small")
    for p in org.people():
        assert org.person_by_email(p.email) == p
        assert p.email.endswith("@example.co.jp")
    assert org.person_by_email("nobody@example.co.jp") is None


def test_a_huge_tenant_costs_no_memory():
    tracemalloc.start()
    org = Org(1, 100_000, files_per_user=100)
    last = org.person(99_999)
    files = list(org.user_files(99_999))
    drive_files = list(org.drive_files(org.n_drives - 1))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert last.index == 99_999 and len(files) == org.file_count(99_999)
    assert peak < 5_000_000, peak
    assert drive_files is not None


def test_mutations_are_logged_and_seen_by_the_generators():
    org = Org(1, "small")
    before = counts(org)
    seq = org.share("uf000013x0001", Share("x1", "anyone", "reader"))
    assert seq == 1 and org.find_file("uf000013x0001").shares[-1].id == "x1"
    org.delete_file("uf000013x0002")
    org.set_person(5, suspended=True)
    org.add_member("dept-soumu", "someone@vendor.example.org")
    assert [c["kind"] for c in org.changes_since(0)] == ["file", "file_removed", "person", "group"]
    after = counts(org)
    assert after["my_drive_files"] == before["my_drive_files"] - 1
    assert after["group_memberships"] == before["group_memberships"] + 1
    assert org.person(5).suspended
    assert ("someone@vendor.example.org", "MEMBER") in set(org.group_members(org.group("dept-soumu")))
