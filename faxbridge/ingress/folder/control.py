"""Folder intake, the pure part: which names count, control files, and where a file is faxed to.

No I/O here: names and bytes in, values out (contract section 4).

- Ignored names (never taken, never touched): temporary files (a name starting with ``.`` or ``~``,
  ending with ``.tmp``, ``.part``, ``.crdownload``, ``.swp``) and the litter of desktop systems
  (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._*``). Folders starting with ``.``
  are not entered (faxbridge keeps its processing area in ``.faxbridge``).
- Control files: ``NAME.json`` (the contract's keys) and the legacy ``NAME.fax`` (``key=value``
  lines: ``to=``, ``header=``, ``resolution=``; other keys that old systems write are ignored).
  NAME is the document's name without its last extension (``letter.pdf`` → ``letter.json``). A
  ``.json`` or ``.fax`` file is always a control file, never a document.
- The destination, first match wins: the control file's ``to``; ``watch.pattern`` on the file's
  name (group ``number``); with ``recursive``, the name of the subfolder the file sits in.
- Result names: ``letter.pdf`` → ``letter.result.json``, made safe so that no name can leave the
  results folder (separators and NUL replaced, ``.``/``..`` refused, length capped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from faxbridge.errors import InputError
from faxbridge.models import FaxOptions, Paper, Resolution

TEMP_PREFIXES = (".", "~")
TEMP_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp")
SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
CONTROL_SUFFIXES = (".json", ".fax")      # in order of precedence
RESULT_SUFFIX = ".result.json"
MAX_HEADER = 50
MAX_NAME_BYTES = 255
MAX_CONTROL_SIZE = 64 * 1024     # a larger control file is refused before it is parsed
MAX_NESTING = 16                 # the contract's keys are flat: deeper JSON is refused unparsed
MAX_NUMBER_DIGITS = 30           # no key takes a longer number
MAX_TAGS = 32
MAX_TO_CHARS = 64
MAX_TAG_CHARS = 256

_JSON_KEYS = ("to", "header", "resolution", "paper", "priority", "tags", "send_at")
_FAX_RESOLUTIONS = {"fine": Resolution.FINE, "high": Resolution.FINE, "standard": Resolution.STANDARD,
                    "normal": Resolution.STANDARD, "low": Resolution.STANDARD}


class ControlError(InputError):
    """A control file that cannot be used; ``reason`` names the file and what is wrong."""


@dataclass(frozen=True)
class Control:
    """What a control file asks for. ``to`` None: the file gives no number."""

    to: str | None = None
    header: str | None = None
    resolution: Resolution = Resolution.STANDARD
    paper: Paper | None = None
    priority: str = "Normal"
    tags: Mapping[str, str] = field(default_factory=dict)
    send_at: str | None = None       # as written: read when the job is made (faxbridge.options.send_at)
    name: str = field(default="", compare=False)   # the control file's name, for the words of a refusal

    def options(self) -> FaxOptions:
        return FaxOptions(header=self.header, resolution=self.resolution, paper=self.paper,
                          priority=self.priority, tags=dict(self.tags))


# --- names --------------------------------------------------------------------------------------------


def is_ignored(name: str) -> bool:
    """A temporary or system file (or folder): never taken."""
    lower = name.lower()
    return (not name or name.startswith(TEMP_PREFIXES) or lower.endswith(TEMP_SUFFIXES)
            or lower in SYSTEM_NAMES)


def is_control(name: str) -> bool:
    return name.lower().endswith(CONTROL_SUFFIXES)


def stem(name: str) -> str:
    """The name without its last extension: ``letter.pdf`` → ``letter``; ``letter`` → ``letter``."""
    base, dot, _ext = name.rpartition(".")
    return base if dot and base else name


def control_names(document: str) -> tuple[str, ...]:
    """The control files that may go with a document, in order of precedence."""
    return tuple(stem(document) + suffix for suffix in CONTROL_SUFFIXES)


def relevant(rel: PurePosixPath, recursive: bool) -> bool:
    """Is this path (relative to the watched folder) one we look at at all?"""
    parts = rel.parts
    if not parts or any(is_ignored(p) for p in parts):
        return False
    return recursive or len(parts) == 1


# --- control files ------------------------------------------------------------------------------------


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _choice(name: str, key: str, value: Any, choices: Mapping[str, Any]) -> Any:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise ControlError(f"{name}: {key} must be {allowed}, not {json.dumps(value)}")
    return choices[value.strip().lower()]


def _header(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ControlError(f"{name}: header must be a string")
    if len(value) > MAX_HEADER:
        raise ControlError(f"{name}: header has {len(value)} characters; at most {MAX_HEADER}")
    return value


def _to(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ControlError(f"{name}: to must be a fax number in a string")
    if len(value) > MAX_TO_CHARS:
        raise ControlError(f"{name}: to has {len(value):,} characters; a fax number has at most {MAX_TO_CHARS}")
    return value.strip() or None


def _send_at(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ControlError(f"{name}: send_at must be a time in a string, such as \"2026-12-03T09:00:00+01:00\" "
                           "or \"2026-12-03 09:00\"")
    return value


def _tags(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ControlError(f"{name}: tags must be an object of names and values")
    if len(value) > MAX_TAGS:
        raise ControlError(f"{name}: tags has {len(value)} names; at most {MAX_TAGS}")
    tags: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > MAX_TAG_CHARS:
            raise ControlError(f"{name}: a tag name has {len(key):,} characters; at most {MAX_TAG_CHARS}")
        if isinstance(item, dict | list) or item is None:
            raise ControlError(f"{name}: tags.{key} must be a string or a number")
        text = str(item).lower() if isinstance(item, bool) else str(item)
        if len(text) > MAX_TAG_CHARS:
            raise ControlError(f"{name}: tags.{key} has {len(text):,} characters; at most {MAX_TAG_CHARS}")
        tags[str(key)] = text
    return tags


def _nesting(text: str) -> int:
    """How deep the JSON's arrays and objects nest (strings skipped): counted, not parsed."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _bounded_int(name: str) -> Any:
    def parse(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
            raise ControlError(f"{name} holds a number of {len(digits):,} digits; "
                               f"at most {MAX_NUMBER_DIGITS}")
        return int(digits)
    return parse


def _no_constant(name: str) -> Any:
    def parse(word: str) -> Any:
        raise ControlError(f"{name} is not valid JSON: {word} is not a JSON value")
    return parse


def parse_json_control(name: str, data: bytes) -> Control:
    """A ``NAME.json`` control file, or ControlError naming the file and the JSON error. Bounded
    before it is parsed: its size, how deep it nests, how long its numbers are."""
    if len(data) > MAX_CONTROL_SIZE:
        raise ControlError(f"{name} is larger than {MAX_CONTROL_SIZE // 1024} KB")
    text = _text(data)
    if _nesting(text) > MAX_NESTING:
        raise ControlError(f"{name} nests arrays or objects more than {MAX_NESTING} deep")
    try:
        doc = json.loads(text, parse_int=_bounded_int(name), parse_constant=_no_constant(name))
    except json.JSONDecodeError as exc:
        raise ControlError(f"{name} is not valid JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:    # a float too long, or anything else json refuses
        raise ControlError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ControlError(f"{name} must hold a JSON object, like {{\"to\": \"+15555551212\"}}")
    unknown = sorted(set(doc) - set(_JSON_KEYS))
    if unknown:
        raise ControlError(f"{name}: unknown key {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(_JSON_KEYS)})")
    resolutions = {r.value: r for r in Resolution}
    papers = {p.value: p for p in Paper}
    return Control(
        to=_to(name, doc.get("to")),
        header=_header(name, doc.get("header")),
        resolution=_choice(name, "resolution", doc["resolution"], resolutions) if "resolution" in doc
        else Resolution.STANDARD,
        paper=_choice(name, "paper", doc["paper"], papers) if doc.get("paper") is not None else None,
        priority=_choice(name, "priority", doc["priority"], {"normal": "Normal", "low": "Low"})
        if "priority" in doc else "Normal",
        tags=_tags(name, doc.get("tags")),
        send_at=_send_at(name, doc.get("send_at")), name=name,
    )


def parse_fax_control(name: str, data: bytes) -> Control:
    """A legacy ``NAME.fax`` file: ``key=value`` lines; blank lines and ``#``/``;`` comments skipped."""
    if len(data) > MAX_CONTROL_SIZE:
        raise ControlError(f"{name} is larger than {MAX_CONTROL_SIZE // 1024} KB")
    values: dict[str, str] = {}
    for number, line in enumerate(_text(data).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ControlError(f"{name}: line {number} is not key=value: {line[:60]!r}")
        values[key.strip().lower()] = value.strip()
    resolution = Resolution.STANDARD
    if values.get("resolution"):
        resolution = _choice(name, "resolution", values["resolution"], _FAX_RESOLUTIONS)
    return Control(to=_to(name, values.get("to")) or None, header=_header(name, values.get("header")),
                   resolution=resolution, send_at=_send_at(name, values.get("send_at")), name=name)


def parse_control(name: str, data: bytes) -> Control:
    """Either kind of control file; whatever it holds, a :class:`Control` or ControlError."""
    try:
        if name.lower().endswith(".json"):
            return parse_json_control(name, data)
        return parse_fax_control(name, data)
    except ControlError:
        raise
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:   # never past this point
        raise ControlError(f"{name} cannot be used: {type(exc).__name__}") from exc


# --- destination and result names -------------------------------------------------------------------


def choose_number(rel: PurePosixPath, control: Control | None, pattern: re.Pattern[str],
                  recursive: bool) -> tuple[str, str] | None:
    """(number as written, where it came from) for a document at ``rel``, or None when nothing names one."""
    if control is not None and control.to:
        return control.to, "control file"
    match = pattern.match(rel.name)
    if match and match.group("number"):
        return match.group("number"), "file name"
    if recursive and len(rel.parts) > 1:
        return rel.parts[-2], "folder name"
    return None


FAXABLE = frozenset({"pdf", "tif", "tiff", "png", "jpg", "jpeg", "gif", "txt"})
# Office documents: converted by LibreOffice (documents.office), or refused by their content saying
# the server cannot convert them; either way their name alone is not why they are refused.
KINDS = {"doc": "a Word document", "docx": "a Word document", "xls": "an Excel workbook",
         "xlsx": "an Excel workbook", "ppt": "a PowerPoint file", "pptx": "a PowerPoint file",
         "odt": "an OpenDocument text", "ods": "an OpenDocument spreadsheet", "odp": "an OpenDocument presentation",
         "rtf": "an RTF document", "htm": "an HTML page", "html": "an HTML page"}


def no_number_reason(name: str, *, office: bool = False) -> str:
    """Why a document got no number; a file of a type that is not faxed is told so, not "no number".
    ``office``: Office documents are converted here (``documents.office``)."""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext in KINDS and office:
        return (f"no fax number for {name}: {KINDS[ext]} is converted and faxed, but watch.pattern does not "
                f"take .{ext} names; put a {stem(name)}.json control file with \"to\" beside it, or add {ext} "
                "to the extensions in watch.pattern")
    if ext and ext not in FAXABLE:
        what = KINDS.get(ext, f"a .{ext} file")
        return (f"{name} is {what}, which this server cannot fax: save it as PDF (or TIFF, PNG, JPEG, "
                "text) and drop that file instead")
    return (f"no fax number for {name}: name the file after the number (15555551212.pdf or "
            f"15555551212_letter.pdf), or put a {stem(name)}.json control file with \"to\" beside it")


def safe_component(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """One path component made from any text: no separators, no NUL, not ``.``/``..``, ≤ limit bytes."""
    clean = re.sub(r"[/\\\x00-\x1f]", "_", name).strip()
    if clean in ("", ".", ".."):
        clean = "_" + clean.replace(".", "_")
    raw = clean.encode("utf-8")
    if len(raw) > limit:
        clean = raw[:limit].decode("utf-8", "ignore")
    return clean


def result_name(document: str, n: int = 1) -> str:
    """``letter.pdf`` → ``letter.result.json`` (n > 1: ``letter-2.result.json``)."""
    base = stem(safe_component(document)).lstrip(".") or "_"       # never a hidden file
    base += f"-{n}" if n > 1 else ""
    return safe_component(base, MAX_NAME_BYTES - len(RESULT_SUFFIX)) + RESULT_SUFFIX


def numbered(name: str, n: int) -> str:
    """``letter.pdf`` with n > 1 → ``letter-2.pdf``: a suffix before the extension."""
    if n <= 1:
        return safe_component(name)
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        base, ext = name, ""
    tail = f"-{n}" + (f".{ext}" if ext else "")
    return safe_component(base, MAX_NAME_BYTES - len(tail.encode())) + tail
