"""FolderIntake with real files, a real store and a fake clock: readiness, claims, controls, rejections."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from faxbridge.ingress.folder import claims
from faxbridge.models import JobState, Paper, Resolution, Source
from tests.ingress.folder_kit import SAMPLES, Folder, claim_of_job, open_folder, sha
from tests.support import make_pdf


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    yield from open_folder(tmp_path)


def drop_pdf(folder: Folder, name: str, pages: int = 1, text: str = "page") -> Path:
    return make_pdf(folder.root / name, pages=pages, text=text)


def test_a_pdf_is_taken_after_settle_byte_for_byte(folder: Folder) -> None:
    src = drop_pdf(folder, "15555551212_invoice.pdf", pages=2)
    digest, data = sha(src), src.read_bytes()
    folder.intake.sweep()
    assert folder.settle(1.9) == 0 and src.exists()
    assert folder.settle(0.1) == 1
    [job] = folder.jobs()
    assert (job.state, job.to, job.source, job.pages, job.document) == \
        (JobState.QUEUED, "+15555551212", Source.FOLDER, 2, "15555551212_invoice.pdf")
    assert job.doc_sha256 == digest and folder.store.document_path(job.id).read_bytes() == data
    assert not src.exists()
    claimed = folder.claim_of(job) / "15555551212_invoice.pdf"
    assert claimed.read_bytes() == data
    assert folder.store.find_duplicate(claims.dedup_key(claim_of_job(job)), job.created_at) == job
    assert folder.settle(5) == 0 and len(folder.jobs()) == 1


def test_a_change_restarts_the_settle_time(folder: Folder) -> None:
    src = drop_pdf(folder, "15555551212.pdf", text="first")
    folder.intake.sweep()
    assert folder.settle(1.5) == 0
    drop_pdf(folder, "15555551212.pdf", pages=3, text="second")      # rewritten in place
    os.utime(src, ns=(1, 1))                                         # and its mtime surely differs
    folder.intake.observe([src])                                     # as the observer reports it
    assert folder.settle(1.5) == 0
    assert folder.settle(0.6) == 1
    [job] = folder.jobs()
    assert job.pages == 3
    assert folder.settle(5) == 0


def test_temporary_and_system_names_are_never_taken(folder: Folder) -> None:
    names = [".15555551212.pdf", "~15555551212.pdf", "15555551212.pdf.tmp", "15555551212.pdf.part",
             "15555551212.pdf.crdownload", "15555551212.pdf.swp", ".DS_Store", "Thumbs.db", "desktop.ini",
             "._15555551212.pdf"]
    for name in names:
        drop_pdf(folder, name)
    drop_pdf(folder, "sub/15555551212.pdf")                          # not recursive: subfolders are not looked at
    folder.intake.sweep()
    assert folder.settle(60) == 0 and folder.jobs() == []
    assert sorted(p.name for p in folder.root.iterdir() if p.name != ".faxbridge") == sorted([*names, "sub"])


def test_renamed_within_the_folder_is_taken_once(folder: Folder) -> None:
    part = drop_pdf(folder, "15555551212.pdf.part")
    folder.intake.sweep()
    folder.settle(1.0)
    final = part.rename(folder.root / "15555551212.pdf")
    folder.intake.observe([part, final])
    assert folder.settle(1.0) == 0
    other = final.rename(folder.root / "15555551213.pdf")             # renamed again before it settled
    folder.intake.observe([final, other])
    assert folder.settle(2.0) == 1
    assert [j.to for j in folder.jobs()] == ["+15555551213"]
    assert folder.settle(5) == 0


def test_vanished_document_claims_nothing(folder: Folder) -> None:
    (folder.root / "letter.json").write_text('{"to": "15555551212"}')
    assert not claims.claim(folder.root, "01TESTCLAIM", Path("letter.pdf"),  # type: ignore[arg-type]
                            [Path("letter.json")])  # type: ignore[list-item]
    assert (folder.root / "letter.json").exists()
    assert list(folder.area.iterdir()) == []


def test_incomplete_pdf_waits_until_it_is_whole(folder: Folder) -> None:
    whole = make_pdf(folder.root.parent / "whole.pdf", pages=3).read_bytes()
    target = folder.root / "15555551212.pdf"
    target.write_bytes(whole[: len(whole) // 2])
    folder.intake.sweep()
    assert folder.settle(3) == 0 and target.exists()                 # settled, but cut off: waits
    assert folder.settle(2) == 0
    with target.open("ab") as fh:
        fh.write(whole[len(whole) // 2:])
    folder.intake.observe([target])
    assert folder.settle(2.5) == 1
    [job] = folder.jobs()
    assert job.doc_sha256 == sha(folder.claim_of(job) / "15555551212.pdf") and job.pages == 3


@pytest.mark.parametrize(("sample", "name", "reason"), [
    ("pdf/linearized-30-pages-letter.pdf", "15555551212.pdf",
     "15555551212.pdf is incomplete (the PDF is cut off before its end); send the whole file again"),
    ("tiff/fax-g4-3pages-400dpi-ghostscript.tiff", "15555551212.tiff",
     "15555551212.tiff is an incomplete or damaged TIFF image"),
    ("pdf/scan-epson-ccitt-5pages-letter-indirect-rotate.pdf", "15555551212.pdf",
     "15555551212.pdf is incomplete (the PDF is cut off before its end); send the whole file again"),
], ids=["pdf", "tiff", "scanned-pdf"])
def test_still_incomplete_after_the_bound_is_rejected(tmp_path: Path, sample: str, name: str, reason: str) -> None:
    for folder in open_folder(tmp_path, incomplete_after=20.0):
        data = (SAMPLES / sample).read_bytes()
        (folder.root / name).write_bytes(data[: len(data) * 2 // 3])
        folder.intake.sweep()
        assert folder.settle(2) == 0
        assert folder.settle(17) == 0                                # not retried forever, not given up early
        assert folder.settle(1.5) == 1
        [job] = folder.jobs()
        assert job.state is JobState.REJECTED and job.reason is not None
        assert job.reason.startswith(reason)
        assert (folder.claim_of(job) / name).exists() and not (folder.root / name).exists()
        assert [i.kind for i in folder.store.outbox_due(folder.clock.now(), ["sidecar"])] == ["sidecar"]


def test_a_pdf_that_makes_the_reader_seek_before_its_start_is_rejected_as_damaged(tmp_path: Path) -> None:
    """pypdf's OSError EINVAL is the file's fault (it was taken for our I/O trouble): the file waits
    like any damaged PDF (it may still be being written), is rejected after the bound, and a file
    dropped beside it meanwhile is faxed."""
    for folder in open_folder(tmp_path, incomplete_after=5.0):
        shutil.copy(SAMPLES / "pdf/damaged-offset-seeks-before-the-start.pdf", folder.root / "15555551212.pdf")
        drop_pdf(folder, "15555551213.pdf")
        folder.intake.sweep()
        assert folder.settle(2) == 1
        assert folder.settle(4.5) == 1
        by_number = {job.document: job for job in folder.jobs()}
        assert by_number["15555551213.pdf"].state is JobState.QUEUED
        damaged = by_number["15555551212.pdf"]
        assert damaged.state is JobState.REJECTED and damaged.reason == (
            "15555551212.pdf is damaged and cannot be read as a PDF; save or export it again and send it again")


def test_truncated_jpeg_waits(folder: Folder) -> None:
    from PIL import Image

    buf = folder.root.parent / "scan.jpg"
    Image.new("RGB", (800, 600), (200, 10, 10)).save(buf, "JPEG", quality=95)
    data = buf.read_bytes()
    (folder.root / "15555551212.jpg").write_bytes(data[: len(data) // 2])
    folder.intake.sweep()
    assert folder.settle(3) == 0
    (folder.root / "15555551212.jpg").write_bytes(data)
    folder.intake.observe([folder.root / "15555551212.jpg"])
    assert folder.settle(2.5) == 1 and folder.jobs()[0].state is JobState.QUEUED


def test_json_control_file_gives_number_and_options(folder: Folder) -> None:
    drop_pdf(folder, "letter.pdf")
    (folder.root / "letter.json").write_text(json.dumps({
        "to": "+1 555 555 1213", "header": "ACME Accounts", "resolution": "fine", "paper": "a4",
        "priority": "Low", "tags": {"ref": "INV-42"}}))
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert job.to == "+15555551213" and job.state is JobState.QUEUED
    o = job.options
    assert (o.header, o.resolution, o.paper, o.priority, dict(o.tags)) == \
        ("ACME Accounts", Resolution.FINE, Paper.A4, "Low", {"ref": "INV-42"})
    assert job.paper is Paper.A4          # the control file's paper is the one sent, whatever the pages' size
    assert sorted(p.name for p in folder.claim_of(job).iterdir()) == ["letter.json", "letter.pdf"]
    assert sorted(p.name for p in folder.root.iterdir()) == [".faxbridge"]


def test_control_file_marks_the_document_complete(folder: Folder) -> None:
    """With a control file, a document the content check would wait for is taken (and refused) at once."""
    (folder.root / "letter.pdf").write_bytes((SAMPLES / "pdf/header-only-not-a-pdf.pdf").read_bytes())
    (folder.root / "letter.json").write_text('{"to": "15555551212"}')
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert job.state is JobState.REJECTED and job.reason is not None and job.reason.startswith("letter.pdf is")


def test_control_file_waits_for_its_document(folder: Folder) -> None:
    (folder.root / "letter.json").write_text('{"to": "15555551214"}')
    folder.intake.sweep()
    assert folder.settle(30) == 0 and (folder.root / "letter.json").exists()
    doc = drop_pdf(folder, "letter.pdf")
    folder.intake.observe([doc])
    assert folder.settle(1) == 0
    assert folder.settle(1) == 1
    assert [j.to for j in folder.jobs()] == ["+15555551214"]


def test_legacy_fax_control_file(folder: Folder) -> None:
    drop_pdf(folder, "memo.pdf")
    (folder.root / "memo.fax").write_bytes(b"TO=555-555-1215\r\nHEADER=Legacy\r\nRESOLUTION=fine\r\nFROM=x\r\n")
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert (job.to, job.options.header, job.options.resolution) == ("+15555551215", "Legacy", Resolution.FINE)


def test_json_control_beats_fax_control_and_file_name(folder: Folder) -> None:
    drop_pdf(folder, "15555551212.pdf")
    (folder.root / "15555551212.fax").write_text("to=15555551213\n")
    (folder.root / "15555551212.json").write_text('{"to": "15555551214"}')
    folder.intake.sweep()
    assert folder.settle(2) == 1
    [job] = folder.jobs()
    assert job.to == "+15555551214"
    assert sorted(p.name for p in folder.claim_of(job).iterdir()) == \
        ["15555551212.fax", "15555551212.json", "15555551212.pdf"]


def _reject_case(folder: Folder, case: str) -> str:
    """Set up one kind of bad input; returns the document's name."""
    root = folder.root
    if case == "no-number":
        drop_pdf(folder, "letter.pdf")
        return "letter.pdf"
    if case == "unreadable-number":
        drop_pdf(folder, "letter.pdf")
        (root / "letter.json").write_text('{"to": "call me"}')
        return "letter.pdf"
    if case == "refused-number":
        drop_pdf(folder, "19005551212.pdf")
        return "19005551212.pdf"
    if case == "country":
        drop_pdf(folder, "+442079460958.pdf")
        return "+442079460958.pdf"
    if case == "malformed-json":
        drop_pdf(folder, "letter.pdf")
        (root / "letter.json").write_text('{"to": "15555551212",}')
        return "letter.pdf"
    if case == "not-a-document":
        (root / "15555551212.pdf").write_bytes(b"PK\x03\x04" + b"\x00" * 200 + b"word/document.xml")
        return "15555551212.pdf"
    if case == "encrypted":
        shutil.copy(SAMPLES / "pdf/encrypted-user-password-libreoffice-rc4-128.pdf", root / "15555551212.pdf")
        (root / "15555551212.json").write_text("{}")
        return "15555551212.pdf"
    if case == "too-big":
        (root / "15555551212.pdf").write_bytes(b"x" * 2_000_001)
        return "15555551212.pdf"
    if case == "symlink-out":
        secret = folder.root.parent / "secret.pdf"
        make_pdf(secret)
        (root / "15555551212.pdf").symlink_to(secret)
        return "15555551212.pdf"
    if case == "office-file":
        (root / "15555551212.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 200 + b"word/document.xml")
        return "15555551212.docx"
    if case == "symlink-control":
        drop_pdf(folder, "letter.pdf")
        secret = folder.root.parent / "secret.json"
        secret.write_text('{"to": "15555551212"}')
        (root / "letter.json").symlink_to(secret)
        return "letter.pdf"
    raise AssertionError(case)


REJECTIONS = {
    "no-number": 'no fax number for letter.pdf: name the file after the number (15555551212.pdf or '
                 '15555551212_letter.pdf), or put a letter.json control file with "to" beside it',
    "unreadable-number": "call me (from the control file): this is not a fax number: use digits, with an "
                         "optional leading + and the separators - . ( ) or space",
    "refused-number": "19005551212 (from the file name): numbers starting 1900 are blocked",
    "country": "+442079460958 (from the file name): calls to the United Kingdom (+44) are not allowed "
               "(numbers.allowed_countries: US, CA)",
    "malformed-json": "letter.json is not valid JSON: Expecting property name enclosed in double quotes: "
                      "line 1 column 22 (char 21)",
    "not-a-document": "15555551212.pdf is a Word document; ",
    "encrypted": "15555551212.pdf is password-protected; send it without a password",
    "too-big": "15555551212.pdf is 2.0 MB; the limit is 2.0 MB (watch.max_size)",
    "symlink-out": "15555551212.pdf is a symbolic link; faxbridge takes only regular files",
    "office-file": "15555551212.docx is a Word document, which this server cannot fax: save it as PDF (or TIFF, "
                   "PNG, JPEG, text) and drop that file instead",
    "symlink-control": "letter.json cannot be read (Too many levels of symbolic links); a control file must "
                       "be a regular file",
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_every_rejection_with_its_reason(tmp_path: Path, case: str) -> None:
    for folder in open_folder(tmp_path, max_size="2MB"):
        name = _reject_case(folder, case)
        folder.intake.sweep()
        assert folder.settle(2) == 1
        [job] = folder.jobs()
        assert job.state is JobState.REJECTED and job.final and job.source is Source.FOLDER
        assert job.reason is not None
        if case == "country":
            assert job.reason.startswith("+442079460958 (from the file name): calls to ")
            assert job.reason.endswith("are not allowed (numbers.allowed_countries: US, CA)")
        else:
            assert job.reason.startswith(REJECTIONS[case]), job.reason
        assert job.document == name and job.id == claim_of_job(job)
        claimed = folder.claim_of(job) / name
        assert os.path.lexists(claimed) and not os.path.lexists(folder.root / name)
        if case.startswith("symlink"):
            assert (folder.root.parent / ("secret.pdf" if case == "symlink-out" else "secret.json")).exists()
        [item] = folder.store.outbox_due(folder.clock.now(), ["sidecar"])
        assert item.job_id == job.id
        assert folder.settle(10) == 0 and len(folder.jobs()) == 1


def test_recursive_subfolder_names_the_number(tmp_path: Path) -> None:
    for folder in open_folder(tmp_path, recursive=True):
        make_pdf(folder.root / "15555551234" / "letter.pdf")
        make_pdf(folder.root / "15555551234" / "15555551235_own.pdf")
        make_pdf(folder.root / ".hidden" / "15555551236.pdf")
        make_pdf(folder.root / "deep" / "15555551237" / "memo.pdf")
        folder.intake.sweep()
        assert folder.settle(2) == 3
        assert sorted(j.to for j in folder.jobs()) == ["+15555551234", "+15555551235", "+15555551237"]
        assert (folder.root / ".hidden" / "15555551236.pdf").exists()
        by_to = {j.to: j for j in folder.jobs()}
        assert (folder.claim_of(by_to["+15555551237"]) / "deep/15555551237/memo.pdf").exists()


def test_recursive_folder_moved_in_is_swept(tmp_path: Path) -> None:
    for folder in open_folder(tmp_path, recursive=True):
        staging = folder.root.parent / "15555551238"
        make_pdf(staging / "a.pdf")
        make_pdf(staging / "b.pdf")
        moved = staging.rename(folder.root / "15555551238")
        folder.intake.observe([moved])                 # inotify reports the folder only, not its files
        assert folder.settle(2) == 2
        assert [j.to for j in folder.jobs()] == ["+15555551238"] * 2
