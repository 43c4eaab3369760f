"""Linli staff console."""
