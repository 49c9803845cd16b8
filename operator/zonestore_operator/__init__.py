"""zonestore operator: reconciles a `Datastore` custom resource into a zone-spread replica group."""
