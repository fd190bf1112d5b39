"""The frames between the daemon and a worker process, over one socket pair.

Request (daemon → worker): ``>BII`` (kind, header length, buffer count), the header (a pickle,
protocol 5), then each out-of-band buffer as ``>Q`` length + its bytes. A caller's big ``bytes``
wrapped in :class:`pickle.PickleBuffer` travels as such a buffer: written from its own memory,
read into one ``bytes`` object in the worker, never pickled or copied on the way.

Reply (worker → daemon): ``>BI`` (status, length) + a pickle: the function's result, the exception
it raised, or (``CAPPED``) the words saying which cap it went over.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

CONFIG = 1          # request: the worker's settings (the first frame, and after each SIGHUP)
JOB = 2             # request: (function, args)

OK = 0              # reply: the result
RAISED = 1          # reply: the exception the function raised
CAPPED = 2          # reply: over the job's CPU time or memory; the worker leaves after it

_REQUEST = struct.Struct(">BII")
_LENGTH = struct.Struct(">Q")
REPLY = struct.Struct(">BI")


def request(kind: int, value: Any) -> list[bytes | memoryview]:
    """The frame for ``value`` as the pieces to write (out-of-band buffers are not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    parts: list[bytes | memoryview] = [_REQUEST.pack(kind, len(header), len(buffers)), header]
    for buffer in buffers:
        raw = buffer.raw()
        parts += [_LENGTH.pack(raw.nbytes), raw]
    return parts


def _exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return None if len(data) < size else data


def read_request(stream: BinaryIO) -> tuple[int, Any] | None:
    """The next request (kind, value), or None once the daemon closed the socket pair."""
    head = _exact(stream, _REQUEST.size)
    if head is None:
        return None
    kind, header_size, count = _REQUEST.unpack(head)
    header = _exact(stream, header_size)
    buffers: list[bytes] = []
    for _ in range(count):
        length = _exact(stream, _LENGTH.size)
        data = None if length is None else _exact(stream, _LENGTH.unpack(length)[0])
        if data is None:
            return None
        buffers.append(data)
    if header is None:
        return None
    return kind, pickle.loads(header, buffers=buffers)


def reply(status: int, value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return REPLY.pack(status, len(payload)) + payload
