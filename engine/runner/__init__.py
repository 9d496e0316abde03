"""The SpiffWorkflow runner: parsing, the restricted script engine, state (de)serialization, stepping."""
