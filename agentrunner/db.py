"""Rows the services of every app write the same way: a unique `name`, running totals."""

from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, models, transaction
from django.db.models import F

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


def counts_add(model: type[models.Model], additions: dict[tuple, dict[str, int | Decimal]], *, keys: tuple[str, ...]):
    """Add to the running totals of `model`, one row per key: `additions` maps key values to {field: amount}.

    A missing row is inserted at zero first (ON CONFLICT DO NOTHING, so two writers cannot both insert it),
    then every total grows by a guarded `field = field + amount` UPDATE, which concurrent writers queue on.
    For tallies written in the transaction of what they count (runs.DeletedRuns, DeletedLLMCalls).
    """
    if not additions:
        return
    model._default_manager.bulk_create(
        [model(**dict(zip(keys, key, strict=True))) for key in additions], ignore_conflicts=True
    )
    for key, amounts in additions.items():
        updated = model._default_manager.filter(**dict(zip(keys, key, strict=True))).update(
            **{field: F(field) + amount for field, amount in amounts.items()}
        )
        if updated != 1:  # the row was inserted just above, in this transaction
            raise RuntimeError(f"{model.__name__} {key}: {updated} rows to add to")
