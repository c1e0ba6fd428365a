"""Django's model permissions, as the admin reads them: one rule for the API, the admin and the selectors."""

from django.contrib.auth import get_permission_codename


def model_permission(model, action: str) -> str:
    """The permission's full name, e.g. `flows.view_flow` for (Flow, "view")."""
    return f"{model._meta.app_label}.{get_permission_codename(action, model._meta)}"


def may_see(user, model) -> bool:
    """Whether `user` may read `model`'s rows: its view permission, or its change permission, as in the admin."""
    return user.has_perm(model_permission(model, "view")) or user.has_perm(model_permission(model, "change"))
