"""Proof of life for lease holders: operating-system locks the kernel lets go at a death.

A lease row in a file-based store says which token holds an emitter until when; it cannot
say whether the process behind that token still lives. So the holder also keeps an
exclusive ``fcntl`` lock on one byte of a small file beside the store (``<store>-leases``),
at an offset derived from its token, taken *before* the token is first written to a lease
row and kept until the process ends. The kernel drops that lock when the process ends,
however it ends (exit, SIGTERM, ``kill -9``, an out-of-memory kill). Another process asks
"is token T alive?" by trying to take T's byte without waiting: a refusal means its holder
lives; a success means it is gone (the probe lets the byte go at once).

What fcntl locks imply, and how this module deals with it:

- They belong to the process, not to a descriptor or a thread: the threads of a process
  share them, and the process never conflicts with itself. So a probe from the process
  that holds a token would wrongly succeed; the tokens this process claimed are kept in
  :class:`LockFile` and answered from there, never probed.
- Closing *any* descriptor of the file in the process drops all its locks on that file.
  So each process opens the file once (one :class:`LockFile` per file, shared by every
  store over it) and never closes that descriptor while it holds a claim.
- They are not inherited by a forked child: a child starts with no claim (its engine makes
  it a new lease token anyway) and opens its own descriptor, leaving the parent's alone.
- They do not hold on network file systems; nor does SQLite's locking, which is why the
  SQLite store must be on a local disk already. Processes in containers that share the
  file on one host share its locks (one kernel).

Nothing secret is written: the file stays empty (locks beyond its end are allowed).
Where ``fcntl`` does not exist (Windows) nothing is claimed and every holder counts as
alive: leases are then taken over when they expire, as before this proof existed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from types import ModuleType
from typing import Optional

fcntl: Optional[ModuleType]
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: leases expire instead
    fcntl = None

__all__ = ["LockFile", "lock_file"]

# Offsets below 2**62: positive, inside off_t on every 64-bit system, and far apart.
_OFFSET_MASK = (1 << 62) - 1

_registry_lock = threading.Lock()
_registry: dict[str, LockFile] = {}
_registry_pid = os.getpid()


def token_offset(token: str) -> int:
    """The byte of the lock file that stands for ``token`` (the same in every process)."""
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _OFFSET_MASK


class LockFile:
    """This process's view of one lock file: its descriptor and the tokens it claimed.

    Thread-safe. Made by :func:`lock_file` (one per file and process); not to be made
    directly, since a second descriptor of the file in this process would drop its locks
    when closed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        #: The permissions the file is made with (set by the store: its own file's).
        self.mode = 0o600
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._claimed: set[int] = set()  # offsets this process holds

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_RDWR | os.O_CLOEXEC
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode)
            except FileExistsError:
                fd = os.open(self.path, flags)
            else:
                # Made here: the store file's permissions exactly (the umask left aside),
                # as SQLite does for the -wal and -shm files, so that every process that
                # may open the store may open this file.
                try:
                    os.fchmod(fd, self.mode)
                except OSError:
                    pass  # what the umask left: processes of this user can open it
            self._fd = fd
        return self._fd

    def claim(self, token: str) -> None:
        """Hold ``token``'s byte until this process ends (a no-op once held).

        Raises:
            OSError: the file cannot be made or opened (its directory is not writable).
        """
        offset = token_offset(token)
        if fcntl is None:  # pragma: no cover - Windows
            return
        with self._lock:
            if offset in self._claimed:
                return
            fd = self._open()
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                # Another live process holds this very token (a Lease shared by hand across
                # processes): its lock already proves the token alive.
                return
            self._claimed.add(offset)

    def alive(self, token: str) -> bool:
        """Whether a process holding ``token``'s byte lives (this one included).

        Answers True when it cannot tell (the file cannot be opened, an unexpected error):
        the lease then waits for its expiry, as without this proof.
        """
        offset = token_offset(token)
        if fcntl is None:  # pragma: no cover - Windows
            return True
        with self._lock:
            if offset in self._claimed:
                return True
            try:
                fd = self._open()
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError:
                return True  # held by a live process (EACCES/EAGAIN), or cannot tell
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
            except OSError:  # pragma: no cover - unlocking a byte just locked
                pass
            return False

    def close_if_unclaimed(self) -> None:
        """Close the descriptor if this process holds no claim on the file (else keep it:
        closing would drop the claims)."""
        with self._lock:
            if self._fd is not None and not self._claimed:
                os.close(self._fd)
                self._fd = None


def lock_file(path: str) -> LockFile:
    """The :class:`LockFile` of ``path`` for this process (one per file: see the module).

    ``path`` should be absolute and resolved (``os.path.realpath``), so that two names of
    one file share one descriptor. In a forked child the parent's views are forgotten
    (their descriptors left open and unused: the child holds none of their locks).
    """
    global _registry_pid, _registry_lock
    if _registry_pid != os.getpid():
        # A fork: the registry lock may have been held by a thread that does not exist
        # here, so it is made anew rather than taken.
        _registry_lock = threading.Lock()
        _registry.clear()
        _registry_pid = os.getpid()
    with _registry_lock:
        found = _registry.get(path)
        if found is None:
            found = _registry[path] = LockFile(path)
        return found
