"""Django's user and group pages, with one fix: an id beyond a 64-bit integer in a posted permission or group list.

Django's ModelMultipleChoiceField hands such an id to the database; SQLite cannot bind it and the page was a 500.
Here it is the form's own "not a valid value" error, on every database.
"""

from django import forms
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, User
from django.db import models

BIGGEST_ID = 2**63 - 1  # what a 64-bit integer column (and SQLite's binding) holds


class IdsInRangeField(forms.ModelMultipleChoiceField):
    def _check_values(self, value):
        for pk in value if isinstance(value, list | tuple) else []:
            text = str(pk).strip().lstrip("+-")
            if text.isdigit() and int(text) > BIGGEST_ID:
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"], code="invalid_pk_value", params={"pk": pk}
                )
        return super()._check_values(value)


IN_RANGE = {models.ManyToManyField: {"form_class": IdsInRangeField}}


class UserAdmin(auth_admin.UserAdmin):
    formfield_overrides = {**auth_admin.UserAdmin.formfield_overrides, **IN_RANGE}


class GroupAdmin(auth_admin.GroupAdmin):
    formfield_overrides = {**auth_admin.GroupAdmin.formfield_overrides, **IN_RANGE}


for model, model_admin in ((User, UserAdmin), (Group, GroupAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
