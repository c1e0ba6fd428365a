"""Form fields every app's admin shares."""

from __future__ import annotations

import json

from django import forms

from agentrunner.validators import validate_storable_json


class StorableJSONFormField(forms.JSONField):
    """JSON in a form: what the database cannot store (NUL, a lone surrogate) is a field error, not a 500,
    and any value, even that one, can be shown back in the form."""

    default_validators = [validate_storable_json]
    indent: int | None = None

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        text = json.dumps(value, indent=self.indent, ensure_ascii=False, cls=self.encoder)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate cannot go into the page as it is: escape it
            text = json.dumps(value, indent=self.indent, ensure_ascii=True, cls=self.encoder)
        return text
