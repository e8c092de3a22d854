"""The control catalogue: the controls of JIS Q 15001:2023, ISO/IEC 27001:2022 Annex A and the SOC 2
Trust Services Criteria that the findings rules evidence, and which rule evidences which.

The catalogue ships with the package as ``evidence/data/controls.toml``; its header explains the
fields and the confirmation policy (``confirmed = true`` only where the reference and the title were
checked against the standard's text; every JIS Q 15001:2023 entry is unconfirmed and says what is
known). An organisation adjusts it with an optional ``controls.toml`` in its configuration directory
(``config/controls.toml``; example: ``config/controls.toml.example``), read after the packaged file:

``[[control]]`` with an ``id`` the catalogue does not have
    a new control: ``framework``, ``ref``, ``title_ja`` and ``title_en`` are required, ``confirmed``
    defaults to false, ``note`` is optional. A framework the packaged file does not name is shown
    after the packaged ones, in the order the file first names it.
``[[control]]`` with a known ``id``
    the fields it gives replace the packaged ones; the others stay. Changing ``ref``, ``title_ja``
    or ``title_en`` without also writing ``confirmed`` makes the control unconfirmed (the packaged
    confirmation was for the packaged text): write ``confirmed = true`` once you have checked your
    text against the standard. ``note = ""`` removes the note.
``[rules]``
    ``<rule id> = [<control id>, …]``: each rule listed gets exactly these controls (the packaged
    list is replaced, not extended; ``[]`` maps it to none); rules not listed keep theirs. A list may
    name controls of the packaged file and of this one.

Problems are reported like the rest of the configuration (:class:`collector.config.ConfigError`),
all at once, each as ``file:line: keypath: message``: a file that is not TOML, unknown keys, wrong
types, an id given twice in one file, a malformed id, a missing field of a new control, a rule id
that is not a findings rule (:data:`evidence.findings.model.RULES`), a control id that is not in
the catalogue, a control listed twice for one rule, and a rule that ends up unmapped.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Iterable, Mapping

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError

from collector.config import ConfigError, ConfigProblem, find_line, pydantic_problems, read_toml
from evidence.findings.model import RULES

PACKAGED_FILE = Path(__file__).resolve().parent / "data" / "controls.toml"
OVERRIDE_FILE = "controls.toml"
TEXT_FIELDS = ("ref", "title_ja", "title_en")
REQUIRED_FIELDS = ("framework", "ref", "title_ja", "title_en")

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*:[^\s:][^\s]*$")


@dataclass(frozen=True)
class Control:
    """One control of one framework, as the reports name it."""

    id: str                 # "iso27001:A.5.15", "soc2:CC6.1", "jisq15001:supervision-of-contractors"
    framework: str          # display name: "ISO/IEC 27001:2022"
    ref: str                # the reference as the standard numbers it: "A.5.15"
    title_ja: str
    title_en: str
    confirmed: bool         # reference and title checked against the standard's text
    note: str | None = None  # what was and was not checked

    def title(self, lang: str) -> str:
        return self.title_ja if lang == "ja" else self.title_en


@dataclass(frozen=True)
class Catalogue:
    """The controls (packaged order, replaced in place, added ones last), the rule → control ids
    mapping, and the files they were read from (the packaged file first)."""

    controls: tuple[Control, ...]
    rules: Mapping[str, tuple[str, ...]]
    files: tuple[Path, ...] = ()
    _by_id: dict[str, Control] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {c.id: c for c in self.controls})
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    def control(self, control_id: str) -> Control:
        """The control with that id; :class:`KeyError` if the catalogue has none."""
        try:
            return self._by_id[control_id]
        except KeyError:
            raise KeyError(f"no control '{control_id}' in the control catalogue") from None

    def controls_for(self, rule_id: str) -> tuple[str, ...]:
        """The ids of the controls a rule evidences (catalogue order of the rule's list)."""
        try:
            return self.rules[rule_id]
        except KeyError:
            raise KeyError(f"'{rule_id}' is not a findings rule") from None

    def for_rule(self, rule_id: str) -> tuple[Control, ...]:
        return tuple(self._by_id[c] for c in self.controls_for(rule_id))

    @property
    def frameworks(self) -> tuple[str, ...]:
        """Framework names in display order (the order in which the catalogue first names them)."""
        return tuple(dict.fromkeys(c.framework for c in self.controls))


# -- one [[control]] table as written ------------------------------------------------------------


def _control_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"'{value}' is not a control id: write '<framework>:<reference>', e.g. \"iso27001:A.5.15\"")
    return value


def _empty_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, AfterValidator(_control_id)]
    framework: Text | None = None
    ref: Text | None = None
    title_ja: Text | None = None
    title_en: Text | None = None
    confirmed: bool | None = None
    note: Annotated[str | None, BeforeValidator(_empty_is_none)] = None


# -- loading ---------------------------------------------------------------------------------------


def load_catalogue(config_dir: Path | None = None) -> Catalogue:
    """The packaged catalogue, then ``config_dir/controls.toml`` if there is one (see the module
    docstring for what it may change). Raise :class:`ConfigError` listing every problem."""
    problems: list[ConfigProblem] = []
    controls: dict[str, Control] = {}
    rules: dict[str, tuple[str, ...]] = {}
    files = [PACKAGED_FILE]
    _apply_file(PACKAGED_FILE, controls, rules, problems, packaged=True)
    if config_dir is not None:
        override = Path(config_dir) / OVERRIDE_FILE
        if override.is_file():
            files.append(override)
            _apply_file(override, controls, rules, problems, packaged=False)
    if not problems:
        for rule_id in RULES:
            if rule_id not in rules:
                problems.append(ConfigProblem(PACKAGED_FILE, f"rules.{rule_id}",
                                              "the rule is not mapped: every findings rule needs a list of controls"))
    if problems:
        raise ConfigError(problems)
    return Catalogue(controls=tuple(controls.values()), rules={r: rules[r] for r in RULES}, files=tuple(files))


def _apply_file(path: Path, controls: dict[str, Control], rules: dict[str, tuple[str, ...]],
                problems: list[ConfigProblem], *, packaged: bool) -> None:
    try:
        data, text = read_toml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return
    for key in data:
        if key not in ("control", "rules"):
            problems.append(ConfigProblem(path, key, "unknown key (this file holds [[control]] tables and a [rules] table)",
                                          find_line(text, (key,))))
    _apply_controls(path, text, data.get("control", []), controls, problems, packaged=packaged)
    if "rules" in data:
        _apply_rules(path, text, data["rules"], controls, rules, problems)


def _apply_controls(path: Path, text: str, tables: Any, controls: dict[str, Control], problems: list[ConfigProblem],
                    *, packaged: bool) -> None:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(ConfigProblem(path, "control", "write each control as a [[control]] table",
                                      find_line(text, ("control",))))
        return
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        def line(*keys: str) -> int | None:
            return find_line(text, (i, *keys), array_table="control")

        try:
            entry = _Entry.model_validate(table)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, path, text, f"control[{i}]", (i,), array_table="control"))
            continue
        if entry.id in seen:
            j = seen[entry.id]
            first = find_line(text, (j, "id"), array_table="control")
            problems.append(ConfigProblem(path, f"control[{i}].id", f"'{entry.id}' is already defined in this file by "
                                          f"control[{j}]{f' (line {first})' if first else ''}", line("id")))
            continue
        seen[entry.id] = i
        given = entry.model_dump(exclude_unset=True)
        del given["id"]
        old = controls.get(entry.id)
        if old is None:
            missing = [f for f in REQUIRED_FIELDS if given.get(f) is None]
            if packaged and "confirmed" not in given:
                missing.append("confirmed")
            for f in missing:
                why = "required key is missing" if packaged else \
                    f"required for a new control (the catalogue has no control '{entry.id}')"
                problems.append(ConfigProblem(path, f"control[{i}].{f}", why, line("id")))
            if missing:
                continue
            controls[entry.id] = Control(id=entry.id, framework=given["framework"], ref=given["ref"],
                                         title_ja=given["title_ja"], title_en=given["title_en"],
                                         confirmed=bool(given.get("confirmed", False)), note=given.get("note"))
            continue
        changes = {k: v for k, v in given.items() if not (v is None and k != "note")}
        if "confirmed" not in changes and any(k in changes and changes[k] != getattr(old, k) for k in TEXT_FIELDS):
            changes["confirmed"] = False  # the packaged confirmation was for the packaged text
        controls[entry.id] = replace(old, **changes)


def _apply_rules(path: Path, text: str, table: Any, controls: dict[str, Control], rules: dict[str, tuple[str, ...]],
                 problems: list[ConfigProblem]) -> None:
    if not isinstance(table, dict):
        problems.append(ConfigProblem(path, "rules", "write [rules] as a table: <rule id> = [<control id>, …]",
                                      find_line(text, ("rules",))))
        return
    for rule_id, ids in table.items():
        key_line = find_line(text, ("rules", rule_id))
        where = f"rules.{rule_id}"
        if rule_id not in RULES:
            problems.append(ConfigProblem(path, where, f"'{rule_id}' is not a findings rule{_did_you_mean(rule_id, RULES)}",
                                          key_line))
            continue
        if not isinstance(ids, list):
            problems.append(ConfigProblem(path, where, "must be a list of control ids, e.g. [\"iso27001:A.5.15\"]", key_line))
            continue
        ok: list[str] = []
        bad = False
        for j, cid in enumerate(ids):
            if not isinstance(cid, str):
                problems.append(ConfigProblem(path, f"{where}[{j}]", f"must be a control id (text), not {type(cid).__name__}",
                                              key_line))
                bad = True
            elif cid not in controls:
                problems.append(ConfigProblem(path, f"{where}[{j}]", f"no control '{cid}' in the catalogue"
                                              f"{_did_you_mean(cid, controls)}", _item_line(text, key_line, cid)))
                bad = True
            elif cid in ok:
                problems.append(ConfigProblem(path, f"{where}[{j}]", f"'{cid}' is listed twice for this rule",
                                              _item_line(text, key_line, cid, nth=2)))
                bad = True
            else:
                ok.append(cid)
        if not bad:
            rules[rule_id] = tuple(ok)


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _item_line(text: str, key_line: int | None, value: str, *, nth: int = 1) -> int | None:
    """The line of the ``nth`` ``"value"`` at or after the rule's key (arrays may span lines)."""
    if key_line is None:
        return None
    needle = re.compile(r"""["']""" + re.escape(value) + r"""["']""")
    lines = text.splitlines()
    count = 0
    for n in range(key_line - 1, len(lines)):
        if n > key_line - 1 and re.match(r"^\s*(\[|[A-Za-z0-9_\"'-]+\s*=)", lines[n]):
            break  # the next key or table: the array has ended
        count += len(needle.findall(lines[n]))
        if count >= nth:
            return n + 1
    return key_line


__all__ = ["Catalogue", "Control", "OVERRIDE_FILE", "PACKAGED_FILE", "load_catalogue"]
