"""Time per Office conversion (issue 15 point 1): a .docx and a .xlsx made into a fax-ready PDF by
``documents.prepare`` through LibreOffice, against the same document already a PDF (no conversion)
in the same run.

Every conversion starts its own ``soffice`` with a fresh profile (that is how the daemon runs them:
one sandboxed process per document), so "cold" here is the first conversion of the run (program
files not yet in the page cache, unless an earlier run left them there) and "warm" the median of the
ones after it. Prints the figures and one JSON line per figure for ``run_all.py``; asserts nothing.

    python bench/office_convert.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faxbridge.documents import OfficeSettings, prepare
from faxbridge.models import InputFile
from tests.test_documents_office import make_docx, make_xlsx


def timed(path: Path, out: Path, office: OfficeSettings) -> tuple[float, int]:
    started = time.perf_counter()
    doc = prepare([InputFile(path=path, name=path.name)], out, max_pages=200, office=office)
    return time.perf_counter() - started, doc.pages


def main(runs: int) -> int:
    soffice = shutil.which("soffice")
    if soffice is None:
        print("office_convert: LibreOffice (soffice) is not installed; nothing measured")
        return 1
    office = OfficeSettings(soffice=soffice, timeout=300.0)
    with tempfile.TemporaryDirectory(prefix="faxbridge-bench-office-") as tmp:
        root = Path(tmp)
        sources = {"docx": make_docx(root / "letter.docx", pages=3), "xlsx": make_xlsx(root / "sheet.xlsx", rows=200)}
        for kind, source in sources.items():
            times: list[float] = []
            pages = 0
            for run in range(runs + 1):
                seconds, pages = timed(source, root / f"{kind}-{run}.pdf", office)
                times.append(seconds)
            pdf = root / f"{kind}-0.pdf"           # the converted result, prepared again as a PDF: the baseline
            baseline = statistics.median(timed(pdf, root / f"{kind}-pdf-{i}.pdf", office)[0] for i in range(runs))
            cold, warm = times[0], statistics.median(times[1:])
            print(f"{kind}: {pages} pages; first conversion {cold:.2f} s, then median {warm:.2f} s over {runs}; "
                  f"the same pages as a PDF {baseline * 1000:.0f} ms")
            print(json.dumps({"figure": f"office conversion, {kind} ({pages} pages), warm", "target": "report",
                              "measured_s": round(warm, 2), "cold_s": round(cold, 2),
                              "baseline_pdf_s": round(baseline, 3), "ratio": round(warm / baseline, 1)}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    sys.exit(main(parser.parse_args().runs))
