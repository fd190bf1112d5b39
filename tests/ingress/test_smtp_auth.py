"""AUTH PLAIN/LOGIN against users_file (bcrypt and argon2), STARTTLS with a certificate made here,
AUTH refused in plain text except from loopback, and no password in any log line."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import smtplib
import socket
from pathlib import Path

import bcrypt
import pytest
import structlog
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from faxbridge.errors import ConfigError
from faxbridge.ingress.smtp.auth import check_password, load_users
from tests.ingress import mailkit
from tests.ingress.mailkit import config_of, listening, smtp_settings
from tests.support import secret

PASSWORD = secret("correct horse battery staple")  # the suite fails if it is ever logged


def make_cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fax.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("fax.local"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def users_file(folder: Path) -> Path:
    path = folder / "users"
    bcrypt_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    argon_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    path.write_text(f"# faxbridge users\n\nscanner:{bcrypt_hash}\nalice:{argon_hash}\n")
    return path


def auth_settings(tmp: Path, **smtp: object) -> dict[str, object]:
    cert, key = make_cert(tmp)
    return smtp_settings(tmp, require_auth=True, users_file=str(users_file(tmp)), tls_cert=str(cert),
                         tls_key=str(key), **smtp)


def test_users_file_and_hashes(tmp_path: Path) -> None:
    users = load_users(users_file(tmp_path))
    assert set(users) == {"scanner", "alice"}
    assert check_password(users["scanner"], PASSWORD.encode())
    assert check_password(users["alice"], PASSWORD.encode())
    assert not check_password(users["alice"], b"wrong")
    assert not check_password(users["scanner"], b"wrong")
    bad = tmp_path / "bad"
    bad.write_text("scanner:plaintext-password\n")
    with pytest.raises(ConfigError) as caught:
        load_users(bad)
    assert caught.value.problems == [f"smtp.users_file: {bad} line 1: expected user:bcrypt-or-argon2-hash"]


async def test_auth_over_starttls_then_mail(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, auth_settings(tmp_path))
    async with listening(cfg) as bench:
        def session() -> dict[str, object]:
            out: dict[str, object] = {}
            with smtplib.SMTP(*bench.address, local_hostname="client.test", timeout=30) as client:
                client.ehlo()
                out["plain_features"] = sorted(client.esmtp_features)
                out["mail_before_auth"] = client.mail("scanner@office.example")
                client.rset()
                client.starttls(context=mailkit.client_tls_context())
                client.ehlo()
                out["tls_features"] = sorted(client.esmtp_features)
                try:
                    client.login("scanner", "wrong password")
                except smtplib.SMTPAuthenticationError as exc:
                    out["bad_login"] = (exc.smtp_code, exc.smtp_error)
                client.user, client.password = "scanner", PASSWORD
                out["login"] = client.auth("LOGIN", client.auth_login)   # LOGIN explicitly
                out["send"] = client.sendmail("scanner@office.example", ["15555551212@fax.local"],
                                              mailkit.scanner(mailkit.pdf_bytes(tmp_path)))
            with smtplib.SMTP(*bench.address, local_hostname="client.test", timeout=30) as client:
                client.starttls(context=mailkit.client_tls_context())
                client.ehlo()
                client.user, client.password = "alice", PASSWORD
                out["plain_login"] = client.auth("PLAIN", client.auth_plain)   # argon2 hash
            return out
        out = await asyncio.to_thread(session)
        jobs = bench.store.jobs()
    # on loopback AUTH is offered in plain text too; STARTTLS is offered until used
    assert "starttls" in out["plain_features"] and "auth" in out["plain_features"]
    assert "starttls" not in out["tls_features"] and "auth" in out["tls_features"]
    assert out["mail_before_auth"] == (530, b"5.7.0 Authentication required")
    assert out["bad_login"] == (535, b"5.7.8 Authentication credentials invalid")
    assert out["login"] == (235, b"2.7.0 Authentication successful")
    assert out["plain_login"] == (235, b"2.7.0 Authentication successful")
    assert out["send"] == {}
    assert len(jobs) == 1 and jobs[0].meta["auth_user"] == "scanner"


def outward_address() -> str | None:
    """This machine's address on a non-loopback interface (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
        except OSError:
            return None
        host = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(host).is_loopback else host


async def test_auth_refused_in_plain_text_from_another_host(tmp_path: Path) -> None:
    host = outward_address()
    if host is None:
        pytest.skip("no non-loopback address on this machine")
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    settings = auth_settings(tmp_path, allowed_clients=[f"{host}/32"])
    settings["smtp"]["listen"] = f"{host}:{port}"  # type: ignore[index]
    cfg = config_of(tmp_path, settings)
    async with listening(cfg) as bench:
        def session() -> dict[str, object]:
            out: dict[str, object] = {}
            with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
                client.ehlo()
                out["features"] = sorted(client.esmtp_features)
                out["auth"] = client.docmd("AUTH", "PLAIN AHNjYW5uZXIAd3Jvbmc=")
                client.starttls(context=mailkit.client_tls_context())
                client.ehlo()
                out["tls_features"] = sorted(client.esmtp_features)
                out["login"] = client.login("scanner", PASSWORD)
            return out
        out = await asyncio.to_thread(session)
        assert bench.listener.address == (host, port)
    assert "auth" not in out["features"] and "starttls" in out["features"]
    assert out["auth"] == (538, b"5.7.11 Encryption required for requested authentication mechanism")
    assert "auth" in out["tls_features"]
    assert out["login"] == (235, b"2.7.0 Authentication successful")


async def test_no_password_in_logs(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, auth_settings(tmp_path))
    async with listening(cfg) as bench:
        with structlog.testing.capture_logs() as logs:
            def session() -> None:
                with smtplib.SMTP(*bench.address, local_hostname="client.test", timeout=30) as client:
                    client.starttls(context=mailkit.client_tls_context())
                    client.ehlo()
                    with pytest.raises(smtplib.SMTPAuthenticationError):
                        client.login("scanner", "not-the-" + PASSWORD)
                    client.login("scanner", PASSWORD)
            await asyncio.to_thread(session)
    auth_events = [e for e in logs if e["event"] == "smtp.auth"]
    # smtplib tries PLAIN, then LOGIN, before it gives up on the wrong password
    assert [(e["user"], e["ok"]) for e in auth_events] == [("scanner", False), ("scanner", False), ("scanner", True)]
    assert PASSWORD not in repr(logs)
