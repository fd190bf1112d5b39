"""A page of a fax as a PNG: the first for reply mail and copies (``notify.attach = "preview"``), any
for the web console.

Rendered with pypdfium2 (PDFium, the PDF engine of Chromium): it comes as a wheel from the package
registry with nothing to install on the system, renders in-process in a few tens of milliseconds,
and is under a permissive licence; Ghostscript would be a system package and a subprocess per page,
under the AGPL. The PDF is our own output, already checked at intake, but PDFium is native code
handling what a stranger sent: :func:`render_first_page` runs in the worker engine's processes
(under ``limits.job_cpu`` / ``job_memory``), never in the daemon, which is handed only the PNG.

The image is grey, ``PREVIEW_DPI`` dots per inch (a Letter page: 850 x 1100 pixels), its long side
at most ``MAX_SIDE`` pixels whatever the page size, so a preview stays a few tens of kB.
"""

from __future__ import annotations

import io
from pathlib import Path

PREVIEW_DPI = 100
MAX_SIDE = 1700          # pixels on the long side (a Legal page at 100 dpi is 1400)


def render_first_page(pdf: Path) -> bytes:
    """The first page of ``pdf`` as PNG bytes (grey, ``PREVIEW_DPI``, at most ``MAX_SIDE``)."""
    return render_page(pdf, 0)


def render_page(pdf: Path, index: int) -> bytes:
    """Page ``index`` (from 0) of ``pdf`` as PNG bytes; IndexError past the last page."""
    import pypdfium2  # native code: loaded only in the worker that renders

    document = pypdfium2.PdfDocument(str(pdf))
    try:
        if not 0 <= index < len(document):
            raise IndexError(f"the fax has {len(document)} pages, not {index + 1}")
        page = document[index]
        try:
            width, height = page.get_size()             # points (1/72 inch)
            scale = min(PREVIEW_DPI / 72, MAX_SIDE / max(width, height, 1.0))
            bitmap = page.render(scale=scale, grayscale=True)
            try:
                image = bitmap.to_pil()
                out = io.BytesIO()
                image.save(out, "PNG", optimize=True)
                return out.getvalue()
            finally:
                bitmap.close()
        finally:
            page.close()
    finally:
        document.close()
