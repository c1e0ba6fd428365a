"""Errors of digest services; the API maps each to one status code."""

from runs.exceptions import InvalidFields, RunError


class DigestInvalid(InvalidFields):
    """The digest cannot be saved as given."""

    noun = "digest"


class DeliveryStateConflict(RunError):
    """The delivery is not in a state that allows this."""

    status_code = 409
    code = "delivery_state"
