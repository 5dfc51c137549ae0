"""The web dashboard: server-rendered pages (Jinja2), a small script for live updates over
the API's event streams, no build step."""
