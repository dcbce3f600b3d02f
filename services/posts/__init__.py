"""Posts: handlers (routes.py), SQL (repo.py), representations and validation (models.py)."""
