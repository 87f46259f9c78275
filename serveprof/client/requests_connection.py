"""HTTP/1.1 requests through a ``requests.Session``: the REST client's ``library`` transport.

The same interface as ``http1.Http1Connection`` (``request``, ``connect``, ``close``),
so ``RestClient`` posts the same prepared body either way. It is the stack most REST
clients of TF Serving use, for comparing with the built-in connection or for servers
behind proxies and TLS set-ups that ``requests`` handles (environment proxies, CA
bundles). It costs more client CPU per request (docs/measurement.md, client cost).
"""

from __future__ import annotations

import requests


class RequestsConnection:
    def __init__(self, base_url: str, *, timeout_s: float | None = None, warm_path: str = "/"):
        self.base_url, self.timeout_s, self.warm_path = base_url.rstrip("/"), timeout_s, warm_path
        self._session: requests.Session | None = None

    def _open(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request and return ``(status, body)``; raises OSError (TimeoutError included)."""
        headers = {"Content-Type": content_type} if body is not None else None
        try:
            response = self._open().request(
                method, self.base_url + path, data=body, headers=headers, timeout=self.timeout_s
            )
        except requests.Timeout as error:
            raise TimeoutError(str(error)) from None
        except requests.RequestException as error:  # refused, reset, bad URL: an OSError, as Http1Connection raises
            raise ConnectionError(f"{type(error).__name__}: {error}") from None
        return response.status_code, response.content

    def connect(self) -> None:
        """Open a pooled connection now, so the first timed request does not pay for it."""
        # A GET of ``warm_path`` (the REST client gives its model's status path) opens the
        # keep-alive connection the session then reuses; any status will do.
        self.request("GET", self.warm_path)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> RequestsConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
