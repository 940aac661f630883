"""Verification of the audit hash chain.

The chain (see :mod:`cdss.audit.chain`) links every row to its predecessor, so a single pass in
``seq`` order detects any row that was edited, deleted, inserted or moved *without* recomputing
every later hash, and names the first bad ``seq``.

What a hash chain alone cannot detect
-------------------------------------
* **Tail truncation**: deleting the newest rows leaves a valid, shorter chain.
* **A full rewrite**: whoever can write the table can recompute every hash after the row they
  changed (the hash has no secret).

Both are caught by comparing with an *anchor* kept outside the database: a ``(seq, hash)`` pair
that was forwarded to the syslog audit record repository (every forwarded message carries its
``seq`` and ``hash``) or printed by an earlier ``cdss audit verify`` and stored elsewhere. Pass
anchors to :func:`verify_chain`; a missing anchored row (truncation) or a different hash at that
``seq`` (rewrite) fails verification.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.audit.chain import CHAINED_FIELDS, GENESIS_HASH, chain_hash
from cdss.db.models import AuditEvent

__all__ = ["Anchor", "ChainProblem", "ProblemKind", "VerifyReport", "parse_anchor", "verify_chain"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ProblemKind(StrEnum):
    """What is wrong at the first bad row."""

    EDITED = "edited"  # the row's content does not hash to its stored hash
    DELETED = "deleted"  # a gap in seq: rows before this one are missing
    LINK_BROKEN = "link_broken"  # prev_hash is not the previous row's hash: inserted / moved / removed rows
    REORDERED = "reordered"  # seq order differs from insertion (id) order
    BAD_START = "bad_start"  # the first row is not seq 1 with the genesis prev_hash
    TRUNCATED = "truncated"  # an anchored seq is missing (rows at the end were removed)
    ANCHOR_MISMATCH = "anchor_mismatch"  # the hash at an anchored seq differs (rewritten chain)


@dataclass(frozen=True)
class Anchor:
    """A ``(seq, hash)`` pair known from outside the database (syslog ARR, an earlier verify)."""

    seq: int
    hash: str


def parse_anchor(text: str) -> Anchor:
    """Parse ``SEQ:HASH`` (as printed by ``cdss audit verify``).

    Raises
    ------
    ValueError
        ``text`` is not ``<positive integer>:<64 lower-case hex digits>``.
    """
    seq_text, _, hash_text = text.strip().partition(":")
    if not seq_text.isdigit() or int(seq_text) < 1 or not _HEX64.fullmatch(hash_text.lower()):
        raise ValueError(f"anchor {text!r} is not SEQ:HASH (e.g. 1234:9f86d0…, 64 hex digits)")
    return Anchor(int(seq_text), hash_text.lower())


@dataclass(frozen=True)
class ChainProblem:
    """The first problem found: where (``seq``) and what."""

    seq: int | None
    kind: ProblemKind
    message: str


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_chain`.

    ``head_seq`` / ``head_hash`` describe the newest row *as found*; store them outside the
    database to anchor a later verification.
    """

    ok: bool
    events: int
    first_seq: int | None
    head_seq: int | None
    head_hash: str | None
    problem: ChainProblem | None = None
    anchors_checked: int = 0
    anchors: list[Anchor] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "first_seq": self.first_seq,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "anchors_checked": self.anchors_checked,
            "problem": None
            if self.problem is None
            else {"seq": self.problem.seq, "kind": self.problem.kind.value, "message": self.problem.message},
        }


def _rows(session: Session, batch: int) -> Iterator[AuditEvent]:
    last_seq: int | None = None
    while True:
        stmt = select(AuditEvent).order_by(AuditEvent.seq).limit(batch)
        if last_seq is not None:
            stmt = stmt.where(AuditEvent.seq > last_seq)
        rows = list(session.execute(stmt).scalars())
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq
        session.expunge_all()


def _fields(row: AuditEvent) -> dict[str, Any]:
    return {name: getattr(row, name) for name in CHAINED_FIELDS}


def verify_chain(session: Session, *, anchors: Iterable[Anchor] = (), batch: int = 2000) -> VerifyReport:
    """Walk the audit chain in ``seq`` order and report the first bad row.

    Parameters
    ----------
    session
        Open session (read only; the rows are expunged as the walk proceeds, so memory stays
        bounded for millions of rows).
    anchors
        ``(seq, hash)`` pairs kept outside the database; each must be present with that hash.
    batch
        Rows fetched per query.

    Returns
    -------
    VerifyReport
        ``ok`` is ``False`` when any check fails; ``problem`` names the first bad ``seq`` and
        what is wrong with it.
    """
    wanted: dict[int, str] = {a.seq: a.hash for a in anchors}
    report = VerifyReport(
        ok=True,
        events=0,
        first_seq=None,
        head_seq=None,
        head_hash=None,
        anchors=sorted((Anchor(s, h) for s, h in wanted.items()), key=lambda a: a.seq),
    )
    prev_hash = GENESIS_HASH
    prev_seq = 0
    prev_id: int | None = None
    for row in _rows(session, batch):
        report.events += 1
        if report.first_seq is None:
            report.first_seq = row.seq
        report.head_seq, report.head_hash = row.seq, row.hash
        if report.problem is not None:
            continue  # keep counting to report the head as found
        problem = _check_row(row, prev_seq, prev_hash, prev_id)
        if problem is None and row.seq in wanted and wanted[row.seq] != row.hash:
            problem = ChainProblem(
                row.seq,
                ProblemKind.ANCHOR_MISMATCH,
                f"seq {row.seq}: hash {row.hash[:16]}… differs from the anchored {wanted[row.seq][:16]}… "
                "(the chain was rewritten from this row or earlier)",
            )
        if row.seq in wanted:
            report.anchors_checked += 1
        if problem is not None:
            report.problem = problem
        prev_seq, prev_hash, prev_id = row.seq, row.hash, row.id
    if report.problem is None:
        missing = sorted(s for s in wanted if report.head_seq is None or s > report.head_seq)
        if missing:
            report.problem = ChainProblem(
                missing[0],
                ProblemKind.TRUNCATED,
                f"anchored seq {missing[0]} is missing: the chain ends at seq {report.head_seq or 0} "
                "(newest rows were removed)",
            )
    report.ok = report.problem is None
    return report


def _check_row(row: AuditEvent, prev_seq: int, prev_hash: str, prev_id: int | None) -> ChainProblem | None:
    seq = row.seq
    content_ok = chain_hash(row.prev_hash, _fields(row)) == row.hash
    if prev_seq == 0 and (seq != 1 or row.prev_hash != GENESIS_HASH):
        if seq != 1:
            return ChainProblem(
                seq,
                ProblemKind.BAD_START,
                f"the chain starts at seq {seq}, not 1: rows 1..{seq - 1} were deleted",
            )
        return ChainProblem(
            seq,
            ProblemKind.BAD_START,
            "seq 1 does not start from the genesis hash (the first row was replaced)",
        )
    if seq != prev_seq + 1 and prev_seq != 0:
        missing = seq - prev_seq - 1
        what = f"rows {prev_seq + 1}..{seq - 1}" if missing > 1 else f"row {prev_seq + 1}"
        return ChainProblem(seq, ProblemKind.DELETED, f"seq {seq} follows seq {prev_seq}: {what} deleted")
    if not content_ok:
        return ChainProblem(
            seq,
            ProblemKind.EDITED,
            f"seq {seq}: the stored hash does not match the row's content (a column was edited, "
            "or the row was given another seq)",
        )
    if row.prev_hash != prev_hash:
        return ChainProblem(
            seq,
            ProblemKind.LINK_BROKEN,
            f"seq {seq}: prev_hash is not the hash of seq {prev_seq} (a row before it was inserted, "
            "replaced or moved)",
        )
    if prev_id is not None and row.id < prev_id:
        return ChainProblem(
            seq,
            ProblemKind.REORDERED,
            f"seq {seq} was stored before seq {prev_seq} (row id {row.id} < {prev_id}): rows were reordered",
        )
    return None
