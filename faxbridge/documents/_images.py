"""JPEG, PNG, GIF and TIFF to PDF pages: img2pdf, or Pillow re-encoding where img2pdf cannot.

GIF and TIFF give one page per frame; JPEG and PNG one page (the first picture of an MPO or APNG).
Every frame is decoded once with Pillow before conversion: img2pdf copies JPEG and CCITT data
as they are, so a truncated file would otherwise pass unnoticed into the fax.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, ImageSequence

from faxbridge.documents._common import PAPER_SIZES, translated
from faxbridge.errors import DocumentError
from faxbridge.models import Paper

_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "tiff": "TIFF"}
_MULTI_FRAME = frozenset({"gif", "tiff"})
_DIRECT_MODES = frozenset({"1", "L", "RGB", "CMYK", "P"})
_MAX_IFDS = 100_000
_WHITE = (255, 255, 255)


def max_pixels() -> int:
    return Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's default when someone switched it off


def damaged(name: str, kind: str) -> str:
    return f"{name} is a damaged or incomplete {kind.upper()} image and cannot be read"


@contextlib.contextmanager
def _guarded(name: str, kind: str) -> Iterator[None]:
    """Pillow/img2pdf calls: decompression bombs refused on purpose, other warnings silenced.

    Pillow only warns (DecompressionBombWarning) between MAX_IMAGE_PIXELS and twice that; we make it
    an error here, whatever the process's warning filters say. Pillow's other warnings (odd EXIF, TIFF
    metadata) are not reasons to refuse. warnings.catch_warnings is process-global, so two threads
    converting at once share these filters; both want the same ones.
    """
    too_big = f"{name} is too large an image to fax (more than {max_pixels():,} pixels)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with translated(damaged(name, kind), name=name):
                yield
        except DocumentError as exc:
            if isinstance(exc.__cause__, Image.DecompressionBombWarning | Image.DecompressionBombError):
                raise DocumentError(too_big, name=name) from exc.__cause__
            raise


def _tiff_pages(fh: BinaryIO, *, name: str) -> int:
    """Pages of a TIFF by walking its chain of IFDs; a chain that loops back is a damaged file."""
    header = fh.read(8)
    order = "<" if header[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", header[4:8])
    seen: set[int] = set()
    while offset:
        if offset in seen:
            raise DocumentError(f"{name} is a damaged TIFF file (its page list loops)", name=name)
        if len(seen) >= _MAX_IFDS:
            raise DocumentError(f"{name} has more than {_MAX_IFDS} pages", name=name, too_many_pages=True)
        seen.add(offset)
        fh.seek(offset)
        raw = fh.read(2)
        if len(raw) == 2:
            fh.seek(offset + 2 + 12 * struct.unpack(order + "H", raw)[0])
            raw = fh.read(4)
        if len(raw) != 4:
            raise DocumentError(damaged(name, "tiff"), name=name)
        (offset,) = struct.unpack(order + "I", raw)
    return len(seen)


def count_pages(path: Path, *, name: str, kind: str) -> int:
    """Pages the image will make, checking its size against the decompression-bomb limit."""
    if kind == "tiff":
        with path.open("rb") as fh:
            pages = _tiff_pages(fh, name=name)
        if pages == 0:
            raise DocumentError(f"{name} has no pages", name=name)
        return pages
    with _guarded(name, kind), Image.open(path, formats=[_PILLOW_FORMATS[kind]]) as image:
        return getattr(image, "n_frames", 1) if kind in _MULTI_FRAME else 1


def _frames(image: Image.Image, kind: str) -> Iterator[Image.Image]:
    if kind in _MULTI_FRAME:
        yield from ImageSequence.Iterator(image)
    else:
        yield image


def _flatten(frame: Image.Image) -> Image.Image:
    """A frame in a mode every PDF reader and fax renderer handles: 1-bit, grayscale or RGB on white."""
    if frame.mode in ("1", "L", "RGB"):
        return frame.copy()
    if frame.mode.startswith("I") or frame.mode == "F":
        # 16/32-bit samples: scale down to 8 bits rather than clip everything above 255 to white.
        high = frame.getextrema()[1]
        scale = 255 / float(high) if isinstance(high, int | float) and high > 255 else 1.0
        return frame.convert("F").point(lambda value: value * scale).convert("L")
    rgba = frame.convert("RGBA")
    flat = Image.new("RGB", rgba.size, _WHITE)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _encode(frame: Image.Image) -> bytes:
    buffer = io.BytesIO()
    if frame.mode == "1":
        frame.save(buffer, "PNG", optimize=True)
    else:
        frame.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_to_pdf(path: Path, out_path: Path, *, name: str, kind: str, paper: Paper) -> None:
    """Decode every frame (refusing damaged ones), then write one PDF page per frame fitted onto paper."""
    import img2pdf  # (and pikepdf with it) loaded when an image is first converted: the daemon starts without

    layout = img2pdf.get_layout_fun(PAPER_SIZES[paper], fit=img2pdf.FitMode.into, auto_orient=True)
    options = {"layout_fun": layout, "rotation": img2pdf.Rotation.ifvalid}
    direct = True
    with _guarded(name, kind), Image.open(path, formats=[_PILLOW_FORMATS[kind]]) as image:
        for frame in _frames(image, kind):
            if frame.width * frame.height > max_pixels():
                too_big = f"{name} is too large an image to fax ({frame.width}×{frame.height} pixels)"
                raise DocumentError(too_big, name=name)
            frame.load()
            has_alpha = "A" in frame.mode or "transparency" in frame.info
            direct = direct and frame.mode in _DIRECT_MODES and not has_alpha
        if kind not in _MULTI_FRAME and getattr(image, "n_frames", 1) > 1:
            direct = False  # MPO or APNG: img2pdf would make a page of every picture
    if direct:
        try:
            with _guarded(name, kind), out_path.open("wb") as fh:
                img2pdf.convert(str(path), outputstream=fh, **options)
            return
        except DocumentError:
            pass  # img2pdf refused it (odd TIFF tags, unusual JPEG): re-encode with Pillow below
    with _guarded(name, kind), Image.open(path, formats=[_PILLOW_FORMATS[kind]]) as image:
        encoded = [_encode(_flatten(ImageOps.exif_transpose(frame))) for frame in _frames(image, kind)]
        with out_path.open("wb") as fh:
            img2pdf.convert(encoded, outputstream=fh, **options)
