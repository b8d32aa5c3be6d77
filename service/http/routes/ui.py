"""The web page under ``/ui/``: static HTML, CSS and JavaScript from ``service/http/ui/``.

The page is a thin client of the public API: it calls the same endpoints anyone can, with the
API key the reader types in (kept in ``sessionStorage``). These files themselves carry nothing
secret, so they load without the key (``service.http.middleware.is_open``); every call they make needs
it. Each answer carries a Content-Security-Policy that allows only this origin's scripts and
styles and no inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import FileResponse, RedirectResponse, Response

from service.http.errors import NotFound

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
ASSETS = (
    frozenset(path.name for path in UI_DIR.iterdir() if path.suffix in ASSET_TYPES) if UI_DIR.is_dir() else frozenset()
)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    if not (UI_DIR / name).is_file():  # an installation without the package data
        raise NotFound("This installation has no web page; the API is unaffected.")
    return FileResponse(UI_DIR / name, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui")
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/")
async def screen_page() -> FileResponse:
    return _page("index.html")


@router.get("/ui/jobs")
async def jobs_page() -> FileResponse:
    return _page("jobs.html")


@router.get("/ui/jobs/{job_id}")
async def job_page(job_id: str = PathParam(pattern=r"^[0-9a-f]{16}$")) -> FileResponse:
    return _page("job.html")


@router.get("/ui/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound("The page has no such file.")
    return FileResponse(UI_DIR / name, media_type=ASSET_TYPES[Path(name).suffix], headers=HEADERS)
