"""MONAI Label's FastAPI app with osteoscreen's error handling, served by
``monailabel start_server --uvicorn_app osteolabel.asgi:app`` (see osteolabel.serve).

What it adds to the stock app (0.8.5):
- bad requests get a 4xx with a one-line message instead of a 500 and a traceback: unknown
  model or strategy (404), unknown study (404), malformed label or parameters (400), a study
  that holds no screenable CT (422);
- /ohif/ serves nested assets (the stock route joins path parts with ``os.pathsep``).
"""

from __future__ import annotations

import json
import logging
import os
import re

from osteolabel import compat

compat.install()

from fastapi import Request  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse  # noqa: E402
from monailabel.app import app  # noqa: E402
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException  # noqa: E402
from monailabel.interfaces.utils.app import app_instance  # noqa: E402
from starlette.routing import Route  # noqa: E402

from osteoscreen.errors import InputError, NotScreenableError  # noqa: E402

__all__ = ["app"]

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> JSONResponse:
    log.warning("%d: %s", status, message)
    return JSONResponse({"detail": message}, status_code=status)


async def _monailabel_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status", None)
    msg = str(getattr(exc, "msg", exc))
    if status is None:
        error = getattr(exc, "error", None)
        status = 400 if error == MONAILabelError.INVALID_INPUT else 404 if "no such" in msg.lower() else 500
    return _error(int(status), msg)


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(400, str(exc))


async def _not_screenable(request: Request, exc: Exception) -> JSONResponse:
    return _error(422, f"not screenable: {exc}")


async def _bad_json(request: Request, exc: Exception) -> JSONResponse:
    return _error(400, f"malformed JSON in the request: {exc}")


app.add_exception_handler(MONAILabelException, _monailabel_error)
app.add_exception_handler(InputError, _input_error)
app.add_exception_handler(NotScreenableError, _not_screenable)
app.add_exception_handler(json.JSONDecodeError, _bad_json)

_NAMED = re.compile(r"^/(infer|train|activelearning|scoring)/([^/?]+)/?$")


@app.middleware("http")
async def _known_names(request: Request, call_next):  # type: ignore[no-untyped-def]
    """404 for a model, strategy or scoring method the app does not have, before any work."""
    m = _NAMED.match(request.url.path)
    if m and request.method == "POST":
        kind, name = m.groups()
        info = app_instance().info()
        section = {
            "infer": "models",
            "train": "trainers",
            "activelearning": "strategies",
            "scoring": "scoring",
        }[kind]
        if name not in info.get(section, {}):
            known = ", ".join(sorted(info.get(section, {}))) or "none"
            return _error(
                404,
                f"unknown {section[:-1] if section != 'scoring' else 'scoring method'} "
                f"{name!r} (known: {known})",
            )
    return await call_next(request)


def _ohif(request: Request):  # type: ignore[no-untyped-def]
    import monailabel.endpoints.ohif as ohif

    root = os.path.join(os.path.dirname(os.path.realpath(ohif.__file__)), "static", "ohif")
    path = request.path_params.get("path", "")
    file = os.path.realpath(os.path.join(root, path)) if path else os.path.join(root, "index.html")
    if not file.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(file):
        file = os.path.join(root, "index.html")  # the viewer's own routes (/ohif/viewer?...)
    return FileResponse(file)


app.router.routes.insert(0, Route("/ohif/{path:path}", _ohif, methods=["GET"], include_in_schema=False))
