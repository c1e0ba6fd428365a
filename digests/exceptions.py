"""Errors of digest services; the API maps each to one status code."""

from runs.exceptions import RunError


class DigestInvalid(RunError):
    """The digest cannot be saved as given."""

    status_code = 400
    code = "invalid"

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("Invalid digest: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


class DeliveryStateConflict(RunError):
    """The delivery is not in a state that allows this."""

    status_code = 409
    code = "delivery_state"
