"""DATA as a stream: dot-unstuffing on chunks cut anywhere, big messages spooled to a file and
mapped (not read) by the intake, base64 decoded a block at a time. Each streamed form must give
exactly what the whole-message form gives."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import mmap
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faxbridge.ingress.smtp import mime_slim
from faxbridge.ingress.smtp.protocol import SPOOL_OVER, _CommandReader, find_dot_line_end
from faxbridge.ingress.smtp.stream import _FEW_DOTS, DataSpool, Unstuffer, _unstuffed
from tests.ingress.mailkit import asend, config_of, listening, scanner, smtp_settings
from tests.support import big_pdf


def unstuff_whole(data: bytes) -> bytes:
    """RFC 5321 4.5.2 on the whole message (what the listener did before it streamed)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


def unstuff_chunks(chunks: list[bytes]) -> bytes:
    u = Unstuffer()
    return b"".join(u.feed(c) for c in chunks) + u.end()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"..", b"a", b"b c"]), max_size=40),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_unstuffing_chunks_cut_anywhere_equals_the_whole(pieces: list[bytes], points: list[int]) -> None:
    data = b"".join(pieces)
    assert unstuff_chunks(cut(data, points)) == unstuff_whole(data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"..", b"a", b"QUJD" * 20]),
                max_size=2 * _FEW_DOTS + 10))
def test_removing_stuffed_dots_equals_the_replace(pieces: list[bytes]) -> None:
    """Few dots (cut at each) or many (the replace): the same bytes as ``bytes.replace``."""
    data = b"".join(pieces)
    assert _unstuffed(data) == data.replace(b"\r\n.", b"\r\n")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b".\r\n", b"..", b"QUJD" * 5, b"-"]), max_size=40),
       st.integers(min_value=0, max_value=200))
def test_the_dot_search_finds_what_the_three_byte_find_finds(pieces: list[bytes], offset: int) -> None:
    buf = b"".join(pieces)
    assert find_dot_line_end(buf, offset) == buf.find(b".\r\n", offset)
    assert find_dot_line_end(bytearray(buf), offset) == bytearray(buf).find(b".\r\n", offset)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"-", b"--", b"\r", b"\n", b"\r\n", b"\r\n--", b"\n--", b"QUJD", b"."]), max_size=40),
       st.integers(min_value=0, max_value=60))
def test_the_dash_search_finds_what_the_four_byte_find_finds(pieces: list[bytes], start: int) -> None:
    raw = b"".join(pieces)
    assert mime_slim._next_dash_line(raw, start) == raw.find(b"\r\n--", start)


@pytest.mark.parametrize(("raw", "start", "found"), [
    (b"QUJD\n--b--", 0, -1), (b"QUJD\r-b\r\n-", 0, -1), (b"QUJD\r\n--b--", 0, 4), (b"QUJD\r\n--b--", 5, -1),
    (b"-\r\n--", 0, 1), (b"\r\n-x\r\n--", 0, 4), (b"--\r\n--", 2, 2), (b"\r\n--", 1, -1),
])
def test_the_dash_search_on_known_cases(raw: bytes, start: int, found: int) -> None:
    assert raw.find(b"\r\n--", start) == found
    assert mime_slim._next_dash_line(raw, start) == found


async def _chunks_read(reader_class: type[asyncio.StreamReader], parts: list[bytes], limit: int) -> list[object]:
    """What DATA's loop gets from a reader fed ``parts`` one at a time: each chunk up to ".\r\n",
    a limit overrun as ("over", consumed) followed by that many bytes read, the EOF's partial."""
    reader = reader_class(limit=limit)
    got: list[object] = []

    async def feed() -> None:
        for part in parts:
            reader.feed_data(part)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    while True:
        try:
            got.append(await reader.readuntil(b".\r\n"))
        except asyncio.LimitOverrunError as exc:
            got.append(("over", exc.consumed))
            got.append(await reader.read(exc.consumed))
        except asyncio.IncompleteReadError as exc:
            got.append(("eof", exc.partial))
            break
    await feeding
    return got


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n", b"QUJD" * 7]),
                max_size=50),
       st.lists(st.integers(min_value=0, max_value=2000), max_size=8), st.sampled_from([8, 16, 64, 1 << 16]))
def test_the_data_reader_gives_the_chunks_and_errors_asyncio_gives(pieces: list[bytes], points: list[int],
                                                                    limit: int) -> None:
    data = b"".join(pieces)
    parts = cut(data, points)
    ours = asyncio.run(_chunks_read(_CommandReader, parts, limit))
    theirs = asyncio.run(_chunks_read(asyncio.StreamReader, parts, limit))
    assert ours == theirs


def test_unstuffing_known_cases() -> None:
    assert unstuff_chunks([b"..leading dot\r\n", b"..another\r\n"]) == b".leading dot\r\n.another\r\n"
    assert unstuff_chunks([b"a\r", b"\n", b".", b".b\r\n"]) == b"a\r\n.b\r\n"
    assert unstuff_chunks([]) == b""
    assert unstuff_chunks([b"", b"."]) == b""


def test_the_spool_keeps_small_messages_in_memory_and_writes_big_ones(tmp_path: Path) -> None:
    small = DataSpool(tmp_path, spool_over=10)
    small.write(b"12345")
    assert small.result() == b"12345" and not list(tmp_path.iterdir())
    big = DataSpool(tmp_path, spool_over=10)
    for piece in (b"123456", b"789012", b"345"):
        big.write(piece)
    path = big.result()
    assert isinstance(path, Path) and path.read_bytes() == b"123456789012345"
    big.discard()
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("size", [100, mime_slim.BLOCK * 3 + 7])
@pytest.mark.parametrize("tail", [b"", b"QQ==", b"QUI="])
def test_blockwise_base64_decoding_equals_one_call(tmp_path: Path, size: int, tail: bytes) -> None:
    encoded = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n") + tail
    raw = b"xx" + encoded
    view = memoryview(raw)[2:]
    assert mime_slim._decode(raw, view, 2) == binascii.a2b_base64(encoded)


def test_blockwise_decoding_of_a_broken_body_raises_as_one_call_does() -> None:
    encoded = base64.encodebytes(os.urandom(mime_slim.BLOCK - 1)).replace(b"\n", b"\r\n") + b"Q"  # no padding
    with pytest.raises(binascii.Error):
        binascii.a2b_base64(encoded)
    with pytest.raises(binascii.Error):
        mime_slim._decode(encoded, memoryview(encoded), 0)


def _reference(encoded: bytes) -> bytes | type[binascii.Error]:
    try:
        return binascii.a2b_base64(encoded)
    except binascii.Error:
        return binascii.Error


def _ours(encoded: bytes) -> bytes | type[binascii.Error]:
    try:
        return mime_slim._decode(encoded, memoryview(encoded), 0)
    except binascii.Error:
        return binascii.Error


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300), st.lists(st.sampled_from([b"=", b"==", b"A", b"\r\n", b"\n", b"Zm9v", b"A="]),
                                         max_size=6),
       st.integers(min_value=0, max_value=400))
def test_the_fast_decoder_gives_what_binascii_gives_or_its_error(data: bytes, junk: list[bytes], at: int) -> None:
    """pybase64 takes the ordinary case; any body (bad padding, "=" inside, a stray quad) decodes to the
    same bytes as binascii, or fails as binascii fails."""
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    at %= len(encoded) + 1
    encoded = encoded[:at] + b"".join(junk) + encoded[at:]
    assert _ours(encoded) == _reference(encoded)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1000, max_value=mime_slim.BLOCK // 2), st.lists(
    st.tuples(st.integers(min_value=0), st.sampled_from([b"=", b"==", b"A", b"AB", b"ABC", b"\r\n", b"\n", b"\r"])),
    max_size=3))
def test_a_big_body_with_stray_characters_decodes_as_binascii_decodes_it(size: int,
                                                                         junk: list[tuple[int, bytes]]) -> None:
    """The same over the sizes pybase64 decodes with SIMD (whole blocks of 32 characters and more)."""
    encoded = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    for at, extra in junk:
        at %= len(encoded) + 1
        encoded = encoded[:at] + extra + encoded[at:]
    assert _ours(encoded) == _reference(encoded)


def test_an_ordinary_attachment_takes_the_fast_decoder() -> None:
    encoded = base64.encodebytes(os.urandom(200_000)).replace(b"\n", b"\r\n")
    assert mime_slim._fast(memoryview(encoded)) == binascii.a2b_base64(encoded)
    inside = encoded[:1000] + b"=" + encoded[1000:]
    assert mime_slim._fast(memoryview(inside)) is None                       # "=" inside: binascii decides
    whole = base64.encodebytes(os.urandom(199_998)).replace(b"\n", b"\r\n")   # whole quads, no padding
    odd = whole[:1000] + b"A" + whole[1000:]                                 # not whole quads: binascii's error
    assert mime_slim._fast(memoryview(odd)) is None and _reference(odd) is binascii.Error


def test_slimming_a_mapped_file_equals_slimming_its_bytes(tmp_path: Path) -> None:
    pdf = b"%PDF-1.4\n" + os.urandom(3 * mime_slim.BLOCK) + b"\n%%EOF\n"
    message = scanner(pdf, message_id=True)
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        slimmed_map, stash_map = mime_slim.slim(mapped)
        assert mime_slim.digest(mapped) == hashlib.sha256(message).hexdigest()
    slimmed, stash = mime_slim.slim(message)
    assert list(stash_map.values()) == list(stash.values()) == [pdf]
    assert len(slimmed_map) == len(slimmed) < 2000


async def test_a_big_mail_is_spooled_faxed_whole_and_its_spool_file_removed(tmp_path: Path) -> None:
    big = big_pdf(tmp_path / "big.pdf", SPOOL_OVER // 1_000_000 + 1).read_bytes()
    cfg = config_of(tmp_path, smtp_settings(tmp_path, max_message_size="20MB"))
    async with listening(cfg) as bench:
        answers = await asend(bench.address, "scanner@office.example", ["15555551212@fax.local"],
                              scanner(big, message_id=True))
        assert answers[-1].code == 250, answers[-1]
        job_id = answers[-1].text.removeprefix("2.0.0 Queued as job ")
        job = bench.store.get(job_id)
        assert job.pages == 2                                    # the cover page and the PDF's page
        assert bench.store.document_path(job_id).stat().st_size > SPOOL_OVER
        assert [p.name for p in bench.store.staging.iterdir()] == []   # the spool file is gone
