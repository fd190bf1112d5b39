"""What `faxbridge run` tells a person at a terminal once it is ready: where things go, in words.

Printed only when stderr is a terminal (the log lines are then in their console form too); under
systemd or in a pipe every stderr line stays a JSON object (contract section 8). Pure: the lines
come from the configuration alone.
"""

from __future__ import annotations

from faxbridge.config import Config


def ready_lines(cfg: Config) -> list[str]:
    p = cfg.provider
    where = ("the built-in simulated fax network: nothing leaves this machine; numbers ending 0-5 are "
             "delivered, 6 busy then delivered, 7 no answer, 8 not a fax machine, 9 busy"
             if p.kind == "simulator" else f"{p.kind}: faxes are real and cost money")
    lines = ["faxbridge is ready.", f"  Faxes go to {where}."]
    if cfg.smtp.enabled:
        domain = cfg.smtp.domains[0] if cfg.smtp.domains else "a domain in smtp.domains"
        lines.append(f"  Mail:    send to NUMBER@{domain} (e.g. 15555551212@{domain}) through the SMTP "
                     f"server at {cfg.smtp.listen}")
    else:
        lines.append("  Mail:    off (smtp.enabled = false)")
    for w in cfg.watch:
        lines.append(f"  Folder:  drop NUMBER.pdf into {w.path}; NAME.result.json appears in {w.results}")
    if cfg.webhook.enabled:
        lines.append(f"  Web:     {cfg.webhook.public_url}/healthz (health) and /metrics; the provider's "
                     "status reports come here too")
    if cfg.console.enabled:
        who = "log in with a user of console.users_file" if cfg.console.users_file else "from this machine only"
        listen = cfg.console.listen
        if listen.host in ("0.0.0.0", "::", ""):       # every address: name one a browser can open
            local = "[::1]" if listen.host == "::" else "127.0.0.1"
            where = f"http://{local}:{listen.port}/ here, or http://THIS-MACHINE:{listen.port}/ from elsewhere,"
        else:
            where = f"http://{listen}/"
        lines.append(f"  Console: open {where} in a browser ({who})")
    if cfg.notify.smarthost:
        lines.append(f"  Replies: a reply mail for each fax goes to its sender through {cfg.notify.smarthost}")
    else:
        lines.append("  Replies: off. To get a reply mail for each fax, set notify.smarthost = \"HOST:PORT\" "
                     "(or FAXBRIDGE_NOTIFY_SMARTHOST)")
    lines.append("  See the queue with `faxbridge jobs`; stop with Ctrl-C.")
    return lines
