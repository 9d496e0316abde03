"""One module per resource: definitions, instances, tasks, health."""
