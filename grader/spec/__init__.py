"""Lab specs: loading YAML with line numbers, validating against the JSON Schema, and the frozen model."""
