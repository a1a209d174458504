"""The file ledger backend: a JSON file, written atomically, with a backup and a lock file.

`FileBackend` writes atomically (temp file, fsync, `os.replace`, directory fsync: `atomic_write`),
keeps the previous version as `<file>.backup`, refuses a save whose serial moved, and locks with
`flock` on `<file>.lock` holding the holder's pid, host, command and start time.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LedgerConflictError, LedgerError, LockedError
from . import Ledger, LockHolder


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """temp file in the same folder, fsync, rename over, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class FileBackend:
    """The default ledger: a JSON file, next to the configuration by default."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.errored_path = self.path.with_name(self.path.name + ".errored")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._last: tuple[tuple[int, int, int], int, bytes] | None = None  # (stat key, serial, bytes) we wrote

    def _read(self) -> Ledger | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            hint = f"; the previous version is in {self.backup_path}" if self.backup_path.exists() else ""
            raise LedgerError(f"the ledger {self.path} is not valid JSON ({exc}){hint}") from None
        return Ledger.from_dict(doc, str(self.path))

    def load(self) -> Ledger:
        return self._read() or Ledger()

    def save(self, ledger: Ledger, expected_serial: int) -> int:
        """Write `ledger` as serial `expected_serial + 1`; refuse if the file moved meanwhile."""
        self.write_encoded(ledger.encode(expected_serial + 1), expected_serial, ledger.lineage)
        ledger.serial = expected_serial + 1
        return ledger.serial

    @staticmethod
    def _stat_key(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write_encoded(self, data: bytes, expected_serial: int, lineage: str) -> None:
        """Atomically replace the file with `data` (serial `expected_serial + 1`), keeping a backup.

        The file this backend wrote last is recognised by its stat, so steady-state saves neither
        re-read nor re-parse it; any other file is read and its serial and lineage checked."""
        key = self._stat_key(self.path)
        previous: bytes | None = None
        current_serial: int | None = None
        if key is not None and self._last is not None and self._last[0] == key:
            current_serial, previous = self._last[1], self._last[2]
        elif key is not None:
            current = self._read()
            assert current is not None
            if current.lineage != lineage:
                raise LedgerConflictError(
                    f"the ledger {self.path} belongs to another lineage ({current.lineage}); refusing to overwrite it"
                )
            current_serial = current.serial
        if current_serial is not None and current_serial != expected_serial:
            raise LedgerConflictError(
                f"the ledger {self.path} changed while this run was using it (serial {current_serial}, expected {expected_serial}); re-run to plan again"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if key is not None:
                self._keep_backup(previous)
            atomic_write(self.path, data)
        except OSError as exc:
            raise LedgerError(f"cannot write the ledger {self.path}: {exc.strerror or exc}") from None
        new_key = self._stat_key(self.path)
        self._last = (new_key, expected_serial + 1, data) if new_key else None

    def _keep_backup(self, previous: bytes | None) -> None:
        """Make `<file>.backup` the current version before it is replaced.

        A hard link to the current inode costs no copy: the new version arrives by rename, so the
        link keeps the old content. Where links are not supported, the bytes are copied."""
        link = self.backup_path.with_name(f".{self.backup_path.name}.{os.getpid()}.link")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.link(self.path, link)
            os.replace(link, self.backup_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(link)
            atomic_write(self.backup_path, previous if previous is not None else self.path.read_bytes())

    def dump_errored(self, ledger: Ledger) -> str | None:
        """Best effort: write what was done to `<file>.errored`. Returns the path or None."""
        try:
            self.errored_path.write_text(json.dumps(ledger.to_dict(), indent=2) + "\n")
            return str(self.errored_path)
        except OSError:
            return None

    @contextlib.contextmanager
    def lock(self, timeout: float = 0.0, command: str = "") -> Iterator[None]:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(f"cannot create the lock file {self.lock_path}: {exc.strerror}") from None
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise LedgerError(f"cannot lock {self.lock_path}: {exc.strerror}") from None
                    if time.monotonic() >= deadline:
                        holder = self.holder()
                        who = holder.describe() if holder else "another process"
                        waited = f" after waiting {timeout:g}s" if timeout else ""
                        raise LockedError(
                            f"the ledger {self.path} is locked by {who}{waited}; wait for it to finish or pass --lock-timeout"
                        ) from None
                    time.sleep(0.1)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:2]),
                "since": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> LockHolder | None:
        try:
            doc = json.loads(self.lock_path.read_text() or "null")
            return LockHolder(int(doc["pid"]), str(doc["host"]), str(doc["command"]), str(doc["since"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
