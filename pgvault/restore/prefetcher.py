"""The one long-lived WAL prefetcher of a restore (`wal-restore --prefetch-daemon QDIR`).

Started by the first restore_command call that served a segment (walqueue.ensure_prefetcher);
a second one started by a racing call finds the lock taken and exits. It keeps the
segments after the one replay asked for last (`.want`) in the queue, verified:

- published as NAME.ready (restore_command moves it with `mv`, no interpreter) when the
  tablespace guard has nothing to do for it (tblspc_guard.served_as_is), else as NAME
  with its marker (walget serves it); a NAME.ready gone is replay's position, as is
  `.want` (written by walget); at the end of WAL the last one taken is queued again as
  NAME for PostgreSQL's re-read; the next fetch starts as soon as one finishes;
- bounded by `[restore] prefetch_segments` and `prefetch_bytes` (like pgBackRest's
  archive-get queue): never more than that many files ahead, in flight included;
- each segment comes from the spool (fsutil.copy_verified: sha256 of its .sha256 file) or
  the store (storage.verified: stored and content sha256 from the catalog row or the
  object's metadata), refused when the catalog says corrupt or missing, and is published
  by walqueue.publish only after that proof (`.NAME.part`, then the marker, then NAME);
- segments replay has passed are removed (the one it read last stays: PostgreSQL reads
  it again at the end of recovery); a segment found nowhere (the end of WAL, for now) is
  marked absent (walqueue.mark_absent, restore_command answers 1 from it for a moment),
  asked for again every RETRY_MISSING seconds, never past it; there, this timeline's and
  the next one's history files are looked up too (PostgreSQL asks for them next);
- it exits when recovery ends (recovery.signal / standby.signal / postmaster.pid gone,
  when they were there; a prefetcher started before the server watches its postmaster.pid
  from when it appears), when replay has asked for nothing for `IDLE_EXIT` seconds, or
  when its lock is taken from it; on the way out it removes every segment it queued.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pgvault import fsutil
from pgvault.config import Settings, load_settings
from pgvault.errors import IntegrityError, PgvaultError
from pgvault.restore import tblspc_guard, walqueue
from pgvault.restore.wal_restore import catalog_row
from pgvault.restore.walspool import spool_sha256
from pgvault.walfile import parse_name, segment_name

IDLE_EXIT = 60.0
RETRY_MISSING = 1.0
POLL = 0.05
_SIGNALS = ("recovery.signal", "standby.signal")


class _Source:
    """Where segments come from: the spool, then the store (opened on first need)."""

    def __init__(self, settings: Settings, config: str | None, use_spool: bool) -> None:
        self.settings = settings
        self.config = config
        self.use_spool = use_spool
        self._store: tuple[Any, list[Any]] | None = None

    def _opened(self) -> tuple[Any, list[Any]]:
        if self._store is None:
            from pgvault.keys import identities_for
            from pgvault.storage import open_store

            self._store = (open_store(self.settings.storage), identities_for(self.settings))
        return self._store

    def fetch(self, qdir: str, name: str, ready: bool) -> bool:
        """Verified NAME into the queue (as NAME.ready with `ready`); False when it exists
        nowhere. Raises on damage."""
        part = walqueue.part_path(qdir, name)
        spool_bad = False
        if self.use_spool and (sha := spool_sha256(str(self.settings.spool_dir), name)):
            src = os.path.join(str(self.settings.spool_dir), "wal", name)
            try:
                fsutil.copy_verified(src, part, sha)
            except (IntegrityError, OSError):
                spool_bad = True  # not trusted: the store copy, as restore_command would
            else:
                walqueue.publish(qdir, name, part, sha, ready=ready)
                return True
        row = catalog_row(str(self.settings.catalog_path), "wal", name)
        if row is not None and row["state"] in ("corrupt", "missing"):
            raise PgvaultError(f"{name} is catalogued as {row['state']}")
        from pgvault.restore.wal_fetch import fetch_into

        store, identities = self._opened()
        sha256 = fetch_into(self.settings, store, identities, name, part, row=row)
        if sha256 is None and spool_bad:  # restore_command answers 254 here, not 1
            raise IntegrityError(f"{name}: the spool copy is damaged and the store has none")
        if sha256 is None:
            return False
        walqueue.publish(qdir, name, part, sha256, ready=ready)
        return True


def _load_guard(datadir: str) -> tuple[bool, dict[str, Any] | None]:
    """(usable, guard): an unreadable guard file leaves every segment to restore_command's
    own paths, which report it."""
    try:
        return True, tblspc_guard.load(datadir)
    except tblspc_guard.GuardError:
        return False, None


class Prefetcher:
    def __init__(self, qdir: str, settings: Settings, config: str | None, use_spool: bool):
        self.qdir = qdir
        self.datadir = os.path.dirname(os.path.dirname(os.path.abspath(qdir)))
        self.count = settings.restore.prefetch_segments
        self.max_bytes = settings.restore.prefetch_bytes
        self.source = _Source(settings, config, use_spool)
        self.watch = [
            f
            for f in (*_SIGNALS, "postmaster.pid")
            if os.path.exists(os.path.join(self.datadir, f))
        ]
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgvault-prefetch")
        self.inflight: dict[str, tuple[Future[bool], bool]] = {}  # name -> (fetch, ready)
        self.missing: dict[str, float] = {}  # name -> when it was found nowhere
        self.queued: set[str] = set()
        self.ready: set[str] = set()  # queued as NAME.ready: gone = taken by replay
        self.taken: str | None = None  # the last NAME.ready replay took
        self.guard_ok, self.guard = _load_guard(self.datadir)

    def recovery_over(self) -> bool:
        # started before the server (prefetch_start): its postmaster.pid counts once seen
        if "postmaster.pid" not in self.watch and os.path.exists(
            os.path.join(self.datadir, "postmaster.pid")
        ):
            self.watch.append("postmaster.pid")

        def gone(f: str) -> bool:
            return f in self.watch and not os.path.exists(os.path.join(self.datadir, f))

        signals_gone = any(s in self.watch for s in _SIGNALS) and all(
            gone(s) or s not in self.watch for s in _SIGNALS
        )
        return signals_gone or gone("postmaster.pid")

    def window(self, want: str, seg_size: int) -> list[str]:
        wal = parse_name(want)
        n = max(0, min(self.count, self.max_bytes // max(seg_size, 1)))
        segno = wal.segno(seg_size)
        return [segment_name(wal.timeline, segno + i, seg_size) for i in range(1, n + 1)]

    def _forget_passed(self, want: str, seg_size: int) -> None:
        wal = parse_name(want)
        for name in list(self.queued):
            other = parse_name(name)
            if other.type != "segment":
                continue  # history files stay until the end
            passed = other.timeline != wal.timeline or other.segno(seg_size) < wal.segno(seg_size)
            # a NAME.ready behind the position stays until replay takes it (or the end):
            # replay may go back (a checkpoint record in a later segment than its redo
            # point is read first), and it leaves the queue when taken
            if passed and name not in self.inflight and name not in self.ready:
                walqueue.drop(self.qdir, name)
                self.queued.discard(name)
                self.ready.discard(name)

    def _collect(self) -> None:
        for name, (fut, ready) in list(self.inflight.items()):
            if not fut.done():
                continue
            del self.inflight[name]
            try:
                found = fut.result()
            except Exception:  # not served: restore_command's own fetch reports it
                self.missing[name] = time.monotonic()
                walqueue.clear_absent(self.qdir, name)
                with contextlib.suppress(OSError):
                    os.unlink(walqueue.part_path(self.qdir, name))
                continue
            if found:
                self.queued.add(name)
                if ready:
                    self.ready.add(name)
                walqueue.clear_absent(self.qdir, name)
            else:
                self.missing[name] = time.monotonic()
                walqueue.mark_absent(self.qdir, name)

    def _taken(self) -> int:
        """NAME.ready files replay took (restore_command renamed them away), in order;
        how many."""
        gone = [n for n in self.ready if not os.path.exists(walqueue.ready_path(self.qdir, n))]
        for name in sorted(gone):
            self.ready.discard(name)
            self.queued.discard(name)
            walqueue.note_served(self.qdir, name, "queue")
            if self.taken is None or _order(name) > _order(self.taken):
                self.taken = name
        return len(gone)

    def position(self, want: tuple[str, int] | None) -> tuple[str, int] | None:
        """Where replay is: the later of walget's `.want` and the last NAME.ready taken."""
        if self.taken is None or want is None:
            return want
        return (self.taken, want[1]) if _order(self.taken) > _order(want[0]) else want

    def _ready_ok(self, name: str, seg_size: int) -> bool:
        """Segments only: history files are asked for a few times, and again after being
        taken; walget serves them from NAME. A guard file that appears after the start
        (never in pgvault's own restores, which write it first) is read then."""
        if self.guard is None and os.path.exists(
            os.path.join(self.datadir, tblspc_guard.GUARD_FILE)
        ):
            self.guard_ok, self.guard = _load_guard(self.datadir)
            self.guard_ok = self.guard_ok and self.guard is not None
        return (
            len(name) == 24
            and self.guard_ok
            and tblspc_guard.served_as_is(self.guard, name, seg_size)
        )

    def _wanted(self, name: str, now: float) -> bool | None:
        """True: fetch it now. False: nothing to do. None: found nowhere a moment ago."""
        if name in self.inflight:
            return False
        if name in self.queued:
            if os.path.exists(os.path.join(self.qdir, name)) or name in self.ready:
                return False
            self.queued.discard(name)  # taken as changed (walqueue.take dropped it)
        elif os.path.exists(os.path.join(self.qdir, name)):
            self.queued.add(name)  # published by the guard's fetch_next
            return False
        if now - self.missing.get(name, -RETRY_MISSING) < RETRY_MISSING:
            return None
        return True

    def step(self, want: str, seg_size: int) -> None:
        """One round (run() has collected finished fetches and taken files first, so
        `want` is replay's position now)."""
        self._forget_passed(want, seg_size)
        now = time.monotonic()
        todo = []
        at_end = False
        for name in self.window(want, seg_size):
            wanted = self._wanted(name, now)
            if wanted is None:
                at_end = True  # the end of WAL for now: nothing past it
                break
            if wanted:
                todo.append(name)
        if at_end:
            # what PostgreSQL asks for at the end of WAL: this timeline's history and
            # the next one's (the new timeline's number)
            tli = parse_name(want).timeline
            todo += [
                f"{t:08X}.history" for t in (tli, tli + 1) if self._wanted(f"{t:08X}.history", now)
            ]
            # PostgreSQL reads the last segment again when recovery ends: a NAME.ready is
            # gone once taken, so that one comes back as NAME (walget serves it)
            if want == self.taken and self._wanted(want, now):
                todo.append(want)
        for name in todo:
            if len(self.inflight) >= 2:
                break
            self.missing.pop(name, None)
            ready = name != self.taken and self._ready_ok(name, seg_size)
            fut = self.pool.submit(self.source.fetch, self.qdir, name, ready)
            self.inflight[name] = (fut, ready)

    def run(self) -> None:
        last = None
        last_change = time.monotonic()
        while not self.recovery_over() and owns_lock(self.qdir):
            self._collect()
            took = self._taken()
            want = self.position(walqueue.read_want(self.qdir))
            if want != last or took:
                last, last_change = want, time.monotonic()
            elif time.monotonic() - last_change > IDLE_EXIT:
                break
            if want is not None:
                self.step(*want)
            self._pause()

    def _pause(self) -> None:
        """Until a fetch finishes (the next one starts at once) or POLL seconds pass."""
        if self.inflight:
            wait([f for f, _ in self.inflight.values()], POLL, return_when=FIRST_COMPLETED)
        else:
            time.sleep(POLL)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._collect()
        for name in self.queued | set(self.missing):
            walqueue.drop(self.qdir, name)
            walqueue.clear_absent(self.qdir, name)
        for entry in os.scandir(self.qdir):  # its own NAME.ready files went with queued
            if entry.name.endswith(walqueue.PART) and not entry.name.startswith(walqueue.WANT):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _order(name: str) -> tuple[int, str]:
    """Replay order of two segment names: the segment number (its last 16 hex digits),
    then the timeline."""
    return int(name[8:], 16), name[:8]


def owns_lock(qdir: str) -> bool:
    try:
        with open(os.path.join(qdir, walqueue.LOCK)) as fh:
            return fh.read().strip() == str(os.getpid())
    except OSError:
        return False


def _take_lock(qdir: str) -> bool:
    lock = os.path.join(qdir, walqueue.LOCK)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if walqueue.running(qdir):
                return False
            with contextlib.suppress(OSError):
                os.unlink(lock)  # a dead prefetcher's
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def main(qdir: str, config: str | None, *, use_spool: bool) -> int:
    try:  # never re-creates a data directory removed meanwhile (only pg_wal's child)
        os.mkdir(qdir, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return 0  # the restore is gone
    if not _take_lock(qdir):
        return 0  # another call started it first
    try:
        prefetcher = Prefetcher(qdir, load_settings(config), config, use_spool)
        try:
            prefetcher.run()
        finally:
            prefetcher.close()
    finally:
        if owns_lock(qdir):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(qdir, walqueue.LOCK))
    return 0
