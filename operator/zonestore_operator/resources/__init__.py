"""Pure builders of the Kubernetes objects a Datastore owns. Each returns a plain dict,
ready for server-side apply; none does I/O. `desired_objects` is the whole set.

May import `zonestore_operator.model` only."""
