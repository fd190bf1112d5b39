"""The folder pipeline: a file dropped into a ``[[watch]]`` folder to one durable job, and its result file.

::

    observer thread (watchdog: inotify, or polling for SMB/NFS) ── paths heard of ──▶ event loop
       │   watch.FolderWatcher: rounds handed to ONE worker thread (file I/O never on the loop)
       ▼
    scan (discovery + settling): sweep / observe, the settle tracker (size, mtime, inode unchanged
       │   for ``settle``), names and control files (control), complete content (content.incomplete)
       ▼
    claim: renamed into ``<watch>/.faxbridge/processing/<claim id>/`` (claims, by descriptor in the
       │   checked working area: safedir), every touched folder fsynced once per round; after a
       │   crash, the claims left behind are reconciled at start-up
       ▼
    commit: planned (number from the control file, the name or the subfolder; options), the document
       │   staged on the worker engine (content.stage, a real future per claim), then the round's
       │   jobs committed together in ONE transaction (``await store.enqueue_many`` on the daemon's
       │   JobStore, called from the worker thread), a refused file as a ``rejected`` job
       ▼
    final job ── outbox row "sidecar" ──▶ results: the original moved to ``done/`` or ``failed/``,
                                          ``results/NAME.result.json`` written (tmp + fsync + rename)

Modules, one job each: :mod:`.watch` (the daemon component: observers, the worker thread, the
engine as the pool), :mod:`.intake` (one folder's round: scan, claim, commit), :mod:`.scan` with
:mod:`.settle` and :mod:`.tree` (discovery and settling), :mod:`.claim` with :mod:`.claims` and
:mod:`.claimed` (the processing area: claiming, reading a claim, reconcile), :mod:`.commit`
(planning, staging on real futures, the grouped commit, rejections, retries), :mod:`.content`
(the pure work the worker processes run), :mod:`.control` (control files and names),
:mod:`.bridge` (the async JobStore reached from the worker thread), :mod:`.results` (the
result-file step, with the typed :class:`~faxbridge.ingress.folder.results.FolderOrigin` a folder
job carries) and :mod:`.safedir` (folders reached by descriptor, never through a link).
"""
