"""Bad-input fuzzing (hypothesis): control files, file names, mutated PDFs and MIME messages fed
through the real intake code. Every input ends accepted or refused with a reason: no crash, no
hang (each example has a deadline), no path outside the results folder.

The example counts are kept small so the suite stays fast (a first part of the torture work).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from faxbridge import intake as intake_numbers
from faxbridge.clock import SystemClock
from faxbridge.config import Config, load
from faxbridge.documents import prepare
from faxbridge.errors import DocumentError, InputError
from faxbridge.ingress.folder.control import ControlError, parse_control, result_name, safe_component
from faxbridge.ingress.smtp import mime
from faxbridge.ingress.smtp.commit import MailIntake
from faxbridge.ingress.smtp.data import mail_settings, stage_mail
from faxbridge.ingress.smtp.policy import Recipient
from faxbridge.models import InputFile
from faxbridge.providers.limits import header_limit
from faxbridge.store import Store, new_job_id, open_store
from faxbridge.workers import Engine
from tests.support import base_settings, write_config

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PDF_SEEDS = sorted((SAMPLES / "pdf").glob("*.pdf"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
control_objects = st.fixed_dictionaries({}, optional={
    "to": st.one_of(st.text(max_size=30), st.integers(), st.none()),
    "header": st.one_of(st.text(max_size=80), st.integers()),
    "resolution": st.sampled_from(["fine", "standard", "FINE", "", "x"]) | json_values,
    "paper": st.sampled_from(["letter", "legal", "a4", "A4", "tabloid"]) | json_values,
    "priority": st.sampled_from(["Normal", "Low", "high"]) | json_values,
    "tags": st.dictionaries(st.text(max_size=12), json_values, max_size=12) | json_values,
    "extra": json_values,
})


@settings(max_examples=150, deadline=500)
@given(data=st.one_of(st.binary(max_size=300), control_objects.map(lambda o: json.dumps(o).encode()),
                      st.text(max_size=200).map(str.encode)),
       suffix=st.sampled_from([".json", ".fax"]))
def test_control_files_parse_or_refuse_with_a_reason(data: bytes, suffix: str) -> None:
    name = "letter" + suffix
    try:
        control = parse_control(name, data)
    except ControlError as exc:
        assert exc.reason and name in exc.reason
        return
    assert control.to is None or isinstance(control.to, str)


@settings(max_examples=300, deadline=200)
@given(st.text(min_size=0, max_size=300))
def test_no_name_makes_a_result_escape_its_folder(name: str) -> None:
    for candidate in (result_name(name), result_name(name, 7), safe_component(name)):
        path = PurePosixPath(candidate)
        assert len(path.parts) == 1 and candidate not in ("", ".", "..")
        assert "\x00" not in candidate and "/" not in candidate
        assert len(candidate.encode()) <= 255


def _mutate(data: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, length, junk in cuts:
        pos %= max(len(out), 1)
        out[pos:pos + length] = junk
    return bytes(out)


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(PDF_SEEDS),
       cuts=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 64), st.binary(max_size=16)), max_size=4),
       truncate=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_mutated_pdfs_are_prepared_or_refused(tmp_path_factory: pytest.TempPathFactory, seed: Path,
                                              cuts: list[tuple[int, int, bytes]], truncate: float | None) -> None:
    data = _mutate(seed.read_bytes(), cuts)
    if truncate is not None:
        data = data[: int(len(data) * truncate)]
    folder = tmp_path_factory.mktemp("fuzz")
    src = folder / "in.pdf"
    src.write_bytes(data)
    out = folder / "out" / "fax.pdf"
    out.parent.mkdir()
    try:
        doc = prepare([InputFile("in.pdf", src)], out, max_pages=200)
    except DocumentError as exc:
        assert exc.reason and "in.pdf" in exc.reason
        assert not out.exists()
        assert [p.name for p in out.parent.iterdir()] == []  # a refusal leaves nothing behind
        return
    assert doc.pages >= 1 and out.exists() and doc.size == out.stat().st_size


def _message(parts: list[tuple[str, str, bytes, str | None]], subject: str, body: str | None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "15555551212@fax.local"
    msg["Subject"] = subject
    if body is not None:
        msg.set_content(body)
    for maintype, subtype, data, filename in parts:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=policy.SMTP)


PDF = (SAMPLES / "pdf" / "pdfa-1b-ghostscript.pdf").read_bytes()

part_strategy = st.tuples(
    st.sampled_from(["application", "image", "text", "message", "audio"]),
    st.sampled_from(["pdf", "octet-stream", "png", "jpeg", "tiff", "plain", "ms-tnef", "zip", "x-unknown"]),
    st.one_of(st.just(PDF), st.binary(max_size=400), st.just(b"%PDF-1.4\n%%EOF")),
    st.one_of(st.none(), st.text(max_size=40)),
)


@settings(max_examples=80, deadline=3000)
@given(parts=st.lists(part_strategy, max_size=4), subject=st.text(max_size=60),
       body=st.one_of(st.none(), st.text(max_size=300)), chop=st.one_of(st.none(), st.integers(0, 2000)))
def test_mime_messages_extract_or_refuse(parts: list[tuple[str, str, bytes, str | None]], subject: str,
                                         body: str | None, chop: int | None) -> None:
    try:
        raw = _message([p for p in parts if not (p[0] == "message" or (p[0] == "text" and p[1] != "plain"))],
                       subject.replace("\n", " ").replace("\r", " "), body)
    except (ValueError, TypeError):
        return  # the stdlib refused to build it: not an input a client could send
    if chop is not None:
        raw = raw[:chop]
    msg = mime.parse(raw)
    try:
        content = mime.extract(msg)
    except InputError as exc:
        assert exc.reason
        return
    assert isinstance(content, mime.MailContent)
    assert all(r.why and r.name in r.why for r in content.refusals), content.refusals
    assert all(s.why for s in content.skipped)
    assert all(p.kind in {"pdf", "jpeg", "png", "gif", "tiff", "text"} for p in content.parts)


@pytest.fixture(scope="module")
def mail_intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Store]]:
    root = tmp_path_factory.mktemp("fuzz-mail")
    cfg = load(write_config(root / "faxbridge.toml", base_settings(root)), {})
    store = Store(cfg.state_dir, "simulator")
    yield cfg, store
    store.close()


async def through_data(cfg: Config, raw: bytes) -> str:
    """DATA's two halves: the worker's (``stage_mail``, here in this process) and the daemon's commit."""
    rcpt = Recipient("15555551212@fax.local", intake_numbers.destination("15555551212", cfg.numbers))
    store = await open_store(cfg.state_dir, "simulator")
    try:
        plan = stage_mail(mail_settings(cfg, header_limit(cfg)), store.spool, "alice@example.com", [rcpt], raw, {},
                          [new_job_id()])
        if isinstance(plan, str):
            return plan
        intake = MailIntake(cfg, Engine(cfg), SystemClock(), header_limit=header_limit)   # no worker started
        return await intake.commit(store, "alice@example.com", plan)
    finally:
        await store.close()


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(part_strategy, max_size=3), body=st.one_of(st.none(), st.text(max_size=200)),
       chop=st.one_of(st.none(), st.integers(0, 3000)), crlf=st.booleans(), n=st.integers(0, 1 << 30))
def test_mime_messages_through_the_mail_intake_become_jobs_or_refusals(
        mail_intake: tuple[Config, Store], parts: list[tuple[str, str, bytes, str | None]],
        body: str | None, chop: int | None, crlf: bool, n: int) -> None:
    """What DATA does with a message (the fast parser, dedup, documents, the commit): every message
    ends in 250 with its jobs committed, or a 5xx refusal with words; never our trouble (451)."""
    cfg, store = mail_intake
    try:
        raw = _message([p for p in parts if not (p[0] == "message" or (p[0] == "text" and p[1] != "plain"))],
                       f"fuzz {n}", body)
    except (ValueError, TypeError):
        return
    raw = raw if crlf else raw.replace(b"\r\n", b"\n")
    raw = raw[:chop] if chop is not None else raw
    before = sum(store.counts().values())
    reply = asyncio.run(through_data(cfg, raw))
    made = sum(store.counts().values()) - before
    event(reply[:9])
    if reply.startswith("250 "):
        assert reply.startswith(("250 2.0.0 Queued as job ", "250 2.0.0 Duplicate of job ")), reply
        ids = reply.removeprefix("250 2.0.0 Queued as job ").split(";")[0].split(", ") if "Queued" in reply else []
        assert made == len(ids)
        assert all(store.document_path(job_id).is_file() and store.get(job_id).pages >= 1 for job_id in ids)
    else:
        assert reply.startswith(("554 5.6.0 ", "554 5.6.1 ", "554 5.3.4 ")) and len(reply) > 14, reply
        assert made == 0
