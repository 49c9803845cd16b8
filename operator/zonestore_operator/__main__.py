"""`python -m zonestore_operator`: run the kopf operator with our handlers, watching all
namespaces. Environment:
  ZONESTORE_OPERATOR_STANDALONE=1   no peering (single replica, tests)
  ZONESTORE_OPERATOR_PRIORITY=N     peering priority (give each replica its own; equal
                                    priorities freeze each other)
  ZONESTORE_OPERATOR_NAMESPACE=ns   watch one namespace instead of all
  ZONESTORE_OPERATOR_LIVENESS=url   kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz
"""

from __future__ import annotations

import os
import random

import kopf

from zonestore_operator import handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    namespace = os.environ.get("ZONESTORE_OPERATOR_NAMESPACE")
    priority = os.environ.get("ZONESTORE_OPERATOR_PRIORITY")
    kopf.configure(verbose=bool(os.environ.get("ZONESTORE_OPERATOR_VERBOSE")))
    kopf.run(
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace else (),
        standalone=os.environ.get("ZONESTORE_OPERATOR_STANDALONE") == "1",
        priority=int(priority) if priority else random.randint(1, 2**30),
        peering_name="zonestore-operator",
        liveness_endpoint=os.environ.get("ZONESTORE_OPERATOR_LIVENESS"),
    )


if __name__ == "__main__":
    main()
