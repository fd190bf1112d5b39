"""Office documents (Word, Excel, PowerPoint, OpenDocument, RTF, HTML) made into PDF by LibreOffice.

CONTRACT §11: ``[documents] office = "auto"`` converts when ``soffice`` is on PATH (``"off"``: never;
or the path to ``soffice``), each conversion in its own process with ``convert_timeout``.

- Typed by the bytes, never the name (:func:`office_kind`): a ZIP container by its members
  (``word/``, ``xl/``, ``ppt/``; an OpenDocument by its ``mimetype`` member), an OLE2 compound file
  (Word/Excel/PowerPoint 97-2003) by its signature, RTF by ``{\\rtf``, HTML by its opening tag.
- Each conversion is one ``soffice --headless --convert-to pdf`` in a fresh temporary directory
  that holds its own LibreOffice profile (``-env:UserInstallation``), the input under a name we
  choose (``document.docx``: the sender's name never reaches a command line) and the output. The
  directory is removed after, whatever happened.
- Sandbox: a session of its own (the whole process group is killed at the timeout), a CPU-time
  limit of the timeout, the worker's memory cap inherited (``limits.job_memory``), no network
  where the kernel lets us make a network namespace (``unshare --net``, probed once; where it is
  refused, as under a unit that restricts namespaces, it is said once in the log and the
  conversion runs without it: LibreOffice is started with a fresh profile, which fetches nothing
  by itself), stdin closed, its output captured and only its last line logged.
- A file LibreOffice cannot convert, or that takes longer than ``convert_timeout``, is refused
  naming it (a DocumentError: the same on every retry).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from faxbridge.errors import DocumentError

log = structlog.get_logger("faxbridge.documents")

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HTML = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE | re.DOTALL)

# A ZIP member that says what the container is: OOXML by its part folders, OpenDocument by mimetype.
_OOXML = (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx"))
_ODF = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
    b"application/vnd.oasis.opendocument.graphics": "odg",
}
KINDS = ("docx", "xlsx", "pptx", "odt", "ods", "odp", "odg", "ole2", "rtf", "html")
# The extension the input is given (LibreOffice picks its import filter from the content, the name helps).
_SUFFIX = {"ole2": "doc", "html": "html"}
# HTML goes through Writer itself: Writer/Web's PDF export starts with a blank page (LibreOffice 7.4).
_FILTERS = {"html": ["--infilter=HTML (StarWriter)", "--convert-to", "pdf:writer_pdf_Export"]}

NO_CONVERTER = "this fax server cannot convert Office documents; send it as PDF"
_MAX_MEMBERS = 10_000       # a ZIP whose directory lists more is no Office file we convert


@dataclass(frozen=True, slots=True)
class OfficeSettings:
    """What a conversion needs, picklable (it crosses into the worker processes)."""

    soffice: str | None = None       # the converter's path; None: Office documents are refused
    timeout: float = 60.0            # documents.convert_timeout, per conversion

    @property
    def enabled(self) -> bool:
        return self.soffice is not None


def office_kind(head: bytes, source: Path | bytes) -> str | None:
    """What Office document ``source`` (a file, or its bytes) is ("docx", "odt", "ole2", "rtf",
    "html"...), or None.

    ``head`` is its first bytes (``_sniff.HEAD_SIZE``); a ZIP's central directory is read from the
    whole (its members are listed at the end).
    """
    if head.startswith(OLE2):
        return "ole2"
    if head.lstrip().startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(source)
    text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    if _HTML.match(text):
        return "html"
    return None


def _zip_kind(source: Path | bytes) -> str | None:
    try:
        with zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source)) as archive:
            infos = archive.infolist()
            if len(infos) > _MAX_MEMBERS:
                return None
            names = {info.filename for info in infos}
            if "mimetype" in names:
                with archive.open("mimetype") as fh:
                    kind = _ODF.get(fh.read(100).strip())
                if kind is not None:
                    return kind
            if "[Content_Types].xml" in names:
                for prefix, kind in _OOXML:
                    if any(name.startswith(prefix) for name in names):
                        return kind
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError, RuntimeError):
        return None
    return None


# --- the sandbox ------------------------------------------------------------------------------------------

_unshare: list[str] | None = None      # the prefix that gives a conversion no network, once probed
_probed = False


def _no_network_prefix() -> list[str]:
    """``unshare --net`` (as root) or ``unshare --net --map-root-user`` when the kernel allows it."""
    global _unshare, _probed
    if _probed:
        return _unshare or []
    _probed = True
    tool = shutil.which("unshare")
    candidates = ([[tool, "--net"], [tool, "--net", "--map-root-user"]] if os.geteuid() == 0
                  else [[tool, "--net", "--map-root-user"]]) if tool else []
    for prefix in candidates:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=10).returncode == 0:
                _unshare = prefix
                return prefix
    log.warning("documents.convert_network_open",
                why="no network namespace can be made here (unshare refused); Office conversions run "
                    "without one")
    return []


def _limits(pid: int, cpu_s: int) -> None:
    """The converter's CPU time and core dumps, set from outside at once (its children inherit them;
    no ``preexec_fn``, which is not safe in a process with threads)."""
    with contextlib.suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    with contextlib.suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))


def convert(source: Path, out: Path, *, kind: str, name: str, settings: OfficeSettings) -> None:
    """``source`` (an Office document of ``kind``) as a PDF at ``out``, or a DocumentError naming it."""
    if settings.soffice is None:
        raise DocumentError(f"{name} is an Office document; {NO_CONVERTER}", name=name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faxbridge-office-") as tmp:
        work = Path(tmp)
        (work / "profile").mkdir()
        (work / "out").mkdir()
        doc = work / f"document.{_SUFFIX.get(kind, kind)}"
        shutil.copyfile(source, doc)
        argv = [*_no_network_prefix(), settings.soffice, f"-env:UserInstallation={(work / 'profile').as_uri()}",
                "--headless", "--invisible", "--nologo", "--nodefault", "--norestore", "--nolockcheck",
                *_FILTERS.get(kind, ["--convert-to", "pdf"]), "--outdir", str(work / "out"), str(doc)]
        env = {"HOME": str(work), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "TMPDIR": str(work), "SAL_USE_VCLPLUGIN": "svp"}
        output = _run(argv, env=env, timeout=settings.timeout, name=name)
        made = work / "out" / "document.pdf"
        if not made.is_file() or made.stat().st_size == 0:
            last = output.strip().splitlines()[-1:] or [""]
            log.info("documents.convert_failed", name=name, kind=kind, output=last[0][:300])
            raise DocumentError(f"{name} could not be converted to PDF (LibreOffice could not read it); "
                                "send it as PDF", name=name)
        shutil.move(made, out)
    log.info("documents.converted", name=name, kind=kind, seconds=round(time.monotonic() - started, 2))


def _run(argv: list[str], *, env: dict[str, str], timeout: float, name: str) -> str:
    """The converter, in a session of its own; the whole group killed at ``timeout``."""
    cpu = max(1, math.ceil(timeout))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, cwd=env["HOME"], start_new_session=True)
    except OSError as exc:
        log.error("documents.converter_missing", argv0=argv[0], error=str(exc))
        raise DocumentError(f"{name} is an Office document; {NO_CONVERTER}", name=name) from exc
    _limits(proc.pid, cpu)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise DocumentError(f"{name} could not be converted to PDF in {_seconds(timeout)} "
                            "(documents.convert_timeout); send it as PDF", name=name) from None
    except BaseException:        # a job over its cap, the worker stopping: the converter goes too
        _kill_group(proc)
        raise
    finally:
        _kill_group(proc, quiet=True)   # anything it left behind in its group
    if proc.returncode and proc.returncode < 0 and -proc.returncode in (signal.SIGXCPU, signal.SIGKILL):
        raise DocumentError(f"{name} could not be converted to PDF in {_seconds(timeout)} "
                            "(documents.convert_timeout); send it as PDF", name=name)
    return io.TextIOWrapper(io.BytesIO(out or b""), errors="replace").read()


def _kill_group(proc: subprocess.Popen[bytes], *, quiet: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if not quiet or proc.returncode is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"
