"""Errors that the server answers with a 4xx status (see osteolabel.asgi)."""

from __future__ import annotations

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException


class BadRequest(MONAILabelException):
    """The request cannot be served as given (400)."""

    status = 400

    def __init__(self, msg: str):
        super().__init__(MONAILabelError.INVALID_INPUT, msg)


class NotFound(BadRequest):
    """An unknown study, label or model (404)."""

    status = 404
