"""Datastore's limits, as production (Firestore in Datastore mode) enforces them today.

The Google emulator is laxer. Sizes follow the storage-size page of the Datastore docs
where production measures with it (keys, composite index entries: `indexing`); the
entity limit is the serialized Entity, as the existing tests pin. `--legacy-limits`
(serve/run) restores the old 500-mutation cap per Commit for those who want it.
"""

MAX_ENTITY_BYTES = 1_048_572
# An unindexed string or blob value (its UTF-8 / raw bytes); indexed ones stop at 1,500.
MAX_UNINDEXED_VALUE_BYTES = 1_048_487
MAX_INDEXED_BYTES = 1_500
# The old limits page's cap on mutations per Commit; production no longer has one (only
# the request and transaction byte caps apply). Enforced only under --legacy-limits.
LEGACY_MAX_MUTATIONS = 500
MAX_LOOKUP_KEYS = 1_000
MAX_PATH_ELEMENTS = 100
# Entity values inside entity values, counted from the top-level entity's properties.
MAX_ENTITY_DEPTH = 20
MAX_KEY_STRING_BYTES = 1_500
# A key's storage size (namespace + path string sizes + 16, the storage-size page).
MAX_KEY_BYTES = 6 * 1024
MAX_NAMESPACE_BYTES = 100
MAX_DATABASE_ID_BYTES = 100
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# A transaction's writes all arrive in its one Commit: their sizes sum to at most this.
MAX_TRANSACTION_BYTES = 10 * 1024 * 1024
# An entity's composite index entries: their storage sizes in sum, and their number.
MAX_COMPOSITE_ENTRY_BYTES = 2 * 1024 * 1024
MAX_COMPOSITE_ENTRIES = 20_000
MAX_TRANSFORMS_PER_ENTITY = 500
# The Python client's channel keeps gRPC's 4 MiB receive limit; stay well under it.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_QUERY_BATCH = 300
MAX_ID = (1 << 63) - 1
TXN_MAX_LIFETIME_S = 270.0
TXN_MAX_IDLE_S = 60.0
