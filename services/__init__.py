"""The new Python service (aiohttp + asyncpg + redis.asyncio) that replaces the legacy Express app.

``python -m services`` runs it, configured by environment (settings.py); docs/API.md is its contract.
Layout: ``app.py`` builds the application and owns every long-lived resource; ``http.py`` routes like
Express and maps domain errors (``errors.py``) to responses in one middleware; ``context.py`` is what a
handler sees; ``auth/``, ``users/`` and ``posts/`` each hold handlers (``routes.py``, no SQL), SQL
(``repo.py``) and representations (``models.py``); ``migrate.py`` is ``strangler migrate``.
"""
