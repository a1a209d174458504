"""Attack on the file journal's fast paths (entries encoded once by `Ledger.entry_json` and reused by
compaction, lines built by hand, `O_DSYNC` writes, the torn tail cut on reopen): generated entries
(non-ASCII, lone surrogates, JSON escapes, control characters, huge and negative integers, floats,
nested lists) survive journal, replay and compaction unchanged, the snapshot is byte-identical to a
fresh encoding, and a journal torn at every byte offset (what a SIGKILL mid-write leaves) replays
its whole records, continues its sequence after the cut, and compacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ledger import FileBackend, Ledger

TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(['"q"\\', "\u2028\x00\x1f", "\ud800", "\udfff\ud83d", "\u00e9\u6771", "007eJxTYLh"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
ENTRIES = st.dictionaries(TEXT, VALUES, max_size=4).map(lambda d: {"kind": "phone_number", **d})
ADDRESSES = st.one_of(
    st.sampled_from(["phone_number/+14155550100", "agent/a", "agent/\u00e9\ud800", 'agent/"q"\n']), TEXT.map("agent/".__add__)
)
OPS = st.lists(st.tuples(ADDRESSES, st.one_of(st.none(), ENTRIES)), min_size=1, max_size=8)


def _journal(backend: FileBackend, ledger: Ledger, ops: list[tuple[str, dict[str, Any] | None]], group: int) -> dict[str, Any]:
    """Append `ops` in groups of `group`, as the journal does (entries encoded by `entry_json`)."""
    model = dict(ledger.resources)
    for start in range(0, len(ops), group):
        records: list[dict[str, Any]] = []
        for address, entry in ops[start : start + group]:
            if entry is None:
                model.pop(address, None)
                ledger.resources.pop(address, None)
                records.append({"op": "drop", "address": address})
            else:
                model[address] = ledger.resources[address] = entry
                ledger.entry_json(address, entry)  # encoded ahead, as a worker does
                records.append({"op": "put", "address": address, "entry": entry})
        backend.append(records, ledger.entry_json)
    return model


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # types kept: 1 is not True


@settings(derandomize=True, max_examples=150, deadline=None)
@given(OPS, st.integers(1, 3))
def test_generated_entries_survive_journal_replay_and_compaction(tmp_path_factory: Any, ops: list[Any], group: int) -> None:
    path = tmp_path_factory.mktemp("j") / "state.json"
    backend = FileBackend(path)
    ledger = backend.load()
    backend.save(ledger, 0)
    model = _journal(backend, ledger, ops, group)
    replayed = FileBackend(path).load()
    assert _same(replayed.resources, model)
    again = FileBackend(path)
    loaded = again.load()
    serial = again.save(loaded, loaded.serial)  # compaction after a "crash": a fresh process
    assert not again.journal_path.exists()
    fresh = Ledger(loaded.lineage, serial, loaded.salt, json.loads(json.dumps(model)))
    assert path.read_bytes() == fresh.encode(serial), "the snapshot is what a fresh encoding writes"
    assert _same(FileBackend(path).load().resources, model)


def test_a_journal_torn_at_every_offset_replays_its_whole_records_and_goes_on(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    backend = FileBackend(origin / "state.json")
    ledger = backend.load()
    backend.save(ledger, 0)
    ops: list[tuple[str, dict[str, Any] | None]] = [
        ("agent/\u00e9", {"kind": "agent", "note": '\u2028\ud800 "q" \\', "n": -(10**25)}),
        ("phone_number/+14155550100", {"kind": "phone_number", "applied": {"label": "S\u00e4l\u00ebs"}, "f": 1.5e300}),
        ("agent/\u00e9", None),
        ("agent/b", {"kind": "agent", "list": [1, True, None, "x"]}),
    ]
    models = [{}]
    for op in ops:
        models.append(_journal(backend, ledger, [op], 1))
    journal = backend.journal_path.read_bytes()
    header_end = journal.index(b"\n") + 1
    ends = [i + 1 for i, byte in enumerate(journal) if byte == ord("\n")]  # the end of each line
    cases = 0
    for cut in range(header_end, len(journal) + 1):
        folder = tmp_path / f"cut{cut}"
        shutil.copytree(origin, folder)
        torn = folder / "state.json.journal"
        torn.write_bytes(journal[:cut])
        whole = sum(1 for end in ends[1:] if end <= cut)
        crashed = FileBackend(folder / "state.json")
        loaded = crashed.load()
        assert loaded.journaled == whole and _same(loaded.resources, models[whole]), cut
        crashed.append([{"op": "put", "address": "agent/after", "entry": {"kind": "agent", "cut": cut}}])
        resumed = FileBackend(folder / "state.json").load()
        assert resumed.journaled == whole + 1, cut
        assert _same(resumed.resources, {**models[whole], "agent/after": {"kind": "agent", "cut": cut}}), cut
        compactor = FileBackend(folder / "state.json")
        compactor.save(compactor.load(), 1)
        assert _same(FileBackend(folder / "state.json").load().resources, resumed.resources)
        shutil.rmtree(folder)
        cases += 1
    assert cases == len(journal) - header_end + 1
