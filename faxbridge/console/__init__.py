"""The web console (CONTRACT §13): a Starlette app served in the daemon's event loop on ``console.listen``.

Server-rendered (Jinja2 templates in ``templates/``, autoescaped); a few lines of plain JavaScript
(``static/console.js``) keep the queue, a job's page and the overview current by fetching again the
HTML fragments the server renders when the server-sent events of ``/events`` say a job they show
changed (:mod:`faxbridge.console.live`; polling every ``REFRESH_S`` seconds where events cannot
work), and show times in the viewer's time zone. No build step and no CDN: every asset is served by
faxbridge itself. Everything is read through the :class:`~faxbridge.store.JobStore` protocol, so the
console works on any store.

::

    GET  /                       the queue: counts by state; filters state, source, number, sender, text;
                                 newest first, paged                       (fragment: /fragments/queue)
    GET  /jobs/{id}              one job: its history, first page, documents, result, provider reason
                                                                           (fragment: /fragments/jobs/{id})
    GET  /jobs/{id}/pages/{n}.png  page n of the fax as sent (rendered in the worker engine)
    GET  /jobs/{id}/fax.pdf      the PDF as sent
    GET  /jobs/{id}/received/{n} document n as received (always a download; :mod:`.produced`)
    GET  /jobs/{id}/confirm/{action}   asks "cancel / retry / send now?", with the POST form
    POST /jobs/{id}/{action}     cancel | retry | send-now (CSRF token); back to the job, saying what happened
    GET  /overview               today's figures, what is in flight and overdue, the balance, which parts
                                 are up, the effective configuration (no secrets; :mod:`.settings`)
                                                                           (fragment: /fragments/overview)
    GET  /events                 server-sent events: the ids of the jobs that changed (:mod:`.live`)
    GET|POST /login, POST /logout   with console.users_file (see :mod:`faxbridge.console.access`)
    GET  /static/{file}

Access (``access``): with no users file only loopback clients are served (403 otherwise); with one,
every page but the login needs a session.
"""

from __future__ import annotations

from faxbridge.console.app import ConsoleContext, build_app

__all__ = ["ConsoleContext", "build_app"]
