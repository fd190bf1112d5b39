"""The frames between the daemon and a worker process, over one socket pair.

Request (daemon → worker): ``>BII`` (kind, header length, buffer count), the header (a pickle,
protocol 5), then each out-of-band buffer as ``>Q`` length + its bytes. A caller's big ``bytes``
wrapped in :class:`pickle.PickleBuffer` travels as such a buffer: written from its own memory,
read into one ``bytes`` object in the worker, never pickled or copied on the way.

Reply (worker → daemon): ``>BI`` (status, length) + a pickle: the function's result, the exception
it raised, or (``CAPPED``) the words saying which cap it went over.

An argument that is the same for every job (a caller's settings) can travel as :class:`Shared`: it
is pickled once when it is made, and each frame carries those bytes and their digest; a worker
unpickles them the first time it meets the digest and hands the same object to later jobs
(dataclasses pickle through Python code: some 25 us a frame each way for the mail settings).
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections import OrderedDict
from typing import Any, BinaryIO, Generic, TypeVar

CONFIG = 1          # request: the worker's settings (the first frame, and after each SIGHUP)
JOB = 2             # request: (function, args)

OK = 0              # reply: the result
RAISED = 1          # reply: the exception the function raised
CAPPED = 2          # reply: over the job's CPU time or memory; the worker leaves after it

T = TypeVar("T")
SHARED_KEPT = 8     # the shared values a worker keeps (a SIGHUP makes new settings: the old ones go)

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


class Shared(Generic[T]):
    """A value pickled once, for every job it goes with (see the module docstring). ``value``
    is what the daemon's side uses; what a job's function receives is an equal object, unpickled
    once per worker. The value must not change after it is wrapped (settings are frozen)."""

    __slots__ = ("_blob", "_key", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self._blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._key = hashlib.blake2b(self._blob, digest_size=16).digest()

    def __reduce__(self) -> tuple[Any, tuple[bytes, bytes]]:
        return _shared, (self._key, self._blob)


_kept: OrderedDict[bytes, Any] = OrderedDict()


def _shared(key: bytes, blob: bytes) -> Any:
    """In the worker: the value of a :class:`Shared`, unpickled the first time its digest is met."""
    try:
        _kept.move_to_end(key)
        return _kept[key]
    except KeyError:
        value = _kept[key] = pickle.loads(blob)
        while len(_kept) > SHARED_KEPT:
            _kept.popitem(last=False)
        return value
