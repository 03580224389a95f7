"""One error hierarchy: each domain error carries its HTTP status and a machine-readable code.

The API renders every one of them as {"error": code, "detail": message}; the CLI prints them.
"""


class DomainError(Exception):
    status_code = 400
    code = "error"

    def __init__(self, detail: str | list | dict):
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail = detail


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class InvalidInput(DomainError):
    """Bad input found past schema validation. `field` names where, e.g. `exclusions[2].when.tone`."""

    status_code = 422
    code = "invalid_input"

    def __init__(self, field: str, message: str):
        super().__init__([{"loc": field, "msg": message}])
        self.field = field
        self.message = message


class Unavailable(DomainError):
    status_code = 503
    code = "unavailable"


class BodyTooLarge(DomainError):
    status_code = 413
    code = "too_large"
