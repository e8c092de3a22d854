"""evidence.tables: CSV tables for Excel (BOM, CRLF, injection-safe, IDs kept as text)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from evidence.model import STREAMS, Grant, Membership, Principal, Record, Resource, field_names
from evidence.tables import (
    COLUMN_DICTIONARY,
    COLUMNS_HEADER,
    TableWriter,
    columns_for,
    excel_text_id,
    safe_cell,
)

TOKYO = ZoneInfo("Asia/Tokyo")
BOM = b"\xef\xbb\xbf"
ALL_FILES = [f"{s}.csv" for s in STREAMS] + ["columns.csv"]


def write(tmp_path: Path, *records: Record, tz: ZoneInfo = TOKYO) -> list[Path]:
    writer = TableWriter(tmp_path, tz)
    for record in records:
        writer.write(record)
    return writer.close()


def read_rows(path: Path) -> list[list[str]]:
    """Parse a table the way a careful reader would: bytes, BOM stripped, csv module."""
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


def read_dicts(path: Path) -> list[dict[str, str]]:
    header, *rows = read_rows(path)
    return [dict(zip(header, row, strict=True)) for row in rows]


def one_row(tmp_path: Path, record: Record) -> dict[str, str]:
    write(tmp_path, record)
    (row,) = read_dicts(tmp_path / f"{record.stream}.csv")
    return row


# --- file format ----------------------------------------------------------------------------


def test_every_file_has_bom_crlf_and_expected_header(tmp_path: Path) -> None:
    paths = write(
        tmp_path,
        Principal(id="user:alice", kind="user", display_name="山田 太郎").record(),
        Grant(resource_id="file-1", principal_id="user:alice", principal_kind="user",
              role="viewer", raw_role="reader").record(),
    )
    assert [p.name for p in paths] == ALL_FILES
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(BOM), path.name
        assert data.count(BOM) == 1, path.name
        assert data.endswith(b"\r\n"), path.name
        # every line break is CRLF: no bare LF anywhere (no cell here contains a newline)
        assert data.count(b"\n") == data.count(b"\r\n") > 0, path.name
    for stream in STREAMS:
        header = (tmp_path / f"{stream}.csv").read_bytes()[len(BOM):].split(b"\r\n")[0]
        assert header.decode("utf-8") == ",".join(columns_for(stream))
    columns_header = (tmp_path / "columns.csv").read_bytes()[len(BOM):].split(b"\r\n")[0]
    assert columns_header.decode("utf-8") == "table,column,日本語名,English name,説明,description"


def test_columns_follow_model_order_with_timestamps_split() -> None:
    assert columns_for("principals") == [
        "id", "kind", "email", "display_name", "domain", "external", "enabled", "mfa", "admin",
        "roles", "last_sign_in_utc", "last_sign_in_local", "created_utc", "created_local",
        "attributes",
    ]
    assert columns_for("memberships") == ["group_id", "member_id", "member_kind", "role", "attributes"]
    assert columns_for("resources") == [
        "id", "kind", "name", "path", "owners", "size", "modified_utc", "modified_local",
        "shared", "web_url", "attributes",
    ]
    assert columns_for("grants") == [
        "resource_id", "principal_id", "principal_kind", "role", "raw_role", "via",
        "principal_email", "principal_domain", "external", "link_scope", "expiry_utc",
        "expiry_local", "inherited_from", "grant_id", "attributes",
    ]
    for stream in STREAMS:
        base = [c.removesuffix("_utc") for c in columns_for(stream) if not c.endswith("_local")]
        assert base == list(field_names(stream))
    with pytest.raises(ValueError):
        columns_for("nope")


def test_zero_records_still_writes_every_file(tmp_path: Path) -> None:
    paths = write(tmp_path / "out")
    assert [p.name for p in paths] == ALL_FILES
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ALL_FILES)
    for stream in STREAMS:
        data = (tmp_path / "out" / f"{stream}.csv").read_bytes()
        assert data == BOM + ",".join(columns_for(stream)).encode() + b"\r\n"


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, TOKYO)
    first = writer.close()
    assert writer.close() == first
    with pytest.raises(ValueError):
        writer.write(Principal(id="x", kind="user").record())


def test_unknown_stream_is_rejected(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, TOKYO)
    with pytest.raises(ValueError):
        writer.write(Record("raw", "k", {}))
    writer.close()


def test_rows_keep_order_and_count(tmp_path: Path) -> None:
    records = [Membership(group_id="group:g", member_id=f"user:{i}", member_kind="user").record()
               for i in range(50)]
    write(tmp_path, *records)
    rows = read_dicts(tmp_path / "memberships.csv")
    assert [r["member_id"] for r in rows] == [f"user:{i}" for i in range(50)]


# --- IDs stay text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["123456789012345678901", "00123", "1E5", "2026-11-26", "11/26", "012345678901", "TRUE", "-1"],
)
def test_ids_excel_would_coerce_become_text_formulas(tmp_path: Path, value: str) -> None:
    row = one_row(tmp_path, Principal(id=value, kind="user").record())
    assert row["id"] == f'="{value}"'


@pytest.mark.parametrize("value", ["user:alice", "alice@example.co.jp", "1AbC-x_9", "file-12", "山田"])
def test_ordinary_ids_are_unchanged(tmp_path: Path, value: str) -> None:
    assert one_row(tmp_path, Principal(id=value, kind="user").record())["id"] == value


def test_every_id_column_is_protected(tmp_path: Path) -> None:
    big = "123456789012345678901"
    write(
        tmp_path,
        Membership(group_id=big, member_id="00123", member_kind="user").record(),
        Resource(id=big, kind="file", owners=("00123",)).record(),
        Grant(resource_id=big, principal_id="00123", principal_kind="user", role="owner",
              raw_role="owner", inherited_from="1E5", grant_id="2026-11-26").record(),
    )
    (m,) = read_dicts(tmp_path / "memberships.csv")
    assert (m["group_id"], m["member_id"]) == (f'="{big}"', '="00123"')
    (r,) = read_dicts(tmp_path / "resources.csv")
    assert (r["id"], r["owners"]) == (f'="{big}"', '="00123"')
    (g,) = read_dicts(tmp_path / "grants.csv")
    assert [g[c] for c in ("resource_id", "principal_id", "inherited_from", "grant_id")] == [
        f'="{big}"', '="00123"', '="1E5"', '="2026-11-26"'
    ]


def test_raw_bytes_of_a_text_formula_id(tmp_path: Path) -> None:
    write(tmp_path, Principal(id="123456789012345678901", kind="user").record())
    body = (tmp_path / "principals.csv").read_bytes().split(b"\r\n")[1]
    # csv quoting doubles the formula's quotes; Excel undoes it and sees ="123456789012345678901"
    assert body.startswith(b'"=""123456789012345678901""",user,')


def test_id_lists_and_ints_in_id_columns(tmp_path: Path) -> None:
    write(
        tmp_path,
        Resource(id="r1", kind="file", owners=("user:a", "user:b")).record(),
        Record("principals", "k", {"id": 123456789012345678901, "kind": "user"}),
    )
    (r,) = read_dicts(tmp_path / "resources.csv")
    assert r["owners"] == "user:a; user:b"
    (p,) = read_dicts(tmp_path / "principals.csv")
    assert p["id"] == '="123456789012345678901"'


def test_excel_text_id_helper() -> None:
    assert excel_text_id("00123") == '="00123"'
    assert excel_text_id("user:alice") == "user:alice"
    assert excel_text_id("") == ""
    assert excel_text_id("=cmd") == "'=cmd"  # not numeric: neutralised like any other string
    assert excel_text_id("1,234") == '="1,234"'
    assert excel_text_id("令和8年11月26日") == '="令和8年11月26日"'


# --- formula injection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ['=HYPERLINK("http://x","y")', "+1", "-1", "@x", "\tx", "\rx", "＝SUM(A1)"]
)
def test_formula_like_strings_are_neutralised(tmp_path: Path, value: str) -> None:
    row = one_row(tmp_path, Principal(id="user:a", kind="user", display_name=value).record())
    assert row["display_name"] == "'" + value
    assert row["display_name"].startswith("'" + value[0])


def test_injection_in_every_kind_of_cell(tmp_path: Path) -> None:
    write(
        tmp_path,
        Principal(id="=cmd|' /C calc'!A0", kind="user", roles=("=evil", "ok"),
                  last_sign_in="=1+1").record(),
        Resource(id="r", kind="file", name="@SUM(1)", size=-1, owners=("-2+3",)).record(),
    )
    (p,) = read_dicts(tmp_path / "principals.csv")
    assert p["id"] == "'=cmd|' /C calc'!A0"
    assert p["roles"] == "'=evil; ok"
    assert p["last_sign_in_utc"] == "'=1+1"
    assert p["last_sign_in_local"] == ""
    (r,) = read_dicts(tmp_path / "resources.csv")
    assert r["name"] == "'@SUM(1)"
    assert r["owners"] == "'-2+3"
    assert r["size"] == "-1"  # an int stays a number


def test_int_size_is_a_bare_number_in_the_bytes(tmp_path: Path) -> None:
    write(tmp_path, Resource(id="r", kind="file", size=-1).record())
    assert b",-1," in (tmp_path / "resources.csv").read_bytes().split(b"\r\n")[1]


def test_safe_cell_helper() -> None:
    for value in ("=1", "+1", "-1", "@1", "\t1", "\r1"):
        assert safe_cell(value) == "'" + value
    for value in ("", "abc", "1", "a=b", "'=x", "山田"):
        assert safe_cell(value) == value


# --- value rendering ------------------------------------------------------------------------


def test_booleans_none_lists_and_attributes(tmp_path: Path) -> None:
    row = one_row(
        tmp_path,
        Principal(id="u", kind="user", external=True, enabled=False, mfa=None,
                  roles=("Global Administrator", "監査担当"),
                  attributes={"z": 1, "a": "日本語", "n": None}).record(),
    )
    assert (row["external"], row["enabled"], row["mfa"]) == ("true", "false", "")
    assert row["email"] == "" and row["created_utc"] == "" and row["created_local"] == ""
    assert row["roles"] == "Global Administrator; 監査担当"
    assert row["attributes"] == '{"a":"日本語","n":null,"z":1}'


def test_empty_attributes_are_an_empty_cell(tmp_path: Path) -> None:
    assert one_row(tmp_path, Principal(id="u", kind="user").record())["attributes"] == ""


def test_japanese_text_round_trips(tmp_path: Path) -> None:
    name = "山田 太郎（経理部）①～㈱ＡＢＣ"
    path = "/共有ドライブ/経理/2026年度/請求書_\u2460.xlsx"
    write(
        tmp_path,
        Principal(id="user:yamada", kind="user", display_name=name, email="山田@例え.jp").record(),
        Resource(id="r", kind="file", name="請求書.xlsx", path=path).record(),
    )
    (p,) = read_dicts(tmp_path / "principals.csv")
    assert (p["display_name"], p["email"]) == (name, "山田@例え.jp")
    (r,) = read_dicts(tmp_path / "resources.csv")
    assert (r["name"], r["path"]) == ("請求書.xlsx", path)
    assert name.encode("utf-8") in (tmp_path / "principals.csv").read_bytes()


def test_cells_with_commas_quotes_and_newlines_round_trip(tmp_path: Path) -> None:
    name = 'a, "b"\nc'
    assert one_row(tmp_path, Resource(id="r", kind="file", name=name).record())["name"] == name


# --- timestamps -----------------------------------------------------------------------------


def test_utc_to_tokyo(tmp_path: Path) -> None:
    row = one_row(tmp_path, Principal(id="u", kind="user", last_sign_in="2026-11-26T03:00:00Z",
                                      created="2026-11-26T20:30:15Z").record())
    assert row["last_sign_in_utc"] == "2026-11-26T03:00:00Z"
    assert row["last_sign_in_local"] == "2026-11-26 12:00:00 +09:00"
    assert row["created_local"] == "2026-11-27 05:30:15 +09:00"  # crosses midnight


def test_fractional_seconds_are_parsed(tmp_path: Path) -> None:
    row = one_row(tmp_path, Resource(id="r", kind="file", modified="2026-11-26T03:00:00.123456Z").record())
    assert row["modified_utc"] == "2026-11-26T03:00:00.123456Z"
    assert row["modified_local"] == "2026-11-26 12:00:00 +09:00"
    row = one_row(tmp_path, Resource(id="r", kind="file", modified="2026-11-26T03:00:59.5Z").record())
    assert row["modified_local"] == "2026-11-26 12:00:59 +09:00"


@pytest.mark.parametrize("garbage", ["garbage", "2026-13-45T99:00:00Z", "2026-11-26T03:00:00", "昨日"])
def test_unparseable_timestamps_kept_in_utc_column(tmp_path: Path, garbage: str) -> None:
    row = one_row(tmp_path, Grant(resource_id="r", principal_id="p", principal_kind="user",
                                  role="viewer", raw_role="reader", expiry=garbage).record())
    assert row["expiry_utc"] == garbage
    assert row["expiry_local"] == ""


def test_other_zones_and_dst(tmp_path: Path) -> None:
    write(
        tmp_path,
        Resource(id="a", kind="file", modified="2026-07-01T12:00:00Z").record(),
        Resource(id="b", kind="file", modified="2026-01-01T12:00:00Z").record(),
        tz=ZoneInfo("America/New_York"),
    )
    rows = read_dicts(tmp_path / "resources.csv")
    assert [r["modified_local"] for r in rows] == [
        "2026-07-01 08:00:00 -04:00", "2026-01-01 07:00:00 -05:00"
    ]


# --- data dictionary ------------------------------------------------------------------------


def test_columns_csv_covers_every_column_of_every_table(tmp_path: Path) -> None:
    write(tmp_path)
    header, *rows = read_rows(tmp_path / "columns.csv")
    assert tuple(header) == COLUMNS_HEADER
    assert [(r[0], r[1]) for r in rows] == [(s, c) for s in STREAMS for c in columns_for(s)]
    for row in rows:
        assert all(cell.strip() for cell in row), row  # every name and description filled in
    # Japanese columns really are Japanese, English ones ASCII
    for table, column, ja, en, desc_ja, desc_en in rows:
        assert any(ord(ch) > 0x3000 for ch in ja + desc_ja), (table, column)
        assert en.isascii() and desc_en.isascii(), (table, column)
    mfa = next(r for r in rows if r[:2] == ["principals", "mfa"])
    assert mfa[2:] == ["多要素認証", "MFA", "多要素認証が有効か（空欄は不明）",
                       "Whether multi-factor authentication is on (empty = unknown)"]
    local = next(r for r in rows if r[:2] == ["grants", "expiry_local"])
    assert "Asia/Tokyo" in local[4] and "Asia/Tokyo" in local[5]
    assert not any("{tz}" in cell for row in rows for cell in row)


def test_dictionary_matches_the_tables_exactly() -> None:
    assert set(COLUMN_DICTIONARY) == set(STREAMS)
    for stream in STREAMS:
        assert list(COLUMN_DICTIONARY[stream]) == columns_for(stream), stream
        for column, doc in COLUMN_DICTIONARY[stream].items():
            assert set(doc) == {"ja", "en", "description_ja", "description_en"}, (stream, column)


def test_columns_csv_written_even_when_records_were_written(tmp_path: Path) -> None:
    write(tmp_path, Principal(id="u", kind="user").record())
    rows = read_rows(tmp_path / "columns.csv")
    assert len(rows) == 1 + sum(len(columns_for(s)) for s in STREAMS)
