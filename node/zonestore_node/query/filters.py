"""Filters: from the protobuf filter tree to branches of byte-interval constraints.

A query's filter is rewritten into disjunctive normal form: a list of `Branch`es (an OR
of ANDs; IN expands into one branch per value, as Datastore executes it). Within a
branch every constraint is over *encoded* bytes (`keycodec`'s index value encoding for
properties, the encoded key path for `__key__`), so a scan bound, a residual check on a
fetched entity, and the comparison of two results are all byte comparisons.

Per property, a branch keeps:
    eq       values that must each be present (EQUAL; several ANDed equalities on an
             array property may all match different elements, like a zig-zag join)
    ranges   half-open byte intervals one element must fall in (<, <=, >, >=, !=,
             NOT_IN, intersected). Ranges run over Datastore's total cross-type value
             order, as the legacy service (and the emulator) compare: null <
             int/timestamp < bool < string/bytes < double < geopoint < key, the order
             of the encodings' tag bytes. So `v > null` admits every non-null value
             (ndb's "is set" idiom) and `v < 3` admits null; != and NOT_IN admit every
             other value, null included. (Firestore native mode restricts a range to
             the operand's type; Datastore mode does not.)
and for the key, `key_ranges` over the encoded path (`__key__` filters and
HAS_ANCESTOR: an ancestor's subtree is the interval of paths starting with its prefix).

Imports model/ and storage.keycodec only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.model import indexing, keys
from zonestore_node.model.errors import invalid
from zonestore_node.storage import keycodec

KEY_PROPERTY = "__key__"
METADATA_KINDS = frozenset({"__namespace__", "__kind__", "__property__"})
MAX_DISJUNCTIONS = 30
MAX_IN_VALUES = 30
MAX_NOT_IN_VALUES = 10

LESS_THAN = 1
LESS_THAN_OR_EQUAL = 2
GREATER_THAN = 3
GREATER_THAN_OR_EQUAL = 4
EQUAL = 5
IN = 6
NOT_EQUAL = 9
HAS_ANCESTOR = 11
NOT_IN = 13
AND = 1
OR = 2

INEQUALITIES = (LESS_THAN, LESS_THAN_OR_EQUAL, GREATER_THAN, GREATER_THAN_OR_EQUAL)

Interval = tuple[bytes, bytes | None]
"""[lo, hi) over bytes; hi None is unbounded."""

ALL: list[Interval] = [(b"", None)]


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint intervals."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        a_hi, b_hi = a[i][1], b[j][1]
        if a_hi is None:
            hi = b_hi
        elif b_hi is None:
            hi = a_hi
        else:
            hi = min(a_hi, b_hi)
        if hi is None or lo < hi:
            out.append((lo, hi))
        if b_hi is None or (a_hi is not None and a_hi <= b_hi):
            i += 1
        else:
            j += 1
    return out


def contains(intervals: list[Interval], value: bytes) -> bool:
    return any(lo <= value and (hi is None or value < hi) for lo, hi in intervals)


def excluding(points: list[bytes]) -> list[Interval]:
    """Everything but the given whole encodings (prefix-free, so [v, prefix_end(v)))."""
    out: list[Interval] = []
    lo = b""
    for point in sorted(set(points)):
        if lo < point:
            out.append((lo, point))
        lo = keycodec.prefix_end(point)
    out.append((lo, None))
    return out


def value_range(op: int, encoded: bytes) -> list[Interval]:
    """The interval of encodings that `<op> encoded` admits, over the whole cross-type
    order (b"" is below every encoding, None above): index bounds, residual checks and
    composite columns all use these same intervals, so every plan agrees."""
    if op == LESS_THAN:
        return [(b"", encoded)]
    if op == LESS_THAN_OR_EQUAL:
        return [(b"", keycodec.prefix_end(encoded))]
    if op == GREATER_THAN:
        return [(keycodec.prefix_end(encoded), None)]
    return [(encoded, None)]


def key_range(op: int, path: bytes) -> list[Interval]:
    """Paths that `__key__ <op> key` admits (every key in one partition is comparable)."""
    after = keycodec.prefix_end(path)
    if op == LESS_THAN:
        return [(b"", path)]
    if op == LESS_THAN_OR_EQUAL:
        return [(b"", after)]
    if op == GREATER_THAN:
        return [(after, None)]
    return [(path, None)]


@dataclass(slots=True)
class PropertyConstraint:
    eq: list[bytes] = field(default_factory=list)
    ranges: list[Interval] | None = None

    def allowed(self, values: list[bytes]) -> list[bytes]:
        """The entity's values that can stand for this property in an index row."""
        out = values
        if self.eq:
            out = [v for v in out if v in self.eq]
        if self.ranges is not None:
            ranges = self.ranges
            out = [v for v in out if contains(ranges, v)]
        return out

    def matches(self, values: list[bytes]) -> bool:
        if any(v not in values for v in self.eq):
            return False
        if self.ranges is not None:
            ranges = self.ranges
            return any(contains(ranges, v) for v in values)
        return True


@dataclass(slots=True)
class Branch:
    """One conjunction of the query's filter in DNF."""

    properties: dict[str, PropertyConstraint] = field(default_factory=dict)
    key_ranges: list[Interval] = field(default_factory=lambda: list(ALL))
    # HAS_ANCESTOR: the ancestor's encoded path (`encode_path`, the deepest if several);
    # key_ranges already hold its subtree, this names it for an ancestor index.
    ancestor: bytes | None = None

    def constraint(self, name: str) -> PropertyConstraint:
        found = self.properties.get(name)
        if found is None:
            found = self.properties[name] = PropertyConstraint()
        return found

    def satisfiable(self) -> bool:
        if not self.key_ranges:
            return False
        return all(c.ranges is None or c.ranges for c in self.properties.values())

    def matches(self, values: dict[str, list[bytes]], path: bytes) -> bool:
        if not contains(self.key_ranges, path):
            return False
        return all(c.matches(values.get(name, [])) for name, c in self.properties.items())


@dataclass(frozen=True, slots=True)
class Atom:
    """One leaf filter after IN expansion: a property, an operator, encoded operands."""

    name: str
    op: int
    operands: tuple[bytes, ...]


@dataclass(slots=True)
class ParsedFilter:
    branches: list[Branch]
    inequality_properties: list[str]  # first-seen order
    equality_properties: set[str]  # EQUAL and IN: production refuses to project these


class FilterParser:
    """Parses one query's filter; `partition` is the query's (project, database, ns)."""

    def __init__(self, partition: keys.Partition, kindless: bool) -> None:
        self.partition = partition
        self.kindless = kindless
        self.inequalities: list[str] = []
        self.equalities: set[str] = set()
        self.not_equal_seen = False

    def parse(self, filter_pb: Any | None) -> ParsedFilter:
        if filter_pb is None:
            return ParsedFilter([Branch()], [], set())
        dnf = self._dnf(filter_pb)
        branches: list[Branch] = []
        for conjunction in dnf:
            branch = Branch()
            for atom in conjunction:
                self._apply(branch, atom)
            if branch.satisfiable():
                branches.append(branch)
        return ParsedFilter(branches, self.inequalities, self.equalities)

    def _dnf(self, filter_pb: Any) -> list[list[Atom]]:
        which = filter_pb.WhichOneof("filter_type")
        if which == "composite_filter":
            composite = filter_pb.composite_filter
            children = [self._dnf(child) for child in composite.filters]
            if not children:
                raise invalid("A composite filter must have at least one sub-filter.")
            if composite.op == OR:
                out = [conj for child in children for conj in child]
            elif composite.op == AND:
                out = [[]]
                for child in children:
                    out = [left + right for left in out for right in child]
                    _check_disjunctions(len(out))
            else:
                raise invalid("A composite filter must have an operator (AND or OR).")
            _check_disjunctions(len(out))
            return out
        if which == "property_filter":
            return self._atoms(filter_pb.property_filter)
        raise invalid("A filter must be a property filter or a composite filter.")

    def _atoms(self, pf: Any) -> list[list[Atom]]:
        name = pf.property.name
        op = pf.op
        if not name:
            raise invalid("A property filter must name a property.")
        if op == 0:
            raise invalid(f'The filter on "{name}" has no operator.')
        if self.kindless and name != KEY_PROPERTY:
            raise invalid("A kindless query can only filter on __key__.")
        value = pf.value
        if op == HAS_ANCESTOR:
            if name != KEY_PROPERTY:
                raise invalid("HAS_ANCESTOR applies to __key__ only.")
            return [[Atom(name, op, (self._key_path(value, "ancestor"),))]]
        if op in (IN, NOT_IN):
            if value.WhichOneof("value_type") != "array_value":
                raise invalid(
                    f'The {"IN" if op == IN else "NOT_IN"} filter on "{name}" needs an array value.'
                )
            elements = list(value.array_value.values)
            limit = MAX_IN_VALUES if op == IN else MAX_NOT_IN_VALUES
            if not elements:
                raise invalid(f'The filter on "{name}" needs a non-empty array.')
            if len(elements) > limit:
                raise invalid(
                    f'The filter on "{name}" has {len(elements)} values; at most {limit} '
                    "are allowed."
                )
            operands = tuple(self._operand(name, element) for element in elements)
            if op == IN:
                self.equalities.add(name)
                unique = list(dict.fromkeys(operands))
                _check_disjunctions(len(unique))
                return [[Atom(name, EQUAL, (operand,))] for operand in unique]
            self._note_not_equal(name)
            return [[Atom(name, NOT_IN, operands)]]
        if op not in (*INEQUALITIES, EQUAL, NOT_EQUAL):
            raise invalid(f'Unknown operator {op} in the filter on "{name}".')
        operand = self._operand(name, value)
        if op == EQUAL:
            self.equalities.add(name)
        elif op == NOT_EQUAL:
            self._note_not_equal(name)
        else:
            self._note_inequality(name)
        return [[Atom(name, op, (operand,))]]

    def _note_inequality(self, name: str) -> None:
        if name != KEY_PROPERTY and name not in self.inequalities:
            self.inequalities.append(name)

    def _note_not_equal(self, name: str) -> None:
        if self.not_equal_seen:
            raise invalid("A query can have at most one NOT_EQUAL or NOT_IN filter.")
        self.not_equal_seen = True
        self._note_inequality(name)

    def _operand(self, name: str, value: Any) -> bytes:
        if name == KEY_PROPERTY:
            return self._key_path(value, "__key__ filter")
        which = value.WhichOneof("value_type")
        if which in ("array_value", "entity_value"):
            raise invalid(f'The filter on "{name}" cannot compare with an {which}.')
        indexing.check_filter_value(name, value)
        encoded = indexing.encode_value(value, self.partition.project, self.partition.database)
        if encoded is None:
            raise invalid(f'The filter on "{name}" has no value.')
        return encoded

    def _key_path(self, value: Any, what: str) -> bytes:
        if value.WhichOneof("value_type") != "key_value":
            raise invalid(f"The {what} value must be a key.")
        key = type(value.key_value)()
        key.CopyFrom(value.key_value)
        p = self.partition
        if any(e.kind in METADATA_KINDS for e in key.path):
            # Metadata keys use reserved kinds, which normalize() refuses for entities.
            key.partition_id.project_id = key.partition_id.project_id or p.project
            key.partition_id.database_id = key.partition_id.database_id or p.database
        else:
            keys.normalize(key, p.project, p.database)
        if key.partition_id.namespace_id != p.namespace:
            raise invalid(
                f'The {what} key is in namespace "{key.partition_id.namespace_id}", '
                f'the query in "{p.namespace}".'
            )
        if what == "ancestor":
            return keycodec.encode_path_prefix(keys.path_of(key))
        return keycodec.encode_path(keys.path_of(key))

    def _apply(self, branch: Branch, atom: Atom) -> None:
        if atom.name == KEY_PROPERTY:
            if atom.op == HAS_ANCESTOR:
                full = atom.operands[0] + b"\x00"  # encode_path_prefix -> encode_path
                if branch.ancestor is None or len(full) > len(branch.ancestor):
                    branch.ancestor = full
            ranges = self._key_ranges(atom)
            branch.key_ranges = intersect(branch.key_ranges, ranges)
            return
        constraint = branch.constraint(atom.name)
        if atom.op == EQUAL:
            if atom.operands[0] not in constraint.eq:
                constraint.eq.append(atom.operands[0])
            return
        if atom.op in (NOT_EQUAL, NOT_IN):
            ranges = excluding(list(atom.operands))
        else:
            ranges = value_range(atom.op, atom.operands[0])
        constraint.ranges = (
            ranges if constraint.ranges is None else intersect(constraint.ranges, ranges)
        )

    @staticmethod
    def _key_ranges(atom: Atom) -> list[Interval]:
        operand = atom.operands[0]
        if atom.op == HAS_ANCESTOR:
            return [(operand, keycodec.prefix_end(operand))]
        if atom.op == EQUAL:
            return [(operand, keycodec.prefix_end(operand))]
        if atom.op in (NOT_EQUAL, NOT_IN):
            return excluding(list(atom.operands))
        return key_range(atom.op, operand)


def _check_disjunctions(count: int) -> None:
    if count > MAX_DISJUNCTIONS:
        raise invalid(
            f"The filter expands to {count} disjunctions; at most {MAX_DISJUNCTIONS} are allowed."
        )


def cross(lists: list[list[bytes]]) -> list[tuple[bytes, ...]]:
    return list(itertools.product(*lists))
