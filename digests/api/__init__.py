"""The digests API, one module per resource: `digests` (define them, preview the period so far), `deliveries`
(a digest's deliveries, send now, resend, mark sent), `examples` (what the OpenAPI document shows).

Everything here acts in one team, the acting team (agentrunner.api.TeamPermissions): its members read its
digests, their deliveries and previews (viewer; they show recipients and results of the team's runs), its editors
create, change and delete them, send them now and decide about a delivery (resend, mark sent). A digest ranks its
team's runs only, of one of the team's flows or schedules or of an agent; another team's digest or delivery
answers the 404 of one that does not exist, another team's flow or schedule the 400 of one that does not exist.
Every write goes through `digests.services`.
"""
