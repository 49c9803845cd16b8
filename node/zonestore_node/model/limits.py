"""Datastore's limits, as production enforces them (the Google emulator is laxer)."""

MAX_ENTITY_BYTES = 1_048_572
MAX_INDEXED_BYTES = 1_500
MAX_MUTATIONS = 500
MAX_LOOKUP_KEYS = 1_000
MAX_PATH_ELEMENTS = 100
# Entity values inside entity values, counted from the top-level entity's properties.
MAX_ENTITY_DEPTH = 20
MAX_KEY_STRING_BYTES = 1_500
MAX_NAMESPACE_BYTES = 100
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# The Python client's channel keeps gRPC's 4 MiB receive limit; stay well under it.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_QUERY_BATCH = 300
MAX_ID = (1 << 63) - 1
TXN_MAX_LIFETIME_S = 270.0
TXN_MAX_IDLE_S = 60.0
