"""The admin's home page: a dashboard of runs, agents, workers, LLM providers, budgets and schedules.

The top layer: it reads every app (through their selectors) and no app imports it.
"""
