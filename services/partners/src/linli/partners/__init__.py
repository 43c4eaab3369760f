"""Linli partners service."""
