"""Linli notifications service."""
