"""Linli scheduling service."""
