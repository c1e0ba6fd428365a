"""Errors of digest services; the API maps each to one status code."""

from agentrunner.errors import InvalidFields, ServiceError


class DigestInvalid(InvalidFields):
    """The digest cannot be saved as given."""

    noun = "digest"


class DeliveryStateConflict(ServiceError):
    """The delivery is not in a state that allows this."""

    status_code = 409
    code = "delivery_state"
