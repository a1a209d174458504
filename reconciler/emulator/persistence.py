"""The emulator's data file: atomic JSON writes, change detection and an exclusive file lock.

Two ways to share a file (the lock is `flock` on `FILE.lock`, next to it):
- `hold()`: `emulator serve --data FILE` takes the lock for its whole life, so a second writer
  fails at once with a message naming the holder's pid;
- `transaction()`: the in-process store of `endpoint: local` takes the lock for each API request,
  re-reads the file when another process changed it since the last read, and writes it (atomically)
  before letting go, so overlapping processes never resurrect each other's deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere there is no cross-process lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_WAIT_S = 30.0


class DataFileError(Exception):
    """The data file cannot be used: unreadable, not an emulator data file, or locked by another process."""


class DataFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None
        self._held = False  # locked for the whole life (serve)
        # what the file looked like at the last read or write: (inode, mtime_ns, size) and the write
        # mark in the lock file (an inode can be reused and mtime is coarse; the mark cannot repeat)
        self._seen: tuple[tuple[int, int, int] | None, str] | None = None

    # ----------------------------------------------------------------- locking
    def hold(self) -> None:
        """Lock the file for this process's life; `DataFileError` names the holder if it is taken."""
        if not self._try_lock():
            raise DataFileError(f"{self.path} is in use by another emulator or agora-reconciler process{self._holder()}")
        self._held = True
        self._label("")

    def release(self) -> None:
        if self._lock_fd is not None:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self._held = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock for one request (a no-op while `hold()` is in force)."""
        if self._held:
            yield
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.001
        while not self._try_lock():
            if time.monotonic() >= deadline:
                raise DataFileError(f"{self.path} stayed locked for {LOCK_WAIT_S:.0f} s{self._holder()}")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        try:
            yield
        finally:
            self.release()

    def _try_lock(self) -> bool:
        if self._lock_fd is None:
            try:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise DataFileError(f"cannot open the lock file {self.lock_path}: {exc.strerror}") from None
        if fcntl is None:  # pragma: no cover
            return True
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _label(self, mark: str) -> None:
        """Write who holds the lock (and the mark of the last write) into the lock file."""
        assert self._lock_fd is not None
        text = f"pid {os.getpid()} on {socket.gethostname()}" + (f"; write {mark}" if mark else "")
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, text.encode(), 0)

    def _mark(self) -> str:
        try:
            return self.lock_path.read_text()
        except OSError:
            return ""

    def _holder(self) -> str:
        text = self._mark().split(";")[0].strip()
        return f" (held by {text})" if text else ""

    # ----------------------------------------------------------------- reading and writing
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _look(self) -> tuple[tuple[int, int, int] | None, str]:
        return (self._stat(), "" if self._held else self._mark())

    def changed(self) -> bool:
        """Whether the file differs from what this process last read or wrote."""
        return self._look() != self._seen

    def read(self) -> dict[str, Any] | None:
        """The document, or None when there is no file yet."""
        self._seen = self._look()
        if self._seen[0] is None:
            return None
        try:
            doc = json.loads(self.path.read_bytes())
        except OSError as exc:
            raise DataFileError(f"cannot read {self.path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFileError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DataFileError(f"{self.path} is not an emulator data file (expected a JSON object)")
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        """Replace the file atomically (temp file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".emulator-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if not self._held and self._lock_fd is not None:
            self._label(secrets.token_hex(8))
        self._seen = self._look()
