"""GET /admin: the admin dashboard, one page of static files shipped in the package (it holds no data: every
figure it shows comes from /api/admin/*, called with the admin key the user signs in with)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from llmkit.core.auth import PUBLIC
from llmkit.core.http import ApiError, add_route
from llmkit.core.openapi import answer, openapi

# The page's files: name -> content type. Only these are served, so a path never reaches the file system.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "monitor.js": "text/javascript; charset=utf-8",
    "manage.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
INDEX = "index.html"
# No inline script or style, nothing from another origin, no framing: an injected string can run nothing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@cache
def static_file(name: str) -> bytes:
    """The bytes of one of the page's files, read once from the installed package."""
    return resources.files("llmkit.platform.admin").joinpath("static", name).read_bytes()


def _answer(body: bytes, content_type: str, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control}
    return web.Response(body=body, headers=headers, content_type=content_type.split(";")[0], charset="utf-8")


@openapi(tags=["admin"], responses={"200": answer("the dashboard's HTML page", media="text/html")})
async def admin_page(request: web.Request) -> web.Response:
    """The admin dashboard (sign in with an admin key; the page itself needs none)."""
    return _answer(static_file(INDEX), "text/html", "no-store")


@openapi(
    tags=["admin"],
    errors=[404],
    responses={"200": answer("one of the page's ES modules, or app.css", media="text/javascript")},
)
async def admin_asset(request: web.Request) -> web.Response:
    """One of the dashboard's ES modules or its style sheet."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no admin asset {name!r}; the page uses {', '.join(ASSETS)}")
    # no-cache: the browser revalidates, so a new release's script never runs with an old page.
    return _answer(static_file(name), ASSETS[name], "no-cache")


def add_routes(app: web.Application) -> None:
    """Serve the dashboard at /admin and its files under /admin/assets/."""
    add_route(app, "GET", "/admin", admin_page, scope=PUBLIC)
    add_route(app, "GET", "/admin/assets/{name}", admin_asset, scope=PUBLIC)
