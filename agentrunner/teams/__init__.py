"""Teams (tenants): who acts in which team with which role, and the team management services and API.

The models (`Team`, `Membership`, `Role`) are in `agentrunner.models`. Every request to the API acts in one team
(`team_acting`): the one named by the `X-Team` header, or the user's only team. Every app's selectors take that
team and return only its objects; an object of another team answers 404, as one that does not exist.
"""
