"""The engine: runs a spec's checks against a submission and collects results."""
