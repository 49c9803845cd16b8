"""What can go wrong in point-in-time restore, said out loud (issue 16).

- A restored folder served with another --node-id (or the default one) is refused at
  start with one line naming both ids and the flag; a replica outside its folder's
  configuration that a leader could still add starts, says so in its log and in
  `zonestore status`; a replica joining the restored group with --join is unaffected.
- A gap in the archive (a missing middle segment): restoring to the latest, or to a
  time after the gap, is refused naming the missing indexes and the last restorable
  time; restoring to that time works and holds exactly the commits at or before it.
- A segment whose content is not what its name says, or commits stamped out of order
  (two histories in one archive folder), are refused naming the segment; a restore to
  the latest that finds no archive says so.

The archive and backups come from a real node (`zonestore serve --archive-to`, `zonestore
backup create`); the planner's refusals are also checked on a file:// store holding a
manifest and segment names only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backup import history, support
from tests.backup.support import ok, zs
from tests.harness import NodeProcess, free_port
from zonestore_node.backup import archive, catalog, objstore, restore
from zonestore_node.raft.messages import EntryType
from zonestore_node.replica.group import COMMIT_PREFIX
from zonestore_node.txn.command import CommitCommand

IDS = range(1, 21)
REFUSED_WITHIN_S = 60


@dataclass(slots=True)
class Source:
    """A file:// destination holding one base backup and, after its index, at least three
    archived segments of one node's group; the history of every commit."""

    folder: Path
    writes: history.History
    manifest: catalog.Manifest
    after: list[archive.SegmentInfo]  # the chain after the backup's index, in order

    def copy(self, to: Path) -> tuple[str, objstore.ObjectStore]:
        shutil.copytree(self.folder, to)
        return to.as_uri(), objstore.open_store(to.as_uri())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("source")
    folder = root / "backups"
    url = folder.as_uri()
    node = NodeProcess(
        root / "node",
        node_id="solo-0",
        extra=["--archive-to", url, "--archive-max-delay-seconds", "0.3"],
    )
    node.start()
    store = objstore.open_store(url)
    writes = history.History()
    try:
        writes.write(node, IDS, 10)
        ok(zs("backup", "create", "--admin", node.admin_addr, "--to", url))
        # Three rounds, each archived before the next starts: a segment (at least) each.
        for _ in range(3):
            writes.write(node, IDS, 10)
            history.wait_archived(store, "", writes.events[-1][0])
    finally:
        node.stop()
    [listed] = support.backup_ids(url)["backups"]
    manifest = catalog.read_manifest(store, listed["id"])
    segments = archive.list_segments(store, manifest.group_id)
    after, _ = restore.chain(segments, manifest.applied_index)
    assert len(after) >= 3, f"want three segments after the backup: {after}"
    assert max(s.last_ts for s in after) == writes.events[-1][0]
    return Source(folder, writes, manifest, after)


def restore_cli(url: str, data: Path, *when: str, node_id: str = "restored-0") -> Any:
    return zs("restore", "--from", url, *when, "--data-dir", str(data), "--node-id", node_id)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit status 1)."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def served_state(root: Path, ids: list[int]) -> dict[int, tuple[int, str]]:
    node = support.serve_restored(root)
    try:
        return history.read_state(node, ids)
    finally:
        node.stop()


# The archive: a gap ---------------------------------------------------------------------


def test_a_missing_middle_segment_refuses_the_latest_naming_the_gap_and_the_time_that_works(
    source: Source, tmp_path: Path
) -> None:
    url, store = source.copy(tmp_path / "backups")
    before, lost, later = source.after[0], source.after[1], source.after[-1]
    store.delete(lost.key)
    last_good = catalog.rfc3339(before.last_ts)

    for when in (["--to-latest"], []):  # --to-latest is also the default
        line = refusal(restore_cli(url, tmp_path / "latest" / "data", *when))
        assert f"archive of group default has a gap after index {before.last}" in line, line
        assert f"(commit time {last_good})" in line, line
        assert f"indexes {lost.first}..{lost.last} are missing" in line, line
        assert f"--to-time {last_good}" in line, line
        assert not (tmp_path / "latest" / "data" / "db").exists(), "a partial restore was left"

    # A time after the gap, or inside it (after the last commit before it), is refused too.
    for target in (later.last_ts, before.last_ts + 1):
        line = refusal(restore_cli(url, tmp_path / "after", "--to-time", catalog.rfc3339(target)))
        assert f"gap after index {before.last}" in line and f"--to-time {last_good}" in line

    # The time it suggests restores exactly the commits at or before it.
    out = ok(restore_cli(url, tmp_path / "suggested" / "data", "--to-time", last_good))
    assert f"(index {before.last})" in out, out
    expected = source.writes.state_at(before.last_ts)
    assert expected != source.writes.state_at(later.last_ts), "the gap lost nothing?"
    got = served_state(tmp_path / "suggested", source.writes.ids)
    assert got == expected


def test_the_planner_refuses_a_gap_on_a_store_holding_only_names(tmp_path: Path) -> None:
    store = objstore.open_store((tmp_path / "names").as_uri())
    manifest = catalog.Manifest("20261206T070000Z-0000aaaa", "g-1", 100, 1_000, files=())
    store.put_bytes(catalog.manifest_key(manifest.backup_id), manifest.to_json())
    for first, last, last_ts in ((90, 120, 1_200), (121, 150, 1_500), (181, 200, 2_000)):
        store.put_bytes(archive.segment_key("g-1", first, last, last_ts), b"-")

    with pytest.raises(catalog.BackupError) as latest:
        restore.plan(store, "", None)
    text = str(latest.value)
    assert "archive of group g-1 has a gap after index 150" in text, text
    assert "indexes 151..180 are missing" in text, text
    assert f"--to-time {catalog.rfc3339(1_500)}" in text, text
    assert f"up to {catalog.rfc3339(2_000)}" in text, text
    with pytest.raises(catalog.BackupError, match="gap after index 150"):
        restore.plan(store, "", 1_501)

    fits = restore.plan(store, "", 1_500)
    assert [(s.first, s.last) for s in fits.segments] == [(90, 120), (121, 150)]
    assert (fits.target_ts, fits.reach_ts, fits.notes) == (1_500, 1_500, [])

    # Filled: the latest goes to the end, no note.
    store.put_bytes(archive.segment_key("g-1", 151, 180, 1_800), b"-")
    whole = restore.plan(store, "", None)
    assert whole.segments[-1].last == 200 and whole.reach_ts == 2_000 and not whole.notes
    assert restore.gap(whole.segments, 201, 2_000) is None


def test_the_planner_notes_a_latest_without_archive_and_backups_of_two_groups(
    tmp_path: Path,
) -> None:
    store = objstore.open_store((tmp_path / "names").as_uri())
    for backup_id, group, ts in (("20261206T070000Z-0000aaaa", "g-1", 1_000),
                                 ("20261206T080000Z-0000bbbb", "g-2", 2_000)):  # fmt: skip
        manifest = catalog.Manifest(backup_id, group, 100, ts, files=())
        store.put_bytes(catalog.manifest_key(backup_id), manifest.to_json())
    store.put_bytes(archive.segment_key("g-1", 101, 150, 1_500), b"-")

    latest = restore.plan(store, "", None)
    assert latest.manifest.group_id == "g-2"
    [groups, no_archive] = latest.notes
    assert "backups of 2 groups (g-1, g-2)" in groups and "--backup ID" in groups
    assert "no segment of group g-2 after index 100" in no_archive, no_archive
    assert "archive/g-2/" in no_archive
    # Named, one backup: no note about groups; its archive is there.
    chosen = restore.plan(store, "20261206T070000Z-0000aaaa", None)
    assert chosen.notes == [] and chosen.reach_ts == 1_500


def test_a_latest_restore_that_finds_no_archive_says_the_state_is_the_backups_own(
    source: Source, tmp_path: Path
) -> None:
    url, store = source.copy(tmp_path / "backups")
    for segment in archive.list_segments(store, ""):
        store.delete(segment.key)
    out = ok(restore_cli(url, tmp_path / "r" / "data", "--to-latest"))
    assert "+ 0 archived commits" in out, out
    assert re.search(r"^note: the archive holds no segment of group default after index", out, re.M)
    assert catalog.rfc3339(source.manifest.commit_ts) in out.splitlines()[-1]


# The archive: segments that are not what they say ---------------------------------------


def test_a_segment_holding_other_indexes_than_its_name_is_refused_named(
    source: Source, tmp_path: Path
) -> None:
    url, store = source.copy(tmp_path / "backups")
    first, second = source.after[0], source.after[1]
    store.put_bytes(second.key, store.get_bytes(first.key))  # a misnamed upload
    line = refusal(restore_cli(url, tmp_path / "r" / "data"))
    assert second.key in line, line
    assert f"its name says indexes {second.first}..{second.last}" in line, line
    assert f"its header {first.first}..{first.last}" in line, line
    assert not (tmp_path / "r" / "data" / "db").exists()


def test_commits_stamped_out_of_order_two_histories_in_one_folder_are_refused(
    source: Source, tmp_path: Path
) -> None:
    url, store = source.copy(tmp_path / "backups")
    second = source.after[1]
    # Another group without a group id archived the same indexes, with older commits.
    foreign = [
        [i, 1, int(EntryType.NORMAL), COMMIT_PREFIX + CommitCommand(1_000 + i, ()).encode()]
        for i in range(second.first, second.last + 1)
    ]
    store.put_bytes(second.key, archive.encode_segment("", foreign, 1_000 + second.last))
    line = refusal(restore_cli(url, tmp_path / "r" / "data"))
    assert second.key in line and "mixes two histories" in line, line


def test_a_segment_of_another_group_in_the_backups_folder_is_refused(
    source: Source, tmp_path: Path
) -> None:
    url, store = source.copy(tmp_path / "backups")
    second = source.after[1]
    _, entries = archive.decode_segment(store.get_bytes(second.key), second.key)
    store.put_bytes(second.key, archive.encode_segment("g-other", entries, second.last_ts))
    line = refusal(restore_cli(url, tmp_path / "r" / "data"))
    assert "belongs to group g-other, not to the backup's group default" in line, line


# The node: a restored folder served under another id -------------------------------------


def test_a_restore_killed_before_it_finished_leaves_nothing_the_next_one_keeps(
    source: Source, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    leftover = data / ".restore-0badc0de"  # as a restore killed mid-download leaves it
    leftover.mkdir(parents=True)
    (leftover / "000012.sst").write_bytes(b"half a file")
    ok(restore_cli(source.folder.as_uri(), data))
    assert sorted(p.name for p in data.iterdir()) == ["db"]
    assert served_state(tmp_path, source.writes.ids) == source.writes.state_at(
        source.writes.events[-1][0]
    )


@pytest.fixture
def restored(source: Source, tmp_path: Path) -> Path:
    """A fresh restore of the intact source for `restored-0`: <root>/data."""
    root = tmp_path / "restored"
    out = ok(restore_cli(source.folder.as_uri(), root / "data"))
    assert "one voter restored-0" in out
    return root


def refused_at_start(node: NodeProcess) -> str:
    """Start `node`; it must exit 2 by itself, soon, with one line on its console."""
    offset = node.log_path.stat().st_size if node.log_path.exists() else 0
    node.spawn()
    assert node.proc is not None
    try:
        code = node.proc.wait(timeout=REFUSED_WITHIN_S)
    except subprocess.TimeoutExpired:
        node.kill()
        pytest.fail(f"{node.node_id} did not refuse to start: {node.log_tail()}")
    assert code == 2, node.log_tail()
    printed = node.log_path.read_bytes()[offset:].decode().splitlines()
    [line] = [x for x in printed if x.startswith("zonestore serve")]
    return line


def test_a_restored_folder_served_with_another_node_id_is_refused_naming_both_ids(
    restored: Path, source: Source
) -> None:
    line = refused_at_start(NodeProcess(restored, node_id="other-0"))
    assert "this replica (other-0) is not a member" in line, line
    assert "(voters: restored-0)" in line, line
    assert "was restored for --node-id restored-0" in line, line
    # With a peer address too: a new group nobody else can add it to.
    peer = ["--peer-addr", f"127.0.0.1:{free_port()}"]
    line = refused_at_start(NodeProcess(restored, node_id="other-0", extra=peer))
    assert "a restored folder is a new group that only its own voter can serve" in line, line
    assert "was restored for --node-id restored-0" in line, line
    # The refusals changed nothing: the right id serves every restored commit.
    got = served_state(restored, source.writes.ids)
    assert got == source.writes.state_at(source.writes.events[-1][0])


def test_a_served_folder_under_another_id_warns_and_status_says_not_a_member(
    restored: Path,
) -> None:
    node = support.serve_restored(restored)  # served once: no longer a fresh restore
    node.stop()
    peer = ["--peer-addr", f"127.0.0.1:{free_port()}"]
    other = NodeProcess(restored, node_id="other-0", extra=peer)
    other.spawn()
    try:
        deadline = time.monotonic() + 30
        while (status := other.admin("GET", "/admin/status"))[0] != 200:
            assert other.alive(), other.log_tail()
            assert time.monotonic() < deadline, other.log_tail()
            time.sleep(0.1)
        assert status[1]["member"] is False and status[1]["role"] == "learner", status
        text = other.log_path.read_text()
        assert "replica.not_a_member node=other-0 voters=restored-0" in text, text
        assert "zonestore members add other-0" in text and "--node-id restored-0" in text
        shown = ok(zs("status", "--admin", other.admin_addr))
        assert "NOT A MEMBER: other-0 is not in the configuration" in shown, shown
        assert "(voters: restored-0)" in shown, shown
    finally:
        other.stop()
    # Without --peer-addr no leader could ever reach it: refused.
    line = refused_at_start(NodeProcess(restored, node_id="other-0"))
    assert "without --peer-addr no leader can reach it" in line, line
    assert "with --node-id restored-0" in line, line


def test_a_replica_joining_the_restored_group_with_join_is_added_as_usual(
    restored: Path, tmp_path: Path, source: Source
) -> None:
    first_peer, joiner_peer = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    first = NodeProcess(restored, node_id="restored-0", extra=["--peer-addr", first_peer])
    first.start()
    # As the README's "Adding a replica" says: no --initial-cluster, the joiner learns
    # the voter's address from its hello (a founding member's address is in no log entry).
    joiner = NodeProcess(tmp_path / "joiner", node_id="joiner-1",
                         extra=["--peer-addr", joiner_peer, "--join"])  # fmt: skip
    try:
        joiner.spawn()
        deadline = time.monotonic() + 30
        while joiner.admin("GET", "/admin/status")[0] != 200:
            assert joiner.alive(), joiner.log_tail()
            assert time.monotonic() < deadline, joiner.log_tail()
            time.sleep(0.1)
        assert "replica.not_a_member" not in joiner.log_path.read_text()
        ok(zs("members", "add", "joiner-1", joiner_peer, "--admin", first.admin_addr))
        joiner.wait_ready(60)
        deadline = time.monotonic() + 30
        while not (status := joiner.admin("GET", "/admin/status")[1])["member"]:
            assert time.monotonic() < deadline, json.dumps(status)
            time.sleep(0.1)
        assert status["role"] == "learner", status
        assert history.read_state(joiner, source.writes.ids) == source.writes.state_at(
            source.writes.events[-1][0]
        )
        ok(zs("members", "promote", "joiner-1", "--admin", first.admin_addr))
        members = {m["id"]: m for m in first.admin("GET", "/admin/status")[1]["members"]}
        assert members["joiner-1"]["role"] == "voter", members
    finally:
        joiner.stop()
        first.stop()
