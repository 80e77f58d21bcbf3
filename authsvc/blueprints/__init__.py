"""Blueprints by audience: JSON API, well-known and health (pages and Google sign-in follow)."""
