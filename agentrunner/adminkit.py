"""The admin kit every app's admin pages use: colours and badges, small display helpers, a read-only mixin, the
team scoping of every team-owned model's admin, a search by id, the JSON form fields, and saving through
services (a mixin and the form errors).

Model data is always escaped (`format_html`), never marked safe.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from agentrunner.errors import ServiceError
from agentrunner.models import Role, Team
from agentrunner.teams.selectors import role_at_least, role_in, team_ids_of
from agentrunner.teams.services import team_default
from agentrunner.validators import validate_storable_json

EMPTY = "—"

# --- colours and badges --------------------------------------------------------------------------

GREY = "#6c757d"
BLUE = "#0d6efd"
GREEN = "#198754"
RED = "#dc3545"
DARK_GREY = "#343a40"
ORANGE = "#e8590c"
AMBER = "#ffc107"
CYAN = "#0dcaf0"
# Light backgrounds need dark text to stay readable.
DARK_TEXT_ON = {AMBER, CYAN}

USAGE_BAR_PX = 120


def usage_bar(used: int, limit: int):
    """A bar filled to the share of the limit used: green, amber past the warning ratio, red at the limit."""
    ratio = used / limit
    colour = RED if ratio >= 1 else AMBER if ratio >= settings.LLM_BUDGET_WARNING_RATIO else GREEN
    return format_html(
        '<span style="display:inline-flex;align-items:center;gap:6px;white-space:nowrap">'
        '<span style="display:inline-block;width:{}px;height:10px;background:#e9ecef;border-radius:5px;'
        'overflow:hidden"><span style="display:block;height:100%;width:{}%;background:{}"></span></span>{} %</span>',
        USAGE_BAR_PX,
        min(round(ratio * 100), 100),
        colour,
        f"{ratio * 100:.0f}",
    )


PRE_STYLE = (
    "background:#f6f8fa;color:#1f2328;border:1px solid #d0d7de;border-radius:4px;padding:8px 10px;"
    "margin:0;white-space:pre-wrap;word-break:break-word;max-height:480px;overflow:auto;"
    "font-size:12px;line-height:1.45;max-width:100%;"
)
CELL_STYLE = "padding:4px 8px;vertical-align:top;white-space:nowrap;"


def badge(label: str, colour: str) -> SafeString:
    text = "#212529" if colour in DARK_TEXT_ON else "#fff"
    return format_html(
        '<span style="display:inline-block;padding:2px 9px;border-radius:10px;font-size:11px;'
        'font-weight:600;line-height:1.5;white-space:nowrap;background:{};color:{}">{}</span>',
        colour,
        text,
        label,
    )


def choice_label(choices, value: str) -> str:
    """The label of `value` in a TextChoices class, or the value itself if it is not one of them."""
    try:
        return choices(value).label
    except ValueError:
        return value


# --- small display helpers -----------------------------------------------------------------------


def human_duration(delta: timedelta | None) -> str:
    """`1.2 s`, `3 min 4 s`, `2 h 5 min`; an em dash when there is no duration."""
    if delta is None:
        return EMPTY
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


# The one way the admin writes a date and time (Django's own formats agree: agentrunner/formats), always in
# the viewer's time zone (agentrunner.timezones): `2026-12-01 21:30`; to the second in tooltips.
DATETIME_FORMAT = "%Y-%m-%d %H:%M"
PRECISE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def when(value: datetime | None) -> str:
    """`2026-12-01 21:30` in the viewer's time zone; an em dash for no time."""
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime(DATETIME_FORMAT)


def when_html(value: datetime | None, *, also=None) -> SafeString | str:
    """`when(value)`, to the second (and in the zone `also`, e.g. a schedule's own) in its tooltip."""
    if value is None:
        return EMPTY
    title = timezone.localtime(value).strftime(PRECISE_FORMAT)
    if also is not None and also != timezone.get_current_timezone():
        title += f" · {value.astimezone(also).strftime(DATETIME_FORMAT)} in {also}"
    return format_html('<span title="{}">{}</span>', title, when(value))


def clock(value: datetime | None) -> SafeString | str:
    """The time of day to the second (for timelines), with the date and zone in its tooltip."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    return format_html('<span title="{}">{}</span>', local.strftime(PRECISE_FORMAT), local.strftime("%H:%M:%S"))


def pretty_json(value) -> SafeString | str:
    if value is None:
        return EMPTY
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, json.dumps(value, indent=2, ensure_ascii=False))


def pre_text(value: str) -> SafeString | str:
    if not value:
        return EMPTY
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, value)


def nowrap(value) -> SafeString:
    return format_html('<span style="white-space:nowrap">{}</span>', value)


# --- admin classes -------------------------------------------------------------------------------


class ReadOnlyAdminMixin:
    """A record nobody adds, edits or deletes by hand in the admin: the engine or a service writes it.

    Its pages still open for whoever has the view permission; actions a page offers check their own
    permission (e.g. `has_operate_permission`).
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def team_ids_for(request, role: str = Role.VIEWER) -> list[int] | None:
    """`team_ids_of(request.user, role=role)`, read once per request (the admin asks many times per page)."""
    cache = request.__dict__.setdefault("_team_ids", {})
    if role not in cache:
        cache[role] = team_ids_of(request.user, role=role)
    return cache[role]


def role_for(request, team_id: int | None) -> str | None:
    """`role_in(request.user, team_id)`, read once per request and team."""
    cache = request.__dict__.setdefault("_team_roles", {})
    if team_id not in cache:
        cache[team_id] = role_in(request.user, team_id)
    return cache[team_id]


def visible_teams(request):
    """The teams whose objects the user sees (every team for a superuser), by name."""
    ids = team_ids_for(request)
    return Team.objects.all() if ids is None else Team.objects.filter(pk__in=ids)


def sees_several_teams(request) -> bool:
    """Whether the user sees objects of more than one team: then lists show and filter by team."""
    cache = request.__dict__
    if "_sees_several_teams" not in cache:
        ids = team_ids_for(request)
        cache["_sees_several_teams"] = Team.objects.count() > 1 if ids is None else len(ids) > 1
    return cache["_sees_several_teams"]


class TeamListFilter(admin.SimpleListFilter):
    """The teams the user sees (their own, every team for a superuser); shown only to who sees several."""

    title = "team"
    parameter_name = "team"

    def lookups(self, request, model_admin):
        return [(str(team.pk), team.name) for team in visible_teams(request).only("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{f"{getattr(self, 'team_path', 'team')}__id": int(value)})


def teams_where(request, role: str):
    """The teams where the user has at least `role`: every team for a superuser, who always has one to add to
    (the default team, made if it was deleted or, in tests, never made)."""
    ids = team_ids_for(request, role)
    if ids is None:
        team_default()
        return Team.objects.all()
    return Team.objects.filter(pk__in=ids)


class TeamScopedAdmin:
    """The admin of a team's objects: staff see their teams' objects only, and their role there decides the rest.

    `team_path` is the lookup from the model to its team (`team`, `run__team`, `flow__team`, ...). Seeing needs
    the viewer role in the object's team; adding, changing and deleting need `write_role` there (editor unless
    the admin says otherwise). Foreign-key pickers offer only objects of the user's teams, and the `team` picker
    only the teams where the user has `write_role`. Filters on a foreign key (named in `list_filter`) offer only
    the values found in the user's teams' objects. Who sees several teams also gets a "team" filter and, when
    the model has its own `team` field, a "team" column. Superusers see and change everything, as Django's admin
    lets them. Put it after ReadOnlyAdminMixin and before admin.ModelAdmin: a read-only record stays read-only.
    """

    team_path = "team"
    write_role = Role.EDITOR
    # Pages of an admin that scopes by team stay open to staff; any other admin is for superusers only
    # (dashboard.apps.DashboardAdminConfig).
    team_aware = True

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        ids = team_ids_for(request)
        return queryset if ids is None else queryset.filter(**{f"{self.team_path}__in": ids})

    def team_id_of(self, obj) -> int | None:
        """The id of the team `obj` belongs to, following `team_path`."""
        *parents, last = self.team_path.split("__")
        for name in parents:
            obj = getattr(obj, name, None)
            if obj is None:
                return None
        return getattr(obj, f"{last}_id", None)

    def has_team_role(self, request, role: str, obj=None) -> bool:
        """Whether the user has `role` in `obj`'s team, or (no object) in at least one team."""
        user = request.user
        if user.is_superuser:
            return True
        if not (user.is_active and user.is_staff):
            return False
        if obj is None:
            return bool(team_ids_for(request, role))
        return role_at_least(role_for(request, self.team_id_of(obj)), role)

    def has_module_permission(self, request):
        if request.user.is_superuser:
            return super().has_module_permission(request)
        return self.has_team_role(request, Role.VIEWER)

    def has_view_permission(self, request, obj=None):
        if request.user.is_superuser:
            return super().has_view_permission(request, obj)
        return self.has_team_role(request, Role.VIEWER, obj)

    def has_add_permission(self, request, *args):
        if request.user.is_superuser:
            return super().has_add_permission(request, *args)
        return self.has_team_role(request, self.write_role)

    def has_change_permission(self, request, obj=None):
        if request.user.is_superuser:
            return super().has_change_permission(request, obj)
        return self.has_team_role(request, self.write_role, obj)

    def has_delete_permission(self, request, obj=None):
        if request.user.is_superuser:
            return super().has_delete_permission(request, obj)
        return self.has_team_role(request, self.write_role, obj)

    def writable_teams(self, request):
        """The teams where the user may add this admin's objects (every team for a superuser)."""
        return teams_where(request, self.write_role)

    def writable(self, request, queryset):
        """`queryset` narrowed to the objects the user may change (`write_role` in their team): for actions,
        whose permission Django checks without an object."""
        ids = team_ids_for(request, self.write_role)
        return queryset if ids is None else queryset.filter(**{f"{self.team_path}__in": ids})

    def team_object(self, request, object_id):
        """The object `object_id` (quoted, as in admin URLs) names, through the team-scoped queryset: one of
        another team is a 404, exactly like one that does not exist. For custom views."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with this id.")
        return obj

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        field = form.base_fields.get("team")
        if field is not None and obj is None:
            teams = list(field.queryset[:2])
            if len(teams) == 1:
                # One team to add it to: no choice to make, so no field to see; disabled, so what is posted in
                # its place is ignored and the team is still checked (unique names within it).
                field.initial, field.disabled, field.widget = teams[0].pk, True, forms.HiddenInput()
            else:
                field.empty_label = "— choose the team —"
                # A team is chosen here, not viewed or edited: no links beside the picker.
                for link in ("can_add_related", "can_change_related", "can_view_related", "can_delete_related"):
                    if hasattr(field.widget, link):
                        setattr(field.widget, link, False)
        return form

    def fit_team_picker(self, request, field: forms.ModelChoiceField, obj=None) -> None:
        """Offer in `field` (a picker of team-owned objects, e.g. a schedule's flow) only what `obj` may point
        at: its team's objects, or for a new object those of the teams where the user may add one, each named
        with its team when they are of several. The services still refuse another team's object."""
        team_path = TEAM_PATHS[field.queryset.model._meta.label]
        if obj is not None:
            field.queryset = field.queryset.filter(**{f"{team_path}__id": self.team_id_of(obj)})
            return
        ids = team_ids_for(request, self.write_role)
        if ids is not None:
            field.queryset = field.queryset.filter(**{f"{team_path}__in": ids})
        if sees_several_teams(request):
            field.queryset = field.queryset.select_related(team_path)
            field.label_from_instance = lambda item: f"{item} ({_team_of(item, team_path).name})"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if related is Team:
            kwargs.setdefault("queryset", self.writable_teams(request))
        elif team_path := TEAM_PATHS.get(related._meta.label):
            ids = team_ids_for(request)
            if ids is not None:
                base = kwargs.get("queryset", related._default_manager.all())
                kwargs["queryset"] = base.filter(**{f"{team_path}__in": ids})
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        if not request.user.is_superuser:
            # Django's filter on a foreign key lists every row of the related table, other teams' too; this one
            # lists only those the user's objects point to.
            filters = [self._related_only(name) for name in filters]
        if sees_several_teams(request) and not any(_names_team(entry) for entry in filters):
            filters.insert(0, type("TeamFilter", (TeamListFilter,), {"team_path": self.team_path}))
        return filters

    def _related_only(self, entry):
        if not isinstance(entry, str):
            return entry
        try:
            field = self.model._meta.get_field(entry)
        except FieldDoesNotExist:
            return entry  # a lookup through a relation ("flow__owner"): name it with a filter class instead
        return (entry, admin.RelatedOnlyFieldListFilter) if field.is_relation else entry

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if self.team_path == "team" and "team" not in columns and sees_several_teams(request):
            columns.insert(min(2, len(columns)), "team_column")
        return columns

    def get_list_select_related(self, request):
        related = super().get_list_select_related(request)
        if isinstance(related, (list, tuple)) and self.team_path == "team" and sees_several_teams(request):
            return [*related, "team"]  # the team column, without a query per row
        return related

    @admin.display(description="team", ordering="team__name")
    def team_column(self, obj):
        return obj.team.name


def _team_of(obj, team_path: str) -> Team:
    for name in team_path.split("__"):
        obj = getattr(obj, name)
    return obj


def _names_team(entry) -> bool:
    name = entry[0] if isinstance(entry, (list, tuple)) else entry
    return name == "team" or (isinstance(name, type) and issubclass(name, TeamListFilter))


# How each team-owned model reaches its team: used to narrow foreign-key pickers to the user's teams.
TEAM_PATHS = {
    "runs.Run": "team",
    "runs.Step": "run__team",
    "flows.Flow": "team",
    "flows.FlowVersion": "flow__team",
    "schedules.Schedule": "team",
    "schedules.ScheduleFire": "schedule__team",
    "digests.DigestSubscription": "team",
    "digests.DigestDelivery": "subscription__team",
    "agentrunner.LLMCall": "team",
}


# A run's short id, as the lists show it: the first 8 hex digits of its UUID.
SHORT_ID = re.compile(r"[0-9a-fA-F]{8}")


def id_search(term: str, *, full: list[str], short: str | None = None) -> Q | None:
    """The condition for an admin search by id: a whole UUID matches any field in `full`, its first 8 hex
    digits match `short` (a UUID field compared as text); None if the term is neither."""
    term = term.strip()
    try:
        value = uuid.UUID(term)
    except ValueError:
        value = None
    if value is not None:
        condition = Q()
        for field in full:
            condition |= Q(**{field: value})
        return condition
    if short and SHORT_ID.fullmatch(term):
        return Q(**{f"{short}__startswith": term.lower()})
    return None


# --- form fields ---------------------------------------------------------------------------------

# A text area for JSON: monospace, wide, tabs of two.
EDITOR_STYLE = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:12.5px;"
    "line-height:1.45;width:100%;max-width:64em;box-sizing:border-box;tab-size:2;white-space:pre;"
)


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


class PrettyJSONField(StorableJSONFormField):
    """JSON in a monospace text area, pretty-printed; a syntax error says where it is."""

    indent = 2

    def to_python(self, value):
        if self.disabled or value in self.empty_values:
            return super().to_python(value)
        try:
            return json.loads(value, cls=self.decoder)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                "This is not valid JSON: %(error)s at line %(line)s, column %(column)s.",
                code="invalid",
                params={"error": exc.msg, "line": exc.lineno, "column": exc.colno},
            ) from None


class JSONObjectFormField(PrettyJSONField):
    """A JSON object (an agent's or a flow's input) in a JSON text area: empty means {}, anything but an
    object is refused with an example of one."""

    def __init__(self, *, example: str = '{"field": "value"}', rows: int = 10, **kwargs):
        self.example = example
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": rows, "spellcheck": "false", "style": EDITOR_STYLE}))
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError(f"The input must be a JSON object, e.g. {self.example}.", code="not_object")
        return value


# --- saving through services ---------------------------------------------------------------------


def add_service_errors(form: forms.BaseForm, errors: dict[str, list[str]], *, names: dict[str, str] | None = None):
    """Show a service's field errors on `form`: each at its field (`names` maps the service's names to the
    form's; a path such as `input.seconds` goes to `input`, its message prefixed with `seconds: `), or above
    the form when the form has no such field. A field already showing its own error keeps only that one."""
    for path, problems in errors.items():
        first, _, rest = path.partition(".")
        field = (names or {}).get(first, first)
        field = field if field in form.fields else None
        if field is not None and form.has_error(field):
            continue
        form.add_error(field, [f"{rest}: {problem}" if rest else problem for problem in problems])


class ServiceSaveMixin:
    """A ModelAdmin whose adds, changes and deletes go through the app's services, never `form.save()` or
    `obj.delete()`: the services keep what goes with the row (e.g. its django-q2 schedule) in step.

    Subclasses name the fields the services take (`service_fields`) and implement `service_create`,
    `service_update` and `service_delete`. The form is expected to run the services' own check, so their
    problems show at their fields; `service_error` raised by the write itself (a concurrent change between the
    check and the save, e.g. a name taken meanwhile) rolls everything back and is said in a message.
    """

    service_fields: tuple[str, ...] = ()
    service_error: type[Exception] = ServiceError

    def service_create(self, request, fields: dict):
        """Create the object with `fields` (as the form cleaned them); return it."""
        raise NotImplementedError

    def service_update(self, request, obj, fields: dict) -> None:
        raise NotImplementedError

    def service_delete(self, request, obj) -> None:
        raise NotImplementedError

    def save_form(self, request, form, change):
        return form.instance  # not form.save(): save_model writes through the services

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in self.service_fields if name in form.cleaned_data}
        if change:
            self.service_update(request, obj, fields)
            return
        created = self.service_create(request, fields)
        # The admin goes on with `obj` (the log entry, the redirect): make it the row the service created.
        obj.pk = created.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # no many-to-many fields nor inlines: the services save everything

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except self.service_error as exc:
            # The form ran the same check: something changed between the check and the save. The admin's
            # transaction rolled back, so nothing was saved; say so rather than fail.
            self.message_user(request, f"Nothing was saved: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
