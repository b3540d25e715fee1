"""The page at ``/`` and its files: ``page.html``, its script ``page.js``, its style ``page.css`` and its
icon ``favicon.svg``, each a file of this package served as it is.

The page has no inline script or style, so its ``Content-Security-Policy`` lets it run only files of this
server (``'self'``, never ``'unsafe-inline'``), talk only to this server, load nothing from elsewhere (it
works offline) and never be framed. The files are revalidated on every load (``no-cache``) so that a
page and a script of two server versions never meet.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {
    "/": ("page.html", "text/html"),
    "/page.js": ("page.js", "text/javascript"),
    "/page.css": ("page.css", "text/css"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
"""Path → (file of this package, its media type)."""

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HEADERS = {"Content-Security-Policy": POLICY, "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def routes() -> list[Route]:
    """A ``GET`` route for each of :data:`FILES`, read once, answered with :data:`HEADERS`."""
    folder = resources.files("rnnmt.serving.http")

    def route(path: str, name: str, media_type: str) -> Route:
        body = folder.joinpath(name).read_bytes()

        async def endpoint(_request: Request) -> Response:
            return Response(body, media_type=media_type, headers=HEADERS)

        return Route(path, endpoint, methods=["GET"])

    return [route(path, name, media_type) for path, (name, media_type) in FILES.items()]
