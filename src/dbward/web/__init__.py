"""The web console: server-rendered pages (Jinja2 + htmx, vendored) and the SQL editor."""
