"""A request the server answered with an error, in TF Serving's own terms."""

from __future__ import annotations

from serveprof.errors import ServeprofError


class ServingRequestError(ServeprofError):
    """The server refused or failed a request.

    ``code`` is the gRPC status code name (``"NOT_FOUND"``) or, over REST, the HTTP
    status (``404``); ``message`` is the server's own text.
    """

    def __init__(self, code: str | int, message: str, target: str = ""):
        self.code = code
        self.message = message
        where = f" from {target}" if target else ""
        super().__init__(
            f"the server answered {code}{where}: {message}",
            "check the model name, signature and input against the model's metadata "
            "(GET /v1/models/<name>/metadata); the server log says more",
        )
