"""The file ledger backend: a JSON snapshot written atomically, an append-only journal, a lock file.

`FileBackend` writes the snapshot atomically (temp file, fsync, `os.replace`, directory fsync:
`atomic_write`), keeps the previous version as `<file>.backup`, refuses a save whose serial moved,
and locks with `flock` on `<file>.lock` holding the holder's pid, host, command and start time.

The journal `<file>.journal` holds the changes completed since the snapshot, one JSON line each:
a header `{"journal": 1, "lineage", "salt", "base"}` (the snapshot serial it extends), then
`{"seq": n, "op": "put", "address": a, "entry": {...}}` or `{"seq": n, "op": "drop", "address": a}`
(keys sorted; an entry as the snapshot writes it, so compaction reuses its text). `append` writes
a group of lines with one synchronized write (`O_DSYNC`: durable on return, constant bytes and CPU
per change) after checking that the snapshot is still the one it extends; `load` replays the valid records on top of
the snapshot (a torn last line, a gap in `seq`, or a header for another lineage or serial ends the
replay); `save` writes a snapshot and then removes the journal (compaction).
Whoever takes the lock removes the temp files a killed run left behind; `<file>.errored` is
written atomically (valid JSON or absent).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LedgerConflictError, LedgerError, LockedError
from . import EntryEncoder, Ledger, LockHolder, RemembersChecks, Validator, encode_entry

JOURNAL_VERSION = 1
# The journal is opened for synchronized writes: each write returns once its data is on disk, as a
# write followed by `fdatasync` does, in one system call (each call lets the other threads take
# the interpreter, and a worker journaling a pending import waits to get it back).
_DSYNC = getattr(os, "O_DSYNC", 0)


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

    def __init__(self, path: str | os.PathLike[str], validate: Validator | None = None) -> None:
        self.path = Path(path)
        self.validate = validate
        self.location = str(self.path)
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.errored_path = self.path.with_name(self.path.name + ".errored")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self._last: tuple[tuple[int, int, int], int, bytes] | None = None  # (stat key, serial, bytes) we wrote
        self._tail: tuple[str, int, int, int] | None = None  # journal replayed by load: (lineage, base, valid bytes, last seq)
        self._journal_fd: int | None = None
        self._journal_key: tuple[str, int] = ("", -1)  # (lineage, base) the open journal extends
        self._journal_end = 0  # bytes of whole records in the open journal
        self._seq = 0
        self._base: tuple[str, int, str] | None = None  # (lineage, serial, salt) last loaded or saved: what append extends
        self._snapshot_key: tuple[int, int, int] | None = None  # the snapshot's stat then (one stat per append checks it)
        self._checked: bytes | None = None  # digest of the last snapshot bytes that passed the schema check
        self.keep_decoded = False  # keep the last snapshot decoded, for loads of the same bytes (a long-running loop)
        self._decoded: tuple[bytes, Any] | None = None  # (digest of the snapshot bytes, their JSON document)

    def _read(self) -> Ledger | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc.strerror}") from None
        digest = hashlib.blake2b(raw, digest_size=20).digest()
        if self._decoded is not None and self._decoded[0] == digest:
            doc = self._decoded[1]  # the same bytes decode to the same document (`from_dict` copies every entry it takes)
        else:
            self._decoded = None
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                hint = f"; the previous version is in {self.backup_path}" if self.backup_path.exists() else ""
                raise LedgerError(f"the ledger {self.path} is not valid JSON ({exc}){hint}") from None
        validate = None if digest == self._checked else self.validate  # the same bytes pass the same check again
        remembers = isinstance(validate, RemembersChecks)
        if remembers and validate.passed(digest):  # type: ignore[union-attr]  # checked by an earlier run
            validate, remembers = None, False
        ledger = Ledger.from_dict(doc, str(self.path), validate)
        if remembers:
            validate.record(digest)  # type: ignore[union-attr]
        if self.validate is not None:
            self._checked = digest
        if self.keep_decoded:
            self._decoded = (digest, doc)
        return ledger

    def load(self) -> Ledger:
        """The snapshot plus the journal's valid records (`ledger.journaled` counts them)."""
        self._snapshot_key = self._stat_key(self.path)
        ledger = self._replay(self._read())
        if self.validate is not None and ledger.journaled:  # the snapshot was checked on read
            Ledger.from_dict(ledger.to_dict(), f"{self.path} (with its journal)", self.validate)
        self._base = (ledger.lineage, ledger.serial, ledger.salt)
        return ledger

    def save(self, ledger: Ledger, expected_serial: int) -> int:
        """Write `ledger` as serial `expected_serial + 1`; refuse if the file moved meanwhile.

        Then the journal is removed: everything in it is in the snapshot (compaction)."""
        self.write_encoded(ledger.encode(expected_serial + 1), expected_serial, ledger.lineage)
        ledger.serial = expected_serial + 1
        ledger.journaled = 0
        self._base = (ledger.lineage, ledger.serial, ledger.salt)
        self._snapshot_key = self._stat_key(self.path)
        self._drop_journal()
        return ledger.serial

    # ----------------------------------------------------------------- the journal
    def _replay(self, snapshot: Ledger | None) -> Ledger:
        self._tail = None
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return snapshot or Ledger()
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger journal {self.journal_path}: {exc.strerror}") from None
        head, newline, rest = raw.partition(b"\n")
        header = _json_line(head) if newline else None
        if header is None or header.get("journal") != JOURNAL_VERSION:
            return snapshot or Ledger()
        lineage, base, salt = header.get("lineage"), header.get("base"), header.get("salt")
        if not isinstance(lineage, str) or not isinstance(base, int) or not isinstance(salt, str):
            return snapshot or Ledger()
        if snapshot is None:
            if base != 0:  # the snapshot it extends is gone: nothing to replay onto
                return Ledger()
            snapshot = Ledger(lineage=lineage, salt=salt)
        if (snapshot.lineage, snapshot.serial) != (lineage, base):
            return snapshot  # an old journal already compacted (or another ledger's): ignored
        valid, seq = len(head) + 1, 0
        resources = snapshot.resources
        while rest:
            line, newline, rest = rest.partition(b"\n")
            record = _json_line(line) if newline else None
            if record is None or record.get("seq") != seq + 1 or not isinstance(record.get("address"), str):
                break
            if record.get("op") == "drop":
                resources.pop(record["address"], None)
            elif record.get("op") == "put" and isinstance(record.get("entry"), dict):
                resources[record["address"]] = record["entry"]
            else:
                break
            seq += 1
            valid += len(line) + 1
        snapshot.journaled = seq
        self._tail = (lineage, base, valid, seq)
        return snapshot

    def append(self, records: list[dict[str, Any]], encoded: EntryEncoder | None = None) -> None:
        """Durably add `records` (`{"op": "put", "address", "entry"}` or `{"op": "drop", "address"}`)
        on top of the snapshot last loaded or saved through this backend. An entry is written as
        the snapshot writes it (`encoded`: `Ledger.entry_json`, whose text the snapshot reuses)."""
        if not records:
            return
        if self._base is None:
            raise LedgerError("append needs a loaded ledger")
        self._check_snapshot(*self._base[:2])
        try:
            if self._journal_fd is None or self._journal_key != self._base[:2]:
                self._open_journal(*self._base)
            self._write(self._lines(records, self._seq, encoded or _entry_json), self._seq + len(records))
        except OSError as exc:
            raise LedgerError(f"cannot write the ledger {self.path} (its journal {self.journal_path}): {exc.strerror or exc}") from None

    @staticmethod
    def _lines(records: list[dict[str, Any]], seq: int, encoded: EntryEncoder) -> bytes:
        """The journal lines of `records`, numbered from `seq + 1`: the keys sorted, as
        `json.dumps(..., sort_keys=True)` writes them."""
        lines = []
        for record in records:
            seq += 1
            op, address = record.get("op"), record.get("address")
            if op == "put" and isinstance(address, str) and isinstance(record.get("entry"), dict) and len(record) == 3:
                lines.append(f'{{"address":{json.dumps(address)},"entry":{encoded(address, record["entry"])},"op":"put","seq":{seq}}}\n')
            elif op == "drop" and isinstance(address, str) and len(record) == 2:
                lines.append(f'{{"address":{json.dumps(address)},"op":"drop","seq":{seq}}}\n')
            else:
                lines.append(json.dumps({**record, "seq": seq}, separators=(",", ":"), sort_keys=True) + "\n")
        return "".join(lines).encode()

    def _check_snapshot(self, lineage: str, serial: int) -> None:
        """Refuse to extend a snapshot that another writer replaced meanwhile."""
        if self._stat_key(self.path) == self._snapshot_key:
            return
        current = self._read()
        if current is not None and (current.lineage, current.serial) != (lineage, serial):
            raise LedgerConflictError(
                f"the ledger {self.path} changed while this run was using it (serial {current.serial}, expected {serial}); re-run to plan again"
            )
        self._snapshot_key = self._stat_key(self.path)

    def _open_journal(self, lineage: str, serial: int, salt: str) -> None:
        self._close_journal()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | _DSYNC, 0o644)
        self._journal_fd = fd
        self._journal_key = (lineage, serial)
        tail = self._tail
        if tail is not None and tail[:2] == self._journal_key:  # continue after the replayed records
            os.ftruncate(fd, tail[2])  # a torn last line goes
            os.fdatasync(fd)
            self._journal_end, self._seq = tail[2], tail[3]
            return
        os.ftruncate(fd, 0)
        self._journal_end, self._seq = 0, 0
        header = {"journal": JOURNAL_VERSION, "lineage": lineage, "salt": salt, "base": serial}
        self._write((json.dumps(header, sort_keys=True) + "\n").encode(), 0)
        _fsync_dir(self.path.parent)
        self._tail = (lineage, serial, self._journal_end, 0)

    def _write(self, data: bytes, seq: int) -> None:
        """Write at the end of the whole records, durably; a failed write is cut off again."""
        fd = self._journal_fd
        assert fd is not None
        start = self._journal_end
        try:
            view = memoryview(data)
            offset = start
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            if not _DSYNC:
                os.fdatasync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        self._journal_end, self._seq = start + len(data), seq
        if self._tail is not None and self._tail[:2] == self._journal_key:
            self._tail = (*self._journal_key, self._journal_end, self._seq)

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal_fd)
            self._journal_fd = None
            self._journal_key = ("", -1)

    def _drop_journal(self) -> None:
        self._close_journal()
        self._tail = None
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerError(f"cannot remove the ledger journal {self.journal_path}: {exc.strerror}") from None
        _fsync_dir(self.path.parent)

    @staticmethod
    def _stat_key(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
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
            # rename(2) does nothing when both names are already links to one file (a run killed
            # between its backup and its snapshot leaves them so): the link would stay behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(link)
            atomic_write(self.backup_path, previous if previous is not None else self.path.read_bytes())

    def dump_errored(self, ledger: Ledger) -> str | None:
        """Best effort: write what was done to `<file>.errored`, atomically (valid JSON or not
        there at all, never a truncated file). Returns the path or None."""
        try:
            atomic_write(self.errored_path, (json.dumps(ledger.to_dict(), indent=2) + "\n").encode())
            return str(self.errored_path)
        except OSError:
            return None

    def leftovers(self) -> list[Path]:
        """Temp files a killed run left next to the ledger (its own writes clean up after
        themselves otherwise): `.state.json.*.tmp` of `atomic_write`, `.state.json.backup.*.link`."""
        folder = self.path.parent
        found = [*folder.glob(f".{self.path.name}.*.tmp"), *folder.glob(f".{self.backup_path.name}.*.link")]
        return sorted(p for p in found if p.is_file())

    def _remove_leftovers(self) -> None:
        """Called with the lock held: no other run is writing, so every temp file is a leftover."""
        for path in self.leftovers():
            with contextlib.suppress(OSError):
                path.unlink()

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
            self._remove_leftovers()
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


def _entry_json(address: str, entry: dict[str, Any]) -> str:
    """An entry's JSON text as `Ledger.entry_json` writes it, for callers that give none."""
    return encode_entry(entry)


def _json_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
