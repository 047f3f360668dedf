"""REST API routers, one per domain, mounted under /api/v1 by ``api/app.py``."""
