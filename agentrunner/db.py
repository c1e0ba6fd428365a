"""Saving rows whose `name` is unique, for the services of every app."""

from __future__ import annotations

from django.db import IntegrityError, models, transaction

from agentrunner.errors import InvalidFields


def save_unique_name(instance: models.Model, *, invalid: type[InvalidFields], within: str = "") -> None:
    """Save `instance`, whose `name` no other row may have; a taken name is `invalid` on the field `name`.

    With `within` (a foreign key, e.g. "team"), the name is unique among the rows with the same value of that
    field only, and the message names nothing outside them. The name is checked before saving, and again if the
    database refuses the row: a concurrent request may take it between the check and the save. Any other refusal
    (a check constraint) is not about the name and stays an IntegrityError.
    """
    model = type(instance)
    others = model._default_manager.all()
    if instance.pk is not None:
        others = others.exclude(pk=instance.pk)
    if within:
        others = others.filter(**{f"{within}_id": getattr(instance, f"{within}_id")})
    where = f" in this {model._meta.get_field(within).verbose_name}" if within else ""
    taken = {"name": [f"A {model._meta.verbose_name} named {instance.name!r} already exists{where}."]}
    if others.filter(name=instance.name).exists():
        raise invalid(taken)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable after a refusal
            instance.save()
    except IntegrityError:
        if others.filter(name=instance.name).exists():
            raise invalid(taken) from None
        raise
