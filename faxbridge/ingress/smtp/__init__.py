"""The SMTP pipeline: a client's mail to one durable job per fax recipient, and the reply it hears.

::

    connect ── protocol.FaxSMTP (aiosmtpd on the daemon's loop; limits: session caps, read timeout)
       │         client address checked (policy), answered at MAIL
    EHLO / STARTTLS / AUTH ── auth (PLAIN, LOGIN; throttled: limits.AuthThrottle)
       │
    MAIL FROM ── policy: syntax, allowed_senders, the login's senders
       │
    RCPT TO ── policy: the number (numbers policy), domains; the hourly limits (awaited on the JobStore)
       │
    DATA ── protocol + stream: read in large blocks; a big message spooled to a file
       │
       ▼  listener.FaxHandler.handle_DATA → commit.MailIntake.accept
    worker (faxbridge.workers engine; data.stage_mail in another process): parse (mime, mime_slim,
       │   mime_bounds, mime_text), the dedup keys, every recipient's document staged in the
       │   spool's staging area; no store. Answers a plan, or the refusal (554 ...)
       ▼
    commit (the daemon, commit.MailIntake): one ``await store.enqueue(..., dedup_since=...)`` per
       │   recipient (a duplicate within 5 days: no second job)
       ▼
    250 2.0.0 Queued as job ... (or 451 4.3.0 for our trouble, 554 5.3.4 over the work caps)

Every reply string is in :mod:`~faxbridge.ingress.smtp.replies`. ``listener.SmtpListener`` is the
daemon component.
"""
