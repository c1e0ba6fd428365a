"""The digests API, one module per resource: `digests` (define them, preview the period so far), `deliveries`
(a digest's deliveries, send now, resend, mark sent), `examples` (what the OpenAPI document shows).

Django's model permissions decide who does what, as in the admin (agentrunner.api.ModelPermissions): a digest
and its deliveries and preview are read with `digests.view_digestsubscription` (they show recipients and
results), Send now is a change of the digest, and the decisions about a delivery need
`digests.change_digestdelivery`. Every write goes through `digests.services`.
"""
