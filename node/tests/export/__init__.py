"""Tests of the managed export format and its import/export commands."""
