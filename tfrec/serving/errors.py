"""Status codes of the TensorFlow Serving API: the gRPC code names and the HTTP status each maps to."""

from __future__ import annotations

# TF Serving's REST front (model_servers/http_server.cc, ToHTTPStatusCode): gRPC code -> HTTP status.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """An error with the gRPC status code name TF Serving would give (``NOT_FOUND``...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (TensorFlow's run on for pages), or its type's name."""
    text = (getattr(error, "message", None) or str(error)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:  # a failed tf.debugging assertion: its message, not "Graph execution error:"
        if line.startswith("assertion failed: [") and "]" in line:
            return line[len("assertion failed: ["):line.index("]")]
    return lines[0] if lines else type(error).__name__
