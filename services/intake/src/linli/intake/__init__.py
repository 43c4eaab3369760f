"""Linli intake: the demand side (needs, residents, ingress from other systems)."""
