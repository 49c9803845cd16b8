"""GQL: a small parser from GqlQuery to the structured Query / AggregationQuery.

Covers the grammar clients use in practice:

    SELECT [DISTINCT] (* | __key__ | p, ... ) [DISTINCT ON (p, ...)] FROM kind
        [WHERE cond ((AND | OR) cond)*]      parentheses group; AND binds tighter
        [ORDER BY p [ASC|DESC], ...] [LIMIT [offset,] n] [OFFSET n]
    cond: p (= | < | <= | > | >= | !=) v | p [NOT] IN v | p IS NULL
          | p CONTAINS v | __key__ HAS ANCESTOR v
    v:    integer, double, 'string', "string", TRUE, FALSE, NULL, @name, @1,
          KEY(Kind, id-or-'name', ...), ARRAY(v, ...), BLOB('...'), DATETIME('iso')
    AGGREGATE COUNT(*) | COUNT_UP_TO(n) | SUM(p) | AVG(p) [AS alias], ... OVER ( SELECT ... )
    SELECT COUNT(*) [AS alias] FROM ...    (the short aggregation form)

Literals in conditions are refused unless allow_literals is set (production's rule).
Imports model/ only; everything else is the structured query's business.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from google.cloud.datastore_v1.types import query as query_types

from zonestore_node.model.errors import invalid
from zonestore_node.query import filters

QueryPb: Any = query_types.Query.pb()
AggregationQueryPb: Any = query_types.AggregationQuery.pb()
FilterPb: Any = query_types.Filter.pb()

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    | (?P<quoted>`(?:[^`]|``)*`)
    | (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
    | (?P<bind>@[A-Za-z0-9_$]+)
    | (?P<op><=|>=|!=|=|<|>|\(|\)|,|\*|\+)
    | (?P<name>[A-Za-z_$][A-Za-z0-9_$.]*)
    )""",
    re.VERBOSE,
)
_OPS = {
    "=": filters.EQUAL,
    "<": filters.LESS_THAN,
    "<=": filters.LESS_THAN_OR_EQUAL,
    ">": filters.GREATER_THAN,
    ">=": filters.GREATER_THAN_OR_EQUAL,
    "!=": filters.NOT_EQUAL,
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise invalid(f"GQL syntax error at offset {pos}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, gql: Any) -> None:
        self.gql = gql
        self.toks = _tokens(gql.query_string)
        self.i = 0

    # Token helpers ------------------------------------------------------------

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def keyword(self, *words: str) -> bool:
        """Consume the keywords if they come next (case-insensitive)."""
        for n, word in enumerate(words):
            tok = self.peek(n)
            if tok is None or tok[0] != "name" or tok[1].upper() != word:
                return False
        self.i += len(words)
        return True

    def symbol(self, sym: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == sym:
            self.i += 1
            return True
        return False

    def expect(self, sym: str) -> None:
        if not self.symbol(sym):
            raise invalid(f"GQL syntax error: expected {sym!r} near token {self.i}.")

    def expect_keyword(self, *words: str) -> None:
        if not self.keyword(*words):
            raise invalid(f"GQL syntax error: expected {' '.join(words)} near token {self.i}.")

    def name(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] not in ("name", "quoted"):
            raise invalid(f"GQL syntax error: expected a name near token {self.i}.")
        self.i += 1
        if tok[0] == "quoted":
            return tok[1][1:-1].replace("``", "`")
        return tok[1]

    def done(self) -> bool:
        return self.i >= len(self.toks)

    # Queries ----------------------------------------------------------------------

    def select(self) -> Any:
        q = QueryPb()
        self.expect_keyword("SELECT")
        distinct = self.keyword("DISTINCT")
        if self.keyword("ON"):
            raise invalid("GQL: use DISTINCT ON (...) after the projection.")
        if self.symbol("*"):
            pass
        else:
            while True:
                q.projection.add().property.name = self.name()
                if not self.symbol(","):
                    break
        if self.keyword("DISTINCT", "ON"):
            self.expect("(")
            while True:
                q.distinct_on.add().name = self.name()
                if not self.symbol(","):
                    break
            self.expect(")")
        elif distinct:
            for p in q.projection:
                q.distinct_on.add().name = p.property.name
        if self.keyword("FROM"):
            q.kind.add().name = self.name()
        if self.keyword("WHERE"):
            q.filter.CopyFrom(self.disjunction())
        if self.keyword("ORDER", "BY"):
            while True:
                order = q.order.add()
                order.property.name = self.name()
                order.direction = 2 if self.keyword("DESC") else 1
                if order.direction == 1:
                    self.keyword("ASC")
                if not self.symbol(","):
                    break
        if self.keyword("LIMIT"):
            first = self.integer()
            if self.symbol(","):
                q.offset = first
                q.limit.value = self.integer()
            else:
                q.limit.value = first
        if self.keyword("OFFSET"):
            q.offset = self.integer()
        return q

    def integer(self) -> int:
        tok = self.peek()
        if tok is not None and tok[0] == "num" and re.fullmatch(r"-?\d+", tok[1]):
            self.i += 1
            return int(tok[1])
        if tok is not None and tok[0] == "bind":
            self.i += 1
            value = self.binding(tok[1])
            if value.WhichOneof("value_type") == "integer_value":
                return int(value.integer_value)
        raise invalid("GQL: LIMIT and OFFSET need an integer.")

    def disjunction(self) -> Any:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _composite(filters.OR, parts)

    def conjunction(self) -> Any:
        parts = [self.condition()]
        while self.keyword("AND"):
            parts.append(self.condition())
        return parts[0] if len(parts) == 1 else _composite(filters.AND, parts)

    def condition(self) -> Any:
        if self.symbol("("):
            inner = self.disjunction()
            self.expect(")")
            return inner
        f = FilterPb()
        pf = f.property_filter
        pf.property.name = self.name()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in _OPS:
            self.i += 1
            pf.op = _OPS[tok[1]]
        elif self.keyword("IS", "NULL"):
            pf.op = filters.EQUAL
            pf.value.null_value = 0
            return f
        elif self.keyword("NOT", "IN"):
            pf.op = filters.NOT_IN
        elif self.keyword("IN"):
            pf.op = filters.IN
        elif self.keyword("CONTAINS"):
            pf.op = filters.EQUAL
        elif self.keyword("HAS", "ANCESTOR"):
            pf.op = filters.HAS_ANCESTOR
        else:
            raise invalid(f"GQL syntax error: expected an operator after {pf.property.name!r}.")
        self.value(pf.value, in_condition=True)
        return f

    # Values -----------------------------------------------------------------------

    def literal_allowed(self) -> None:
        if not self.gql.allow_literals:
            raise invalid("GQL literals are not allowed: use bindings or set allow_literals.")

    def value(self, target: Any, *, in_condition: bool = False) -> None:
        tok = self.peek()
        if tok is None:
            raise invalid("GQL syntax error: expected a value.")
        kind, text = tok
        if kind == "bind":
            self.i += 1
            target.CopyFrom(self.binding(text))
            return
        if in_condition:
            self.literal_allowed()
        self.i += 1
        if kind == "str":
            target.string_value = _unquote(text)
        elif kind == "num":
            if re.fullmatch(r"-?\d+", text):
                target.integer_value = int(text)
            else:
                target.double_value = float(text)
        elif kind == "name" and text.upper() in ("TRUE", "FALSE"):
            target.boolean_value = text.upper() == "TRUE"
        elif kind == "name" and text.upper() == "NULL":
            target.null_value = 0
        elif kind == "name" and text.upper() == "KEY":
            self.key(target.key_value)
        elif kind == "name" and text.upper() == "ARRAY":
            self.expect("(")
            target.array_value.SetInParent()
            if not self.symbol(")"):
                while True:
                    self.value(target.array_value.values.add())
                    if not self.symbol(","):
                        break
                self.expect(")")
        elif kind == "name" and text.upper() == "BLOB":
            self.expect("(")
            target.blob_value = self.string().encode()
            self.expect(")")
        elif kind == "name" and text.upper() == "DATETIME":
            self.expect("(")
            stamp = datetime.datetime.fromisoformat(self.string().replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.UTC)
            micros = int(stamp.timestamp()) * 1_000_000 + stamp.microsecond
            target.timestamp_value.seconds, rem = divmod(micros, 1_000_000)
            target.timestamp_value.nanos = rem * 1000
            self.expect(")")
        else:
            raise invalid(f"GQL syntax error: unexpected {text!r}.")

    def string(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] != "str":
            raise invalid("GQL syntax error: expected a string.")
        self.i += 1
        return _unquote(tok[1])

    def key(self, key: Any) -> None:
        self.expect("(")
        while True:
            if self.keyword("NAMESPACE"):
                self.expect("(")
                key.partition_id.namespace_id = self.string()
                self.expect(")")
            elif self.keyword("PROJECT"):
                self.expect("(")
                key.partition_id.project_id = self.string()
                self.expect(")")
            else:
                element = key.path.add()
                tok = self.peek()
                element.kind = self.string() if tok and tok[0] == "str" else self.name()
                self.expect(",")
                tok = self.peek()
                if tok is not None and tok[0] == "num":
                    self.i += 1
                    element.id = int(tok[1])
                else:
                    element.name = self.string()
            if not self.symbol(","):
                break
        self.expect(")")

    def binding(self, text: str) -> Any:
        ref = text[1:]
        if ref.isdigit():
            index = int(ref) - 1
            if not 0 <= index < len(self.gql.positional_bindings):
                raise invalid(f"GQL: no positional binding {text}.")
            param = self.gql.positional_bindings[index]
        else:
            if ref not in self.gql.named_bindings:
                raise invalid(f"GQL: no binding named {text}.")
            param = self.gql.named_bindings[ref]
        if param.WhichOneof("parameter_type") != "value":
            raise invalid(f"GQL: binding {text} must be a value here.")
        return param.value

    # Aggregations -------------------------------------------------------------------

    def aggregations(self, agg: Any) -> None:
        while True:
            a = agg.aggregations.add()
            if self.keyword("COUNT"):
                self.expect("(")
                self.expect("*")
                self.expect(")")
                a.count.SetInParent()
            elif self.keyword("COUNT_UP_TO"):
                self.expect("(")
                a.count.up_to.value = self.integer()
                self.expect(")")
            elif self.keyword("SUM") or self.keyword("AVG"):
                which = self.toks[self.i - 1][1].lower()
                self.expect("(")
                getattr(a, which).property.name = self.name()
                self.expect(")")
            else:
                raise invalid("GQL: expected COUNT, COUNT_UP_TO, SUM or AVG.")
            if self.keyword("AS"):
                a.alias = self.name()
            if not self.symbol(","):
                return


def _unquote(text: str) -> str:
    quote = text[0]
    body = text[1:-1].replace(quote * 2, quote)
    return re.sub(r"\\(.)", r"\1", body)


def _composite(op: int, parts: list[Any]) -> Any:
    f = FilterPb()
    f.composite_filter.op = op
    for part in parts:
        f.composite_filter.filters.add().CopyFrom(part)
    return f


def parse_query(gql: Any) -> Any:
    parser = _Parser(gql)
    query = parser.select()
    if not parser.done():
        raise invalid(f"GQL syntax error: unexpected input at token {parser.i}.")
    return query


def parse_aggregation(gql: Any) -> Any:
    parser = _Parser(gql)
    agg = AggregationQueryPb()
    if parser.keyword("AGGREGATE"):
        parser.aggregations(agg)
        parser.expect_keyword("OVER")
        parser.expect("(")
        agg.nested_query.CopyFrom(parser.select())
        parser.expect(")")
    else:
        parser.expect_keyword("SELECT")
        parser.aggregations(agg)
        nested = _Parser(gql)
        nested.toks = [("name", "SELECT"), ("op", "*"), *parser.toks[parser.i :]]
        agg.nested_query.CopyFrom(nested.select())
        parser.i = len(parser.toks) - (len(nested.toks) - nested.i)
    if not parser.done():
        raise invalid(f"GQL syntax error: unexpected input at token {parser.i}.")
    return agg
