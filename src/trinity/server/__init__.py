"""Trinity as a service: the HTTP API (``/v1``), live events over SSE, and the dashboard.

``create_app(settings)`` builds the FastAPI application; ``trinity serve`` runs it on uvicorn.
The API is a thin face of the :class:`~trinity.runtime.Runtime`'s operations, as the CLI is:
neither holds logic the other lacks.
"""

from trinity.server.app import create_app

__all__ = ["create_app"]
