"""CSV tables an auditor opens in Excel (Japanese Excel included).

:class:`TableWriter` streams :class:`~evidence.model.Record` objects into one CSV per stream
(``principals.csv``, ``memberships.csv``, ``resources.csv``, ``grants.csv``) plus a bilingual
data dictionary ``columns.csv``. The set of files is always the same, records or not.

File format, chosen for Excel rather than for machines (the JSONL records are the machine copy):

* UTF-8 **with BOM**: without it Japanese Excel reads the file as Shift_JIS and garbles it.
* CRLF line endings, fields quoted only when needed (:mod:`csv` defaults).
* Columns are the model fields in model order, except that each timestamp field becomes two
  columns, ``<name>_utc`` (the stored string) and ``<name>_local`` (the organisation's time zone).
* Lists are joined with ``"; "``, ``attributes`` is one compact JSON cell (empty when there are
  none), booleans are ``true``/``false``, ``None`` is an empty cell, ints stay numbers.
* Every string cell is neutralised against formula injection (:func:`safe_cell`) and ID cells that
  Excel would silently turn into a number or a date are written as text formulas
  (:func:`excel_text_id`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol
from zoneinfo import ZoneInfo

from evidence.model import STREAMS, Record, canonical_json, field_names

__all__ = [
    "COLUMNS_FILE",
    "COLUMNS_HEADER",
    "COLUMN_DICTIONARY",
    "ID_FIELDS",
    "TIMESTAMP_FIELDS",
    "TableWriter",
    "columns_for",
    "excel_text_id",
    "line_and_row_function",
    "safe_cell",
]

COLUMNS_FILE = "columns.csv"
COLUMNS_HEADER = ("table", "column", "日本語名", "English name", "説明", "description")

#: Fields holding a UTC ISO 8601 string; each becomes ``<name>_utc`` and ``<name>_local``.
TIMESTAMP_FIELDS = frozenset({"last_sign_in", "created", "modified", "expiry"})

#: Fields holding identifiers, written so that Excel keeps them as text (see :func:`excel_text_id`).
ID_FIELDS = frozenset(
    {"id", "group_id", "member_id", "resource_id", "principal_id", "grant_id", "owners", "inherited_from"}
)

_BOM = "\ufeff"

# ---------------------------------------------------------------------------------------------
# Cell neutralisation
# ---------------------------------------------------------------------------------------------

# OWASP "CSV Injection": a cell starting with one of these is read by spreadsheet programs as a
# formula (or, for tab / CR, lets one follow). The full-width forms are included as well: Japanese
# Excel and IMEs treat ＝ ＋ － ＠ like their ASCII counterparts often enough that leaving them
# alone is not worth the risk, and an extra quote on a rare display name costs nothing.
_FORMULA_TRIGGERS = "=+-@\t\r＝＋－＠"


def safe_cell(value: str) -> str:
    """Prefix ``'`` to a string a spreadsheet would take as a formula (OWASP CSV injection)."""
    if value and value[0] in _FORMULA_TRIGGERS:
        return "'" + value
    return value


# Why ID columns get special treatment: Excel converts on open every cell that *looks* like a
# number or a date, and the conversion is lossy and silent. ``00123`` becomes 123 (a 12-digit AWS
# account ID loses its leading zeros), a 21-digit numeric ID becomes 1.23457E+20 (only 15
# significant digits survive, so two different IDs become equal), ``1E5`` becomes 100000,
# ``2026-11-26`` or ``11/26`` become dates, ``TRUE`` a boolean. An auditor matching grants to
# principals by ID would then match the wrong rows, or fail to match at all. Writing such a value
# as ``="<value>"`` (a formula whose result is a text constant) is the standard idiom that
# survives a plain double-click open; a leading ``'`` is no help in a CSV file, where Excel keeps
# it as part of the value, and the formula cannot be abused because the value is inside a
# string literal with its ``"`` doubled. Only values Excel would convert get the formula, so
# ordinary IDs (``user:alice``, ``1AbC-x_9``) stay plain and readable. Erring towards wrapping is
# harmless: the cell still displays exactly the original value.
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_EXCEL_COERCIBLE = re.compile(
    rf"""
      [-+]?\(?[-+]?[$¥￥€£]?[-+]?                      # sign, accounting brackets, currency
      (?:\d[\d,]*(?:\.\d*)?|\.\d+)                     # 123  00123  1,234  1.5  .5
      (?:e[-+]?\d+)?%?\)?                              # 1E5  1e-3  50%
    | \d[\d ./:\-年月日時分秒]*(?:[ ]?[ap]m?)?         # 2026-11-26  11/26  1 1/2  12:30 pm  11月26日
    | {_MONTH}\.?[ \-/,]*\d{{1,4}}(?:[ \-/,]+\d{{1,4}})?  # Nov-26  November 26, 2026
    | \d{{1,2}}[ \-/]*{_MONTH}\.?(?:[ \-/,]*\d{{1,4}})?   # 26-Nov  26 Nov 2026
    | [mtshr]\d{{1,2}}[./\-]\d{{1,2}}(?:[./\-]\d{{1,2}})?  # Japanese era dates: R8.11.26  H30/1/1
    | (?:明治|大正|昭和|平成|令和)[ ]?(?:\d{{1,2}}|元)年(?:[ ]?\d{{1,2}}月(?:[ ]?\d{{1,2}}日)?)?
    | true | false                                    # booleans
    | \#(?:n/a|div/0!|value!|ref!|name\?|num!|null!)    # error values
    """,
    re.IGNORECASE | re.VERBOSE,
)
_excel_coercible = re.compile(rf"\s*(?:{_EXCEL_COERCIBLE.pattern})\s*", re.IGNORECASE | re.VERBOSE).fullmatch
# Excel limits a text constant inside a formula to 255 characters.
_EXCEL_FORMULA_TEXT_MAX = 255


def excel_text_id(value: str) -> str:
    """An ID cell Excel keeps as text: ``="<value>"`` if Excel would coerce it, else :func:`safe_cell`."""
    if not value:
        return value
    if len(value) <= _EXCEL_FORMULA_TEXT_MAX and _excel_coercible(value) is not None:
        return '="' + value.replace('"', '""') + '"'
    if value[0] in _FORMULA_TRIGGERS:
        return "'" + value
    return value


# IDs repeat a lot (every grant names its resource and principal), so the regex runs once per value.
_cached_text_id = lru_cache(maxsize=1 << 16)(excel_text_id)

# ---------------------------------------------------------------------------------------------
# Cell converters
# ---------------------------------------------------------------------------------------------


def _scalar_text(value: Any) -> str:
    """One element of a list cell, not yet neutralised."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return _json(value)
    return str(value)


# ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)``
# without building an encoder per call (``encode`` still makes a fresh C encoder each time).
_json: Callable[[Any], str] = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


def csv_cell(value: Any) -> Any:
    """A value of an ordinary column as written to the CSV."""
    if value is None:
        return ""
    t = type(value)
    if t is str:
        if value and value[0] in _FORMULA_TRIGGERS:
            return "'" + value
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return value  # a number, not text: "-1" must stay -1
    if t is dict:
        return safe_cell(_json(value)) if value else ""
    if t is list or t is tuple:
        return safe_cell("; ".join(map(_scalar_text, value)))
    if isinstance(value, Mapping):
        return safe_cell(_json(value)) if value else ""
    if isinstance(value, int):  # bool subclasses were handled above; IntEnum and friends
        return int(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return safe_cell(str(value))


def csv_id_cell(value: Any) -> Any:
    """A value of an ID column: text Excel will not coerce."""
    if value is None:
        return ""
    t = type(value)
    if t is str:
        return _cached_text_id(value) if value else ""
    if t is list or t is tuple:
        return excel_text_id("; ".join(map(_scalar_text, value)))
    if t is bool:
        return "true" if value else "false"
    if isinstance(value, int):  # a numeric ID must not become a lossy Excel number
        return _cached_text_id(str(value))
    return csv_cell(value)


def _utc_cell(value: Any) -> Any:
    """``<name>_utc``: the stored string unchanged (only neutralised, in case it is garbage)."""
    return csv_cell(value)


def format_local(dt: datetime) -> str:
    offset = dt.utcoffset()
    seconds = int(offset.total_seconds()) if offset is not None else 0
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    zone = f"{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {zone}"
    )


def _local_text_converter(tz: ZoneInfo) -> Callable[[str], str]:
    """:func:`_local_converter` for a non-empty ``str`` only (cached)."""

    @lru_cache(maxsize=1 << 14)
    def convert_text(value: str) -> str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return ""
        if dt.tzinfo is None:  # no zone stated: do not guess what instant it was
            return ""
        try:
            return format_local(dt.astimezone(tz))
        except (OverflowError, ValueError):
            return ""

    return convert_text


def local_converter(tz: ZoneInfo) -> Callable[[Any], str]:
    """``<name>_local`` for zone *tz*: ``YYYY-MM-DD HH:MM:SS +09:00``, empty if unparseable."""
    convert_text = _local_text_converter(tz)

    def convert(value: Any) -> str:
        if type(value) is not str or not value:
            return ""
        return convert_text(value)

    return convert


# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------


def _expand(name: str) -> tuple[str, ...]:
    if name in TIMESTAMP_FIELDS:
        return (f"{name}_utc", f"{name}_local")
    return (name,)


_COLUMNS: dict[str, tuple[str, ...]] = {
    stream: tuple(col for name in field_names(stream) for col in _expand(name)) for stream in STREAMS
}


def columns_for(stream: str) -> list[str]:
    """The CSV header of *stream*: model fields in order, timestamps split into ``_utc``/``_local``."""
    try:
        return list(_COLUMNS[stream])
    except KeyError:
        raise ValueError(f"unknown stream {stream!r}; expected one of {', '.join(STREAMS)}") from None


def _converters(stream: str, tz: ZoneInfo) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """``(field name, converter)`` per CSV column of *stream*, in column order."""
    local = local_converter(tz)
    spec: list[tuple[str, Callable[[Any], Any]]] = []
    for name in field_names(stream):
        if name in TIMESTAMP_FIELDS:
            spec.append((name, _utc_cell))
            spec.append((name, local))
        elif name in ID_FIELDS:
            spec.append((name, csv_id_cell))
        else:
            spec.append((name, csv_cell))
    return tuple(spec)


# The row of a record is what ``csv.writer`` makes of
# ``[convert(data.get(name)) for name, convert in _converters(...)]`` (the reference above; tests
# compare). That costs a Python call per cell and a ``writerow``, mostly spent on values that
# need neither conversion nor quoting, so each stream gets functions generated from its columns:
# the common values (str, None, bool, int, a list of str, an attributes dict) are converted
# inline and the line is joined directly when no cell needs quoting (the attributes cell, last
# and JSON, is quoted by hand); anything else goes through the converters and the csv module.
#
# * :func:`_row_function` – ``row(data)``: the CSV line of any record (what TableWriter.write uses);
# * :func:`line_and_row_function` – ``f(key, data)``: the record's JSONL line (``Record.line()``)
#   and its CSV line together, each value looked at once; None for anything but a plain dict of
#   exactly the stream's fields holding common values (the bundle writer then takes the general
#   path). Its JSON pieces are what ``canonical_json`` writes for those values.

_AS_TEXT = """\
        if not isinstance(v, str):
            v = str(v)  # what the csv module writes for a number
"""
_ROW_ORDINARY = """\
    v = get({name!r})
    if type(v) is str:
        if v and v[0] in triggers:
            v = "'" + v
    elif v is None:
        v = ""
    elif v is True:
        v = "true"
    elif v is False:
        v = "false"
    elif type(v) is int:
        v = int_text(v)
    else:
        v = cell(v)
""" + _AS_TEXT + """\
    c{i} = v
"""
_ROW_ID = """\
    v = get({name!r})
    if type(v) is str:
        if v:
            v = text_id(v)
    elif v is None:
        v = ""
    elif type(v) is list:
        try:
            v = text_id("; ".join(v))  # only str items join; excel_text_id is pure, so cached
        except TypeError:
            v = id_cell(v)
""" + _AS_TEXT.replace("        ", "            ") + """\
    else:
        v = id_cell(v)
""" + _AS_TEXT + """\
    c{i} = v
"""
_ROW_TIMESTAMP = """\
    v = get({name!r})
    if type(v) is str:
        if v:
            c{j} = local(v)
            if v[0] in triggers:
                v = "'" + v
        else:
            c{j} = ""
    else:
        c{j} = ""
        v = "" if v is None else cell(v)
""" + _AS_TEXT + """\
    c{i} = v
"""
_ROW_ATTRIBUTES = """\
    v = get({name!r})
    if type(v) is dict and not v:
        v = ""
    elif v is None:
        v = ""
    else:
        v = cell(v)
""" + _AS_TEXT + """\
    c{i} = v
"""

# f(key, data): j<n> is the JSON of the n-th field in sorted order, c<n> (and l<n>) its cells
_BOTH_ORDINARY = """\
        v = data[{name!r}]
        if type(v) is str:
            j{n} = encode_str(v)
            c{n} = "'" + v if v and v[0] in triggers else v
        elif v is None:
            j{n} = "null"
            c{n} = ""
        elif v is True:
            j{n} = c{n} = "true"
        elif v is False:
            j{n} = c{n} = "false"
        elif type(v) is int:
            j{n} = c{n} = int_text(v)
        elif type(v) is list:
            j{n} = "[" + ",".join(map(encode_str, v)) + "]"  # TypeError unless all items are str
            c{n} = "; ".join(v)
            if c{n} and c{n}[0] in triggers:
                c{n} = "'" + c{n}
        else:
            return None
"""
_BOTH_ID = """\
        v = data[{name!r}]
        if type(v) is str:
            j{n} = encode_str(v)
            c{n} = text_id(v) if v else ""
        elif v is None:
            j{n} = "null"
            c{n} = ""
        elif type(v) is list:
            j{n} = "[" + ",".join(map(encode_str, v)) + "]"  # TypeError unless all items are str
            c{n} = text_id("; ".join(v))
        elif v is True:
            j{n} = c{n} = "true"
        elif v is False:
            j{n} = c{n} = "false"
        elif type(v) is int:
            j{n} = int_text(v)
            c{n} = text_id(j{n})
        else:
            return None
"""
_BOTH_TIMESTAMP = """\
        v = data[{name!r}]
        if type(v) is str:
            j{n} = encode_str(v)
            if v:
                l{n} = local(v)
                c{n} = "'" + v if v[0] in triggers else v
            else:
                c{n} = l{n} = ""
        elif v is None:
            j{n} = "null"
            c{n} = l{n} = ""
        else:
            return None
"""
_BOTH_ATTRIBUTES = """\
        v = data[{name!r}]
        if type(v) is dict:
            if v:
                j{n} = c{n} = encode(v)
            else:
                j{n} = "{{}}"
                c{n} = ""
        elif v is None:
            j{n} = "null"
            c{n} = ""
        else:
            return None
"""
_ROW_END = """\
    head = ",".join(({head},))
    if '"' in head or "\\r" in head or "\\n" in head or head.count(",") != {commas}:
        return {ret}slow([{cells}])
    last = {last}
    if not last:
        return {ret}head + ",\\r\\n"
    if '"' in last or "," in last or "\\r" in last or "\\n" in last:
        return {ret}head + ',"' + last.replace('"', '""') + '"\\r\\n'
    return {ret}head + "," + last + "\\r\\n"
"""


def _csv_line(cells: list[Any]) -> str:
    """One CSV line as :func:`csv.writer` writes it (excel dialect: CRLF, minimal quoting)."""
    sink = _Lines()
    csv.writer(sink).writerow(cells)
    return sink.lines[0]


def _generated(source: list[str], name: str, tz: ZoneInfo) -> Any:
    namespace: dict[str, Any] = {
        "triggers": _FORMULA_TRIGGERS, "cell": csv_cell, "id_cell": csv_id_cell, "text_id": _cached_text_id,
        "local": _local_text_converter(tz), "int_text": int.__repr__, "slow": _csv_line,
        "encode_str": json.encoder.encode_basestring, "encode": canonical_json,
    }
    exec(compile("\n".join(source), f"<{name}>", "exec"), namespace)  # noqa: S102 - our own templates
    return namespace["f"]


def _row_end(cells: list[str], ret: str = "") -> str:
    if len(cells) < 2:  # pragma: no cover - every model has at least two fields
        raise ValueError("too few columns")
    return _ROW_END.format(
        head=", ".join(cells[:-1]), commas=len(cells) - 2, cells=", ".join(cells), last=cells[-1], ret=ret
    )


def _row_function(stream: str, tz: ZoneInfo) -> Callable[[Mapping[str, Any]], str]:
    """``row(data)``: the CSV line (CRLF included) of one record of *stream*."""
    source = ["def f(data):", "    get = data.get"]
    cells: list[str] = []
    for name in field_names(stream):
        i = len(cells)
        if name in TIMESTAMP_FIELDS:
            source.append(_ROW_TIMESTAMP.format(name=name, i=i, j=i + 1))
            cells += [f"c{i}", f"c{i + 1}"]
            continue
        template = (
            _ROW_ATTRIBUTES if name == "attributes" else _ROW_ID if name in ID_FIELDS else _ROW_ORDINARY
        )
        source.append(template.format(name=name, i=i))
        cells.append(f"c{i}")
    source.append(_row_end(cells))
    return _generated(source, f"{stream} row", tz)


def line_and_row_function(
    stream: str, tz: ZoneInfo
) -> Callable[[str, dict[str, Any]], tuple[str, str] | None]:
    """``f(key, data)`` → ``(Record(stream, key, data).line(), CSV line)``, or None (see above).

    The caller passes a ``str`` key and a ``dict`` data only.
    """
    names = field_names(stream)
    ordered = sorted(names)  # the order json's sort_keys gives (str keys)
    source = ["def f(key, data):", f"    if len(data) != {len(names)}:", "        return None", "    try:"]
    cells: list[str] = []
    for name in names:
        n = ordered.index(name)
        if name in TIMESTAMP_FIELDS:
            source.append(_BOTH_TIMESTAMP.format(name=name, n=n))
            cells += [f"c{n}", f"l{n}"]
            continue
        template = (
            _BOTH_ATTRIBUTES if name == "attributes" else _BOTH_ID if name in ID_FIELDS else _BOTH_ORDINARY
        )
        source.append(template.format(name=name, n=n))
        cells.append(f"c{n}")
    source += ["    except (KeyError, TypeError):", "        return None"]  # another field; a list of non-str
    parts = ["'{\"key\":'", "encode_str(key)"]
    for n, name in enumerate(ordered):
        parts += [repr((',"record":{' if n == 0 else ",") + json.encoder.encode_basestring(name) + ":"), f"j{n}"]
    parts.append(repr("}}"))
    source.append(f"    line = \"\".join(({', '.join(parts)}))")
    source.append(_row_end(cells, ret="line, "))
    return _generated(source, f"{stream} line and row", tz)


# ---------------------------------------------------------------------------------------------
# Data dictionary (columns.csv)
# ---------------------------------------------------------------------------------------------


def _col(ja: str, en: str, description_ja: str, description_en: str) -> dict[str, str]:
    return {"ja": ja, "en": en, "description_ja": description_ja, "description_en": description_en}


def _timestamp(
    name: str, ja: str, en: str, what_ja: str, what_en: str, empty_ja: str, empty_en: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The ``<name>_utc`` and ``<name>_local`` entries of one timestamp field."""
    return (
        _col(
            f"{ja}（UTC）",
            f"{en} (UTC)",
            f"{what_ja}。協定世界時（UTC）のISO 8601形式で、接続先から取得した値のまま（空欄は{empty_ja}）",
            f"{what_en}, in UTC as ISO 8601, exactly as collected (empty = {empty_en})",
        ),
        _col(
            f"{ja}（現地時刻）",
            f"{en} (local time)",
            f"{name}_utc と同じ日時を組織のタイムゾーン（{{tz}}）で表したもの。"
            f"形式は YYYY-MM-DD HH:MM:SS +09:00（{name}_utc が空欄または解釈できない場合は空欄）",
            f"The same instant as {name}_utc in the organisation's time zone ({{tz}}), formatted "
            f"YYYY-MM-DD HH:MM:SS +09:00 (empty when {name}_utc is empty or cannot be parsed)",
        ),
    )


_ATTRIBUTES = _col(
    "追加属性",
    "Additional attributes",
    "他の列に収まらない接続先固有の属性（JSON形式、キーは昇順。空欄は追加属性なし）",
    "Source-specific attributes not covered by the other columns (JSON, keys sorted; empty = none)",
)
_KIND_VALUES_JA = (
    "user（ユーザー）、group（グループ）、service_account（サービスアカウント）、guest（ゲスト）、"
    "role（ロール）、domain（ドメイン全体）、anyone（誰でも）、unknown（不明）"
)
_KIND_VALUES_EN = "user, group, service_account, guest, role, domain (a whole domain), anyone, unknown"
_EXTERNAL_JA = "（true=組織外、false=組織内、空欄は不明）"
_EXTERNAL_EN = " (true = external, false = internal, empty = unknown)"

_last_sign_in_utc, _last_sign_in_local = _timestamp(
    "last_sign_in", "最終サインイン日時", "Last sign-in",
    "最後にサインインした日時", "When the principal last signed in",
    "サインイン記録なし、または不明", "never signed in, or unknown",
)
_created_utc, _created_local = _timestamp(
    "created", "作成日時", "Created",
    "アカウントが作成された日時", "When the account was created",
    "不明", "unknown",
)
_modified_utc, _modified_local = _timestamp(
    "modified", "最終更新日時", "Last modified",
    "リソースが最後に更新された日時", "When the resource was last modified",
    "不明", "unknown",
)
_expiry_utc, _expiry_local = _timestamp(
    "expiry", "有効期限", "Expiry",
    "権限が失効する日時", "When the grant expires",
    "期限なし、または不明", "no expiry, or unknown",
)

#: ``COLUMN_DICTIONARY[table][column]`` → ``{"ja", "en", "description_ja", "description_en"}``.
#: ``{tz}`` in a description is replaced with the writer's time zone when ``columns.csv`` is written.
COLUMN_DICTIONARY: dict[str, dict[str, dict[str, str]]] = {
    "principals": {
        "id": _col(
            "主体ID",
            "Principal ID",
            "接続先システム内でユーザー・グループ等の主体を一意に識別するID"
            "（ドメイン全体は domain:<ドメイン>、誰でもは anyone）",
            "Identifier of the user, group or other principal in the source system "
            "(a whole domain is domain:<domain>, everyone is anyone)",
        ),
        "kind": _col(
            "主体の種類", "Principal kind", f"次のいずれか: {_KIND_VALUES_JA}", f"One of: {_KIND_VALUES_EN}"
        ),
        "email": _col(
            "メールアドレス", "Email address", "主体のメールアドレス（空欄はなし・不明）",
            "The principal's email address (empty = none or unknown)",
        ),
        "display_name": _col(
            "表示名", "Display name", "接続先システムに登録されている表示名",
            "Display name as registered in the source system",
        ),
        "domain": _col(
            "ドメイン", "Domain", "主体が属するドメイン（通常はメールアドレスのドメイン）",
            "Domain the principal belongs to (usually the domain of its email address)",
        ),
        "external": _col(
            "外部ユーザー", "External", f"組織外の主体か{_EXTERNAL_JA}",
            f"Whether the principal is outside the organisation{_EXTERNAL_EN}",
        ),
        "enabled": _col(
            "有効", "Enabled", "アカウントが有効か（false=無効・停止中、空欄は不明）",
            "Whether the account is enabled (false = disabled or suspended, empty = unknown)",
        ),
        "mfa": _col(
            "多要素認証", "MFA", "多要素認証が有効か（空欄は不明）",
            "Whether multi-factor authentication is on (empty = unknown)",
        ),
        "admin": _col(
            "管理者", "Administrator", "管理者権限を持つか（空欄は不明）",
            "Whether the principal holds administrative privileges (empty = unknown)",
        ),
        "roles": _col(
            "割り当てロール", "Assigned roles",
            "接続先システムで割り当てられているロール名（複数は「; 」区切り）",
            'Role names assigned in the source system (several are separated by "; ")',
        ),
        "last_sign_in_utc": _last_sign_in_utc,
        "last_sign_in_local": _last_sign_in_local,
        "created_utc": _created_utc,
        "created_local": _created_local,
        "attributes": _ATTRIBUTES,
    },
    "memberships": {
        "group_id": _col(
            "グループID", "Group ID", "親グループの主体ID（principals表のidに対応）",
            "Principal ID of the group (matches id in principals)",
        ),
        "member_id": _col(
            "メンバーID", "Member ID", "グループに所属するメンバーの主体ID（principals表のidに対応）",
            "Principal ID of the member (matches id in principals)",
        ),
        "member_kind": _col(
            "メンバーの種類", "Member kind", f"メンバーの主体の種類: {_KIND_VALUES_JA}",
            f"Kind of the member principal: {_KIND_VALUES_EN}",
        ),
        "role": _col(
            "グループ内の役割", "Role in group",
            "グループ内での役割（例: OWNER、MANAGER、MEMBER。接続先の表記のまま。空欄は不明）",
            "The member's role in the group as the source states it "
            "(e.g. OWNER, MANAGER, MEMBER; empty = unknown)",
        ),
        "attributes": _ATTRIBUTES,
    },
    "resources": {
        "id": _col(
            "リソースID", "Resource ID",
            "接続先システム内でファイル・フォルダ等のリソースを一意に識別するID",
            "Identifier of the file, folder or other resource in the source system",
        ),
        "kind": _col(
            "リソースの種類", "Resource kind",
            "リソースの種類（例: file=ファイル、folder=フォルダ、shared_drive=共有ドライブ、site=サイト、"
            "drive=ドライブ、bucket=バケット、account=アカウント、role=ロール）",
            "Kind of resource (e.g. file, folder, shared_drive, site, drive, bucket, account, role)",
        ),
        "name": _col(
            "名前", "Name", "ファイル名・フォルダ名などリソースの名前",
            "Name of the resource (file name, folder name, ...)",
        ),
        "path": _col(
            "パス", "Path", "リソースの格納場所（接続先システムでのパス表記）",
            "Location of the resource (path as the source system writes it)",
        ),
        "owners": _col(
            "所有者", "Owners", "所有者の主体ID（複数は「; 」区切り。principals表のidに対応）",
            'Principal IDs of the owners (several are separated by "; "; match id in principals)',
        ),
        "size": _col(
            "サイズ（バイト）", "Size (bytes)", "バイト単位のサイズ（空欄は不明、またはフォルダ等で対象外）",
            "Size in bytes (empty = unknown or not applicable, e.g. folders)",
        ),
        "modified_utc": _modified_utc,
        "modified_local": _modified_local,
        "shared": _col(
            "共有あり", "Shared", "所有者以外にも共有されているか（空欄は不明）",
            "Whether the resource is shared with anyone besides its owners (empty = unknown)",
        ),
        "web_url": _col(
            "URL", "Web URL", "ブラウザでリソースを開くためのURL",
            "URL that opens the resource in a browser",
        ),
        "attributes": _ATTRIBUTES,
    },
    "grants": {
        "resource_id": _col(
            "リソースID", "Resource ID", "権限の対象となるリソースのID（resources表のidに対応）",
            "ID of the resource the grant is on (matches id in resources)",
        ),
        "principal_id": _col(
            "主体ID", "Principal ID", "権限を付与された主体のID（principals表のidに対応）",
            "ID of the principal holding the grant (matches id in principals)",
        ),
        "principal_kind": _col(
            "主体の種類", "Principal kind", f"権限を付与された主体の種類: {_KIND_VALUES_JA}",
            f"Kind of the principal holding the grant: {_KIND_VALUES_EN}",
        ),
        "role": _col(
            "権限", "Role",
            "正規化した権限レベル: owner（オーナー）、editor（編集者）、commenter（コメント可）、"
            "viewer（閲覧者）、admin（管理者）、other（その他。元の権限名を参照）",
            "Normalised permission level: owner, editor, commenter, viewer, admin, "
            "other (see raw role)",
        ),
        "raw_role": _col(
            "元の権限名", "Raw role", "接続先システムでの権限名（正規化前の表記のまま）",
            "Role name exactly as the source system states it (before normalisation)",
        ),
        "via": _col(
            "付与経路", "Granted via",
            "direct（直接付与）、inherited（上位フォルダ等から継承）、group（グループ経由）、"
            "link（共有リンク）、default_acl（既定のアクセス制御リスト）のいずれか",
            "One of: direct, inherited (from a parent folder etc.), group (through a group), "
            "link (a sharing link), default_acl (a default access control list)",
        ),
        "principal_email": _col(
            "主体のメールアドレス", "Principal email", "権限を付与された主体のメールアドレス（空欄はなし・不明）",
            "Email address of the principal holding the grant (empty = none or unknown)",
        ),
        "principal_domain": _col(
            "主体のドメイン", "Principal domain",
            "権限を付与された主体のドメイン（ドメイン全体への共有ではそのドメイン）",
            "Domain of the principal holding the grant (for a grant to a whole domain, that domain)",
        ),
        "external": _col(
            "外部への付与", "External", f"付与先が組織外の主体か{_EXTERNAL_JA}",
            f"Whether the grant goes to a principal outside the organisation{_EXTERNAL_EN}",
        ),
        "link_scope": _col(
            "リンクの共有範囲", "Link scope",
            "共有リンクの範囲: anyone（リンクを知っている全員）、organization（組織内の全員）、"
            "specific（指定したユーザーのみ）。リンク以外の付与では空欄",
            "Reach of a sharing link: anyone (anyone with the link), organization (everyone in the "
            "organisation), specific (named people only); empty for grants that are not links",
        ),
        "expiry_utc": _expiry_utc,
        "expiry_local": _expiry_local,
        "inherited_from": _col(
            "継承元", "Inherited from", "継承された権限の場合、継承元リソースのID（resources表のidに対応）",
            "For an inherited grant, ID of the resource it is inherited from (matches id in resources)",
        ),
        "grant_id": _col(
            "付与ID", "Grant ID", "接続先システムでの権限（パーミッション）自体のID（空欄はなし）",
            "ID of the permission entry itself in the source system (empty = none)",
        ),
        "attributes": _ATTRIBUTES,
    },
}

# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


#: Rows of one table collected (as text) before they are encoded and handed to the file in one
#: piece: about 100–300 KiB of CSV, few enough writes that the file's cost per call vanishes.
_ROWS_PER_CHUNK = 1024


class BinarySink(Protocol):
    def write(self, data: bytes, /) -> Any: ...

    def close(self) -> Any: ...


def _open_binary(path: Path) -> BinarySink:
    return open(path, "wb")


class _Lines:
    """What :func:`csv.writer` writes to: each formatted row is appended to ``lines``."""

    __slots__ = ("lines", "write")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.write = self.lines.append


class _Table:
    """One table being written: its file, its row function and the rows not yet handed over."""

    __slots__ = ("file", "lines", "row")

    def __init__(self, file: BinarySink, row: Callable[[Mapping[str, Any]], str]):
        self.file = file
        self.row = row
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        lines = self.lines
        lines.append(text)
        if len(lines) >= _ROWS_PER_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            # UTF-8 like the text file the tables used to be written through; a string that
            # cannot be encoded (a lone surrogate) raises here rather than in ``write``
            data = "".join(self.lines).encode("utf-8")
            self.lines.clear()
            self.file.write(data)


class TableWriter:
    """Stream records into ``<directory>/<stream>.csv``; :meth:`close` finishes the set of files.

    Each stream's file is opened on its first record (header row first). :meth:`close` writes a
    header-only file for every stream that got no records and the data dictionary
    ``columns.csv``, so a finished directory always holds the same five files.

    Rows are formatted as they come and reach the file in chunks of :data:`_ROWS_PER_CHUNK`.
    ``opener(path)`` opens each file for binary writing (``write(bytes)``, ``close()``); the
    bundle writer passes one that hashes and writes on a background thread.
    """

    def __init__(
        self, directory: Path, tz: ZoneInfo, *, opener: Callable[[Path], BinarySink] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.tz = tz
        self._opener = opener or _open_binary
        self._open: dict[str, _Table] = {}
        self._paths: list[Path] | None = None

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, stream: str) -> Path:
        return self.directory / f"{stream}.csv"

    def _start(self, stream: str) -> _Table:
        if self._paths is not None:
            raise ValueError("TableWriter is closed")
        header = columns_for(stream)  # raises on an unknown stream
        row = _row_function(stream, self.tz)
        self.directory.mkdir(parents=True, exist_ok=True)
        file = self._opener(self.path(stream))
        table = self._open[stream] = _Table(file, row)
        table.lines.append(_BOM + _csv_line(header))
        return table

    def write(self, record: Record) -> None:
        """Append one row for *record* to its stream's table."""
        try:
            table = self._open[record.stream]
        except KeyError:
            table = self._start(record.stream)
        lines = table.lines
        lines.append(table.row(record.data))
        if len(lines) >= _ROWS_PER_CHUNK:
            table.flush()

    def table(self, stream: str) -> "_Table":
        """The table of *stream* (opened if need be), for rows the caller formats itself.

        ``table.add(text)`` appends one line (CRLF included) exactly as :meth:`write` would
        have made it, for a caller that made it with :func:`line_and_row_function`.
        """
        try:
            return self._open[stream]
        except KeyError:
            return self._start(stream)

    def close(self) -> list[Path]:
        """Close every table, write the missing ones and ``columns.csv``; return all five paths."""
        if self._paths is not None:
            return list(self._paths)
        try:
            for stream in STREAMS:
                if stream not in self._open:
                    self._start(stream)
            for table in self._open.values():
                table.flush()
            self._write_columns()
        finally:
            errors: list[BaseException] = []
            for table in self._open.values():
                try:
                    table.file.close()
                except Exception as exc:  # keep closing the others
                    errors.append(exc)
            self._open.clear()
            self._paths = [self.path(s) for s in STREAMS] + [self.directory / COLUMNS_FILE]
            if errors:
                raise errors[0]
        return list(self._paths)

    def _write_columns(self) -> None:
        tz_name = str(getattr(self.tz, "key", None) or self.tz)
        sink = _Lines()
        sink.write(_BOM)
        writer = csv.writer(sink)
        writer.writerow(COLUMNS_HEADER)
        for stream in STREAMS:
            docs = COLUMN_DICTIONARY.get(stream, {})
            for column in _COLUMNS[stream]:
                doc = docs.get(column, {})
                writer.writerow(
                    [stream, column]
                    + [
                        safe_cell(doc.get(key, "").replace("{tz}", tz_name))
                        for key in ("ja", "en", "description_ja", "description_en")
                    ]
                )
        file = self._opener(self.directory / COLUMNS_FILE)
        try:
            file.write("".join(sink.lines).encode("utf-8"))
        finally:
            file.close()
