"""Reliability suite (issue #7): crashes, hostile files, fuzzed arguments, resource limits."""
