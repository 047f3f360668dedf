"""Offline verification of an audit trail: a journal file, an export, or the store's copy.

Reports, per chain, the first record that was altered, deleted, inserted or reordered, a
truncated tail (a checkpoint kept elsewhere names a record the trail no longer has), and any
checkpoint whose signature does not verify. Counterpart: ``audit/journal.py`` and
``audit/chain.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dbward.audit.chain import CHECKPOINT_TYPE, GENESIS, record_hash, verify_signature


class ProblemKind(StrEnum):
    ALTERED = "altered"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    BAD_CHECKPOINT = "bad-checkpoint"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Problem:
    chain: str
    seq: int | None
    kind: ProblemKind
    message: str


@dataclass
class ChainSummary:
    chain: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None


@dataclass
class VerifyReport:
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ChainState:
    summary: ChainSummary
    prev_hash: str | None = None
    prev_seq: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)
    broken: bool = False


def verify_lines(
    lines: Iterable[str],
    *,
    public_key: Ed25519PublicKey | None = None,
    external_checkpoints: Iterable[str] = (),
    allow_pruned_start: bool = False,
) -> VerifyReport:
    """Verify records given as canonical lines in stored order (chains may interleave)."""
    report = VerifyReport()
    parsed: dict[str, list[tuple[int, str, str, dict[str, Any]]]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec: dict[str, Any] = json.loads(line)
            chain = str(rec["chain"])
            seq = int(rec["seq"])
            prev = str(rec["prev"])
        except (ValueError, KeyError, TypeError):
            report.problems.append(
                Problem(
                    "?",
                    None,
                    ProblemKind.MALFORMED,
                    f"line {lineno} is not an audit record (bad JSON or missing chain/seq/prev)",
                )
            )
            continue
        parsed.setdefault(chain, []).append((seq, prev, record_hash(line), rec))
    states: dict[str, _ChainState] = {}
    for chain, recs in parsed.items():
        st = states[chain] = _ChainState(ChainSummary(chain, records=len(recs)))
        report.chains[chain] = st.summary
        counts = Counter(seq for seq, _, _, _ in recs)
        for seq, prev, h, rec in recs:
            _check_link(report, st, chain, seq, prev, counts, allow_pruned_start)
            if st.broken:
                break
            st.hashes[seq] = h
            st.prev_hash, st.prev_seq = h, seq
            s = st.summary
            s.first_seq = seq if s.first_seq is None else s.first_seq
            s.last_seq, s.last_hash = seq, h
            if rec.get("type") == CHECKPOINT_TYPE:
                _check_checkpoint(report, st, rec, public_key, in_chain=True)
                if st.broken:
                    break
    for line in external_checkpoints:
        if not line.strip():
            continue
        try:
            cp = json.loads(line)
        except ValueError:
            report.problems.append(
                Problem("?", None, ProblemKind.MALFORMED, "a checkpoint line is not valid JSON")
            )
            continue
        st_or_none = states.get(str(cp.get("chain")))
        if st_or_none is None:
            report.problems.append(
                Problem(
                    str(cp.get("chain")),
                    None,
                    ProblemKind.TRUNCATED,
                    f"chain {cp.get('chain')} has a signed checkpoint for seq {cp.get('covers_seq')} but no records at all",
                )
            )
            continue
        if st_or_none.broken:
            continue
        _check_checkpoint(report, st_or_none, cp, public_key, in_chain=False)
    if public_key is None:
        report.warnings.append("no public key given: checkpoint signatures were not checked")
    for st in states.values():
        if st.summary.checkpoints == 0 and st.summary.records:
            report.warnings.append(
                f"chain {st.summary.chain}: no signed checkpoint covers its records; a full rewrite would not be detected"
            )
    return report


def _check_link(
    report: VerifyReport,
    st: _ChainState,
    chain: str,
    seq: int,
    prev: str,
    counts: Counter[int],
    allow_pruned_start: bool,
) -> None:
    def fail(kind: ProblemKind, message: str, at: int | None = None) -> None:
        report.problems.append(Problem(chain, seq if at is None else at, kind, message))
        st.broken = True

    if st.prev_seq is None:
        if seq == 1 and prev != GENESIS:
            fail(
                ProblemKind.ALTERED,
                f"chain {chain}: the first record (seq 1) does not start from the genesis hash",
            )
        elif seq != 1 and not allow_pruned_start:
            kind = ProblemKind.REORDERED if counts[1] else ProblemKind.DELETED
            fail(kind, f"chain {chain}: the trail starts at seq {seq}, not seq 1 ({kind.value})")
        return
    expected = st.prev_seq + 1
    if seq == expected:
        if prev != st.prev_hash:
            if counts[seq] > 1:
                fail(
                    ProblemKind.INSERTED,
                    f"chain {chain}: a record was inserted at seq {seq} (two records carry seq {seq})",
                )
            else:
                fail(
                    ProblemKind.ALTERED,
                    f"chain {chain}: record seq {st.prev_seq} was altered (its hash no longer matches the link stored in seq {seq})",
                )
    elif seq > expected:
        if counts[expected]:
            fail(
                ProblemKind.REORDERED,
                f"chain {chain}: seq {seq} comes before seq {expected} (records reordered)",
            )
        else:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
            fail(
                ProblemKind.DELETED,
                f"chain {chain}: {missing} deleted (the trail jumps from seq {st.prev_seq} to {seq})",
                at=expected,
            )
    elif counts[seq] > 1:
        fail(
            ProblemKind.INSERTED,
            f"chain {chain}: a second record with seq {seq} was inserted after seq {st.prev_seq}",
        )
    else:
        fail(
            ProblemKind.REORDERED,
            f"chain {chain}: seq {seq} comes after seq {st.prev_seq} (records reordered)",
        )


def _check_checkpoint(
    report: VerifyReport, st: _ChainState, cp: dict[str, Any], key: Ed25519PublicKey | None, *, in_chain: bool
) -> None:
    chain = st.summary.chain
    try:
        covers_seq = int(cp["covers_seq"])
        covers_hash = str(cp["covers_hash"])
        sig = str(cp["signature"])
    except (KeyError, ValueError, TypeError):
        report.problems.append(
            Problem(
                chain,
                cp.get("seq"),
                ProblemKind.BAD_CHECKPOINT,
                f"chain {chain}: a checkpoint lacks its fields",
            )
        )
        st.broken = True
        return
    where = "in the trail" if in_chain else "kept beside the journal"
    if key is not None and not verify_signature(key, chain, covers_seq, covers_hash, sig):
        report.problems.append(
            Problem(
                chain,
                covers_seq,
                ProblemKind.BAD_CHECKPOINT,
                f"chain {chain}: the checkpoint {where} for seq {covers_seq} has an invalid signature (forged or signed with another key)",
            )
        )
        st.broken = True
        return
    actual = st.hashes.get(covers_seq)
    if actual is None:
        last = st.summary.last_seq or 0
        if covers_seq > last:
            report.problems.append(
                Problem(
                    chain,
                    last + 1,
                    ProblemKind.TRUNCATED,
                    f"chain {chain}: the trail ends at seq {last} but a signed checkpoint {where} covers seq {covers_seq}: "
                    f"records after seq {last} were removed",
                )
            )
            st.broken = True
        return
    if actual != covers_hash:
        report.problems.append(
            Problem(
                chain,
                covers_seq,
                ProblemKind.ALTERED,
                f"chain {chain}: records up to seq {covers_seq} differ from what the signed checkpoint {where} recorded (rewritten)",
            )
        )
        st.broken = True
        return
    if in_chain:
        st.summary.checkpoints += 1
        st.summary.last_checkpoint_seq = covers_seq
