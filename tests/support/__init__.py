"""Helpers shared by the tests: real servers on loopback, started and stopped by fixtures."""
