"""Linli package."""
