"""The conformance runner: checks the running kernel against the spec."""
