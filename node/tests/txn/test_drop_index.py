"""DropIndexCommand (txn/apply.py `drop_index`): a composite index leaves the registry
and every entry of it goes, in every partition (deleted entities' history included);
other indexes keep theirs; an id is never given twice; the command survives the log."""

from __future__ import annotations

from pathlib import Path

from tests.query.world import World, entity, key
from zonestore_node.model import indexing
from zonestore_node.storage import keycodec
from zonestore_node.storage.engine import Family
from zonestore_node.txn import apply, command

A = indexing.CompositeDefinition(
    "Task", False, (indexing.Column("done"), indexing.Column("p", descending=True))
)
B = indexing.CompositeDefinition("Task", False, (indexing.Column("p"), indexing.Column("done")))


def entries(world: World, index_id: int) -> int:
    """Composite entries (every version) of `index_id`, over every partition."""
    it = world.engine.iterator(Family.INDEXES, upper_bound=keycodec.prefix_end(b"C"))
    it.seek(b"C")
    count = 0
    while it.valid():
        raw = it.key()
        pos = 1
        for _ in range(3):
            pos = keycodec.unescape(raw, pos)[1]
        if raw[pos : pos + 4] == index_id.to_bytes(4, "big"):
            count += 1
        it.next()
    return count


def drop(world: World, index_id: int) -> None:
    world.commit_ts += 10
    batch = world.engine.batch()
    apply.Applier()(world.store, command.DropIndexCommand(world.commit_ts, index_id), batch)
    world.engine.write(batch)


def test_a_dropped_index_loses_every_entry_and_its_id_is_never_given_again(
    tmp_path: Path,
) -> None:
    world = World(tmp_path / "db")
    try:
        for i in range(6):
            world.put(entity(key("Task", i + 1), done=i % 2 == 0, p=i))
            world.put(entity(key("Task", i + 1, namespace="ns"), done=True, p=i))
        world.create_index(A)
        world.create_index(B)
        world.delete(key("Task", 1, namespace="ns"))  # history in the index, too
        a, b = sorted(indexing.load_registry(world.engine).indexes, key=lambda i: i.index_id)
        assert entries(world, a.index_id) >= 13 and entries(world, b.index_id) >= 13
        generation = indexing.registry_generation(world.engine)

        drop(world, b.index_id)
        registry = indexing.load_registry(world.engine)
        assert [i.definition for i in registry.indexes] == [A]
        assert registry.generation != generation  # appliers reload their registry
        assert entries(world, b.index_id) == 0
        assert entries(world, a.index_id) >= 13  # untouched
        drop(world, b.index_id)  # again: nothing happens

        world.create_index(B)
        again = indexing.load_registry(world.engine).find(B)
        assert again is not None and again.index_id == b.index_id + 1
        assert entries(world, again.index_id) == 11  # backfilled anew: live entities only
    finally:
        world.close()


def test_the_drop_command_round_trips_through_the_log_format() -> None:
    cmd = command.DropIndexCommand(1234, 7)
    assert command.decode(cmd.encode()) == cmd
