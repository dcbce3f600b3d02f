"""A non-blocking, line-preserving writer onto a file descriptor the process shares (stderr, stdout).

Setting ``O_NONBLOCK`` on stderr itself would change it for everyone holding the same open file (the
logging handler of this process, sibling workers, the supervisor), and their blocking writes would start
failing. So :class:`Output` writes through a private handle instead:

* a pipe or character device (tty, /dev/null) is reopened through ``/proc/self/fd/N``, which gives a new
  open file of the same pipe with its own non-blocking flag; each write is at most ``PIPE_BUF`` bytes and
  ends on a newline, so the kernel writes it whole or not at all and lines from several writers of one
  pipe never interleave;
* a socket (systemd's journal) is written with ``send(MSG_DONTWAIT)``, non-blocking per call;
* anything else (a regular file, or when reopening fails) is written as is: a file is never "full".
"""

from __future__ import annotations

import os
import select
import socket
import stat
from collections.abc import Callable

__all__ = ["Output"]

_Send = Callable[[memoryview], int]


class Output:
    """A private, non-blocking write handle onto ``fd`` (see the module docstring for how, per kind)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.atomic = 0  # > 0: write at most this many bytes at once, ending on a newline
        self._owned: int | socket.socket | None = None
        self._send: _Send = self._open(fd)

    def _open(self, fd: int) -> _Send:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:  # a closed stderr: the first write fails and the caller counts drops
            mode = 0
        if stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(fd))
            self._owned, self.fd = sock, sock.fileno()
            flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
            return lambda data: sock.send(data, flags)
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            try:
                private = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                private = -1  # no /proc, or a FIFO with no reader: fall back to plain writes
            if private >= 0:
                self._owned = self.fd = private
                if stat.S_ISFIFO(mode):
                    self.atomic = select.PIPE_BUF
        return lambda data: os.write(self.fd, data)

    def write_lines(self, data: bytes | bytearray) -> tuple[int, bool]:
        """Write as much of ``data`` as the output takes now: (bytes written, output closed for good).

        Stops at the first "would block"; any other error (EPIPE, EBADF, EIO...) means closed.
        """
        # A context manager: the view must be released before the caller resizes the bytearray.
        with memoryview(data) as view:
            pos, size, atomic = 0, len(data), self.atomic
            while pos < size:
                end = size
                if atomic and size - pos > atomic:
                    cut = data.rfind(b"\n", pos, pos + atomic)
                    if cut >= 0:
                        end = cut + 1
                    else:  # one line longer than PIPE_BUF (a huge path): it goes alone, not atomically
                        newline = data.find(b"\n", pos)
                        end = newline + 1 if newline >= 0 else size
                try:
                    written = self._send(view[pos:end])
                except BlockingIOError:
                    break
                except OSError:
                    return pos, True
                if written <= 0:
                    break
                pos += written
        return pos, False

    def close(self) -> None:
        """Close the private handle (never the shared descriptor)."""
        owned, self._owned = self._owned, None
        if isinstance(owned, socket.socket):
            owned.close()
        elif owned is not None:
            os.close(owned)
