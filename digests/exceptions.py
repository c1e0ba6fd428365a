"""Errors of digest services; the API maps each to one status code."""

from agentrunner.errors import APIFieldNames, InvalidFields, ServiceError


class DigestInvalid(APIFieldNames, InvalidFields):
    """The digest cannot be saved as given."""

    noun = "digest"
    # The services' field names, as the API calls them (the model says agent_type, the API agent).
    api_fields = {"agent_type": "agent"}


class DigestNotFound(ServiceError):
    """No digest with that id."""

    status_code = 404
    code = "not_found"


class DeliveryNotFound(ServiceError):
    """No digest delivery with that id."""

    status_code = 404
    code = "not_found"


class DeliveryStateConflict(ServiceError):
    """The delivery is not in a state that allows this."""

    status_code = 409
    code = "delivery_state"
