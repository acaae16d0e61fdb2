"""The restore_command side of invariant 11: no replayed CREATE TABLESPACE may point a
restored cluster at a directory outside its own.

`pgvault restore pitr` (and every drill and table restore) writes `pgvault_tablespaces.json`
into the data directory before replay: which segments of the plan hold tablespace records
(from the catalog's pg_waldump facts, tied to the segment's bytes by its sha256), which
segments were catalogued before those facts existed, and where each tablespace goes.
`pgvault wal-restore` calls `apply()` on every segment it serves while that file exists:

- every CREATE TABLESPACE record in the segment is made "in place" (walrec.make_in_place)
  and `pg_tblspc/<oid>` is made a symlink to the mapped directory before PostgreSQL sees
  the record, so redo writes only there;
- a segment without facts (catalogued before them, or outside the plan) is scanned with
  pg_waldump first; a scan that fails aborts recovery (never "probably fine");
- a record that starts in this segment and continues into the next (pg_waldump shows it
  in neither) is read with the next segment fetched early, and patched across both.

Stdlib only: it runs inside restore_command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

from pgvault.walfile import parse_name, read_header, segment_name
from pgvault.walrec import (
    RM_TBLSPC_ID,
    XLOG_TBLSPC_CREATE,
    Segments,
    WalRecordError,
    lsn_text,
    make_in_place,
    parse_lsn,
    straddling_record,
)

GUARD_FILE = "pgvault_tablespaces.json"
GUARD_VERSION = 1
_LSN = re.compile(r"rmgr: Tablespace .*?lsn: ([0-9A-F]+/[0-9A-F]+),.*?desc: CREATE ")

# fetch_next(name) -> the path of `name`, verified, or None when it does not exist
FetchNext = Callable[[str], str | None]


class GuardError(Exception):
    """A tablespace record could not be made safe: recovery must stop here."""


def load(datadir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(datadir, GUARD_FILE)) as fh:
            guard: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GuardError(f"{GUARD_FILE} unreadable: {exc}") from exc
    if guard.get("version") != GUARD_VERSION:
        raise GuardError(f"{GUARD_FILE}: unknown version {guard.get('version')!r}")
    return guard


def _in_plan(guard: dict[str, Any], name: str, seg_size: int) -> bool:
    wal = parse_name(name)
    segno = wal.segno(seg_size)
    return name not in guard["unscanned"] and any(
        tli == wal.timeline and first <= segno <= last for tli, first, last in guard["ranges"]
    )


def _scan(path: str, name: str, tool: str) -> list[int]:
    """LSNs of the CREATE TABLESPACE records pg_waldump finds in one segment (it reads the
    position from the file name, so the file is linked under its own name first)."""
    scan_dir = tempfile.mkdtemp(prefix=".pgvault-scan-", dir=os.path.dirname(path) or ".")
    named = os.path.join(scan_dir, name)
    try:
        os.link(path, named)
        proc = subprocess.run(
            [tool, "--rmgr=Tablespace", named],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuardError(f"cannot scan for tablespace records: {exc}") from exc
    finally:
        shutil.rmtree(scan_dir, ignore_errors=True)
    if proc.returncode != 0 and "error in WAL record" not in proc.stderr:
        raise GuardError(f"pg_waldump failed: {proc.stderr.strip()[-200:]}")
    return [parse_lsn(m.group(1)) for m in _LSN.finditer(proc.stdout)]


def mapped_dir(guard: dict[str, Any], oid: int, location: str) -> str:
    by_oid: dict[str, str] = guard["map"]
    if str(oid) in by_oid:
        return by_oid[str(oid)]
    by_location: dict[str, str] = guard["by_location"]
    if location and location.rstrip("/") in by_location:
        return by_location[location.rstrip("/")]
    return os.path.join(guard["default_dir"], str(oid))


def link_tablespace(datadir: str, oid: int, target: str) -> None:
    """pg_tblspc/<oid> -> target (created 0700). An existing link must already agree."""
    os.makedirs(target, mode=0o700, exist_ok=True)
    link = os.path.join(datadir, "pg_tblspc", str(oid))
    if os.path.islink(link):
        if os.path.realpath(link) != os.path.realpath(target):
            raise GuardError(f"{link} points at {os.readlink(link)}, not at {target}")
        return
    if os.path.exists(link):
        raise GuardError(f"{link} exists and is not the mapped tablespace link")
    os.symlink(target, link)


def _patch(segs: Segments, lsn: int, guard: dict[str, Any], datadir: str) -> str:
    oid, location = make_in_place(segs, lsn)
    target = mapped_dir(guard, oid, location)
    link_tablespace(datadir, oid, target)
    return f"tablespace {oid} ({location or 'in place'}) -> {target}"


def apply(datadir: str, name: str, path: str, fetch_next: FetchNext) -> list[str]:
    """Make the segment at `path` safe to replay in `datadir`. Returns what was mapped."""
    guard = load(datadir)
    wal = parse_name(name)
    if guard is None or wal.type != "segment":
        return []
    if _nothing_to_do(guard, name, path):
        return []
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    seg_size = read_header(bytes(data[:64])).seg_size
    first_lsn = wal.start_lsn(seg_size)
    segs = Segments(first_lsn, seg_size, [data])
    pending = _apply_pending(segs, name, path)
    if _in_plan(guard, name, seg_size):
        lsns = [parse_lsn(x) for x in guard["segments"].get(name, [])]
        straddle_check = name in guard["straddles"]
    else:
        lsns = _scan(path, name, guard["pg_waldump"])
        straddle_check = True
    done = []
    try:
        done = [_patch(segs, lsn, guard, datadir) for lsn in lsns]
        if straddle_check:
            done += _straddle(
                segs, name=name, path=path, guard=guard, datadir=datadir, fetch_next=fetch_next
            )
            del segs.buffers[1:]
    except WalRecordError as exc:
        raise GuardError(str(exc)) from exc
    if done or pending:
        tmp = path + ".pgvault-guard"
        with open(tmp, "wb") as fh:
            fh.write(segs.buffers[0])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return done


def _nothing_to_do(guard: dict[str, Any], name: str, path: str) -> bool:
    """The common case, decided without reading the segment: in the plan, no tablespace
    record in it (the catalog's facts), none straddling into it, no pending patch. Exactly
    the segments for which the full reading below would find nothing and write nothing.
    The segment size is the file's (a verified copy of a whole segment); a size that is
    not a WAL segment size leaves the decision to the full reading (its header)."""
    if os.path.exists(_patch_file(path, name)):
        return False
    size = os.path.getsize(path)
    if size < 2**20 or size > 2**30 or size & (size - 1):
        return False
    return (
        _in_plan(guard, name, size)
        and not guard["segments"].get(name)
        and name not in guard["straddles"]
    )


def served_as_is(guard: dict[str, Any] | None, name: str, seg_size: int) -> bool:
    """Whether apply() will read and change nothing of NAME whenever it is served, so the
    prefetcher may publish it for restore_command's rename-only path (walqueue.READY):
    no guard file; a history file; or a segment in the plan without a tablespace record
    or a straddle check, whose predecessor is in the plan without a straddle check (only
    serving the predecessor can leave a pending patch for NAME: _straddle)."""
    wal = parse_name(name)
    if guard is None or wal.type != "segment":
        return True
    segno = wal.segno(seg_size)
    if segno == 0:
        return False
    prev = segment_name(wal.timeline, segno - 1, seg_size)
    return (
        _in_plan(guard, name, seg_size)
        and not guard["segments"].get(name)
        and name not in guard["straddles"]
        and _in_plan(guard, prev, seg_size)
        and prev not in guard["straddles"]
    )


def _patch_file(path: str, name: str) -> str:
    return os.path.join(os.path.dirname(path), ".pgvault-prefetch", name + ".tblspc-patch")


def _apply_pending(segs: Segments, name: str, path: str) -> bool:
    """Bytes of a straddling record, patched while the previous segment was served."""
    pending = _patch_file(path, name)
    try:
        with open(pending) as fh:
            offset, hexbytes = json.load(fh)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise GuardError(f"{pending} unreadable: {exc}") from exc
    patch = bytes.fromhex(hexbytes)
    segs.buffers[0][offset : offset + len(patch)] = patch
    return True


def _straddle(
    segs: Segments,
    *,
    name: str,
    path: str,
    guard: dict[str, Any],
    datadir: str,
    fetch_next: FetchNext,
) -> list[str]:
    found = straddling_record(segs.buffers[0], segs.seg_size)
    if found is None or found[1] not in (None, RM_TBLSPC_ID):
        return []
    wal = parse_name(name)
    nxt = segment_name(wal.timeline, wal.segno(segs.seg_size) + 1, segs.seg_size)
    nxt_path = fetch_next(nxt)
    if nxt_path is None:
        # the record never completes: PostgreSQL cannot replay it either, and a
        # recovery that ends here never sees its tablespace
        return []
    with open(nxt_path, "rb") as fh:
        original = fh.read()
    segs.buffers.append(bytearray(original))
    lsn = segs.first_lsn + found[0]
    head = segs.read(lsn, 18)
    if head[17] != RM_TBLSPC_ID or head[16] & 0xF0 != XLOG_TBLSPC_CREATE:
        return []
    done = _patch(segs, lsn, guard, datadir) + f" (record {lsn_text(lsn)} continues in {nxt})"
    changed = [i for i in range(min(len(original), 3 * 8192)) if original[i] != segs.buffers[1][i]]
    if changed:  # applied when `nxt` is served, whoever fetched it
        lo, hi = changed[0], changed[-1] + 1
        os.makedirs(os.path.dirname(_patch_file(path, nxt)), exist_ok=True)
        tmp = _patch_file(path, nxt) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump([lo, bytes(segs.buffers[1][lo:hi]).hex()], fh)
        os.replace(tmp, _patch_file(path, nxt))
    return [done]
