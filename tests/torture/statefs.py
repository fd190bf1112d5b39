"""The state folder on a file system of its own, for the disk-full and read-only torture tests.

Mounting needs root (CI runs as root): elsewhere the tests are skipped, never under CI=true.

- :func:`tmpfs`: a small tmpfs, to fill up (disk full; the space returns by deleting the filler).
- :func:`ext4_loop`: an ext4 image on a loop device mounted with ``errors=remount-ro``;
  :func:`break_fs` raises a real file system error in it (``/sys/fs/ext4/DEV/trigger_fs_error``),
  and the kernel turns it read-only under the running daemon, as it does after an I/O error.
  A local file system in that state is writable again only after an unmount and ``e2fsck``
  (:func:`repair`): ``mount -o remount,rw`` is refused, and so is ``remount,ro`` of a healthy
  file system while a process holds files open for writing (the daemon's SQLite files): EBUSY.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def _need(ok: bool, why: str) -> None:
    """Skip when the machine cannot do this, except under CI=true, where it must."""
    if not ok and os.environ.get("CI") != "true":
        pytest.skip(why)
    assert ok, why


@contextmanager
def tmpfs(mount: Path, size: str = "32m") -> Iterator[Path]:
    mount.mkdir()
    _need(os.geteuid() == 0, "mounting a tmpfs needs root (CI runs as root)")
    r = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount))
    _need(r.returncode == 0, f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))


@contextmanager
def ext4_loop(image: Path, mount: Path, size_mb: int = 64) -> Iterator[Path]:
    mount.mkdir()
    _need(os.geteuid() == 0, "mounting a loop device needs root (CI runs as root)")
    _need(shutil.which("mkfs.ext4") is not None and shutil.which("e2fsck") is not None, "no e2fsprogs")
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    r = _run("mkfs.ext4", "-q", "-F", str(image))
    assert r.returncode == 0, r.stderr
    r = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount))
    if r.returncode != 0:   # a container without loop devices: skipped even under CI, and says so
        pytest.skip(f"cannot mount an ext4 loop device here: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))  # -o loop: the loop device is freed with the mount


def _device(mount: Path) -> str:
    r = _run("findmnt", "-n", "-o", "SOURCE", str(mount))
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip()).name


def break_fs(mount: Path) -> None:
    """A real ext4 error: with errors=remount-ro the kernel makes the file system read-only."""
    trigger = Path("/sys/fs/ext4") / _device(mount) / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip(f"no {trigger} (kernel without ext4 error injection)")
    trigger.write_text("faxbridge read-only torture test\n")
    probe = mount / "probe"
    with pytest.raises(OSError) as err:
        probe.write_bytes(b"x")
    assert err.value.errno == 30, err.value  # EROFS: read-only file system


def repair(image: Path, mount: Path) -> None:
    """What an operator does: unmount, e2fsck, mount again (needs every file closed)."""
    r = _run("umount", str(mount))
    assert r.returncode == 0, r.stderr
    r = _run("e2fsck", "-f", "-y", str(image))
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: errors corrected
    r = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount))
    assert r.returncode == 0, r.stderr


def fill(folder: Path) -> Path:
    """Take every free byte of the file system under ``folder``."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def mail(port: int, message_id: str, pdf: bytes, subject: str, to: str = "15555551212@fax.local") -> tuple[int, bytes]:
    """One mail with a PDF over real SMTP; the DATA answer."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", to, subject
    msg["Message-ID"] = message_id
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="a.pdf")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("alice@example.com")
        assert client.rcpt(to)[0] == 250
        return client.data(msg.as_bytes())
