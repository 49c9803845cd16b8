"""Typed views of the Datastore custom resource: the parsed, defaulted, validated spec
(`spec`) and the status the operator writes (`status`). Pure values: no I/O, no kopf, no
Kubernetes client."""
