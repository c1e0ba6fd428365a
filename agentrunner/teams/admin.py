"""Admin of teams: superusers create teams and set their limits; a team's admins manage its members.

A staff member sees the teams they belong to (read-only unless they are its admin); a team admin adds existing
users by username with a role, changes roles and removes members, through `agentrunner.teams.services`, and the
last admin stays. The limits, name and slug are a superuser's (the slug never changes once the team exists).
API token accounts are listed, read-only: their tokens are never shown anywhere in the admin.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import HttpResponseRedirect
from django.utils.html import format_html

from agentrunner.adminkit import EMPTY, nowrap, role_for, team_ids_for, usage_bar, when
from agentrunner.errors import ServiceError
from agentrunner.llm.selectors import team_usage
from agentrunner.models import Membership, Role, Team
from agentrunner.teams.selectors import role_at_least, team_list
from agentrunner.teams.services import (
    TEAM_FIELDS,
    member_add,
    member_remove,
    member_role_set,
    team_create,
    team_update,
    token_delete,
)

LIMIT_FIELDS = TEAM_FIELDS[1:]
LAST_ADMIN = "A team keeps at least one admin: make another member admin first."


class UsernameInput(forms.TextInput):
    """A text box for a new member's username; an existing member's name as plain text."""

    def render(self, name, value, attrs=None, renderer=None):
        if (attrs or {}).get("disabled") or self.attrs.get("disabled"):
            return format_html("<strong>{}</strong>", value or "")
        return super().render(name, value, attrs, renderer)


class MembershipForm(forms.ModelForm):
    """A member: a new row names an existing user by username; an existing row changes only the role."""

    username = forms.CharField(
        label="username",
        max_length=150,
        required=False,
        widget=UsernameInput,
        help_text="To add someone: the username of their existing account.",
    )

    class Meta:
        model = Membership
        fields = ["username", "role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["username"].initial = self.instance.user.get_username()
            self.fields["username"].disabled = True
            if self.instance.is_token:
                # A token's role is set when it is made (API); here it can only be revoked.
                self.fields["role"].disabled = True

    def clean_username(self):
        if self.instance.pk:
            return self.instance.user.get_username()
        username = (self.cleaned_data.get("username") or "").strip()
        if not username:
            raise forms.ValidationError("Give the username of the person to add.")
        user = get_user_model().objects.filter(username=username).first()
        if user is None or Membership.objects.filter(user=user, is_token=True).exists():
            # An API token's account belongs to its own team only.
            raise forms.ValidationError(f"There is no user named {username!r}.")
        if Membership.objects.filter(user=user, team_id=self.instance.team_id).exists():
            raise forms.ValidationError(f"{username} is already a member of this team.")
        return username


class MembershipFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        kept = [form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")]
        usernames = [form.cleaned_data["username"] for form in kept if not form.instance.pk]
        if len(usernames) != len(set(usernames)):
            raise forms.ValidationError("The same person is added twice.")
        had_admin = any(form.instance.pk and form.initial.get("role") == Role.ADMIN for form in self.forms)
        if had_admin and not any(form.cleaned_data.get("role") == Role.ADMIN for form in kept):
            raise forms.ValidationError(LAST_ADMIN)


class MembershipInline(admin.TabularInline):
    model = Membership
    form = MembershipForm
    formset = MembershipFormSet
    fields = ["username", "role", "kind", "since"]
    readonly_fields = ["kind", "since"]
    extra = 0
    verbose_name = "member"
    verbose_name_plural = "members"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").order_by("is_token", "user__username")

    @admin.display(description="username")
    def username(self, obj: Membership):  # the read-only page's column
        return obj.user.get_username()

    @admin.display(description="kind")
    def kind(self, obj: Membership):
        if obj.pk is None:
            return EMPTY
        return "API token (its key is never shown; delete to revoke it)" if obj.is_token else "person"

    @admin.display(description="member since")
    def since(self, obj: Membership):
        return nowrap(when(obj.created_at)) if obj.pk else EMPTY

    # The parent team's page decides: its admins manage members, its other members see them.
    def has_view_permission(self, request, obj=None):
        return self.admin_site.get_model_admin(Team).has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return self.admin_site.get_model_admin(Team).has_change_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self.admin_site.get_model_admin(Team).has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self.admin_site.get_model_admin(Team).has_change_permission(request, obj)


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "slug", *LIMIT_FIELDS]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    team_aware = True  # scopes by team itself: staff see their own teams (admin_site.superuser_only_unless_team_aware)
    form = TeamForm
    inlines = [MembershipInline]
    list_display = ["name", "slug", "members", "your_role", "run_limits", "llm_limits", "keeps_runs"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    empty_value_display = EMPTY
    fieldsets = [
        (None, {"fields": ["name", "slug"]}),
        (
            "Limits",
            {
                "fields": list(LIMIT_FIELDS),
                "description": "Set by the service's operators (superusers). Empty means the service's default.",
            },
        ),
    ]

    # -- who sees and changes what

    def get_queryset(self, request):
        members = Count("memberships", filter=Q(memberships__is_token=False), distinct=True)
        role = Membership.objects.filter(team=OuterRef("pk"), user=request.user.pk).values("role")[:1]
        return team_list(user=request.user).annotate(member_count=members, viewer_role=Subquery(role))

    def _role(self, request, obj=None, *, needed: str) -> bool:
        user = request.user
        if user.is_superuser:
            return user.is_active
        if not (user.is_active and user.is_staff):
            return False
        if obj is None:
            return bool(team_ids_for(request, needed))
        return role_at_least(role_for(request, obj.pk), needed)

    def has_module_permission(self, request):
        return self._role(request, needed=Role.VIEWER)

    def has_view_permission(self, request, obj=None):
        return self._role(request, obj, needed=Role.VIEWER)

    def has_change_permission(self, request, obj=None):
        return self._role(request, obj, needed=Role.ADMIN)  # its members; the rest is read-only for team admins

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def get_readonly_fields(self, request, obj=None):
        usage = ["llm_this_month", "llm_share"] if obj is not None else []
        if not request.user.is_superuser:
            return ["name", "slug", *LIMIT_FIELDS, *usage]  # the limits protect the whole service
        return ["slug", *usage] if obj is not None else []  # the X-Team header and API paths name it

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None:
            fieldsets.append(
                (
                    "LLM use this month",
                    {
                        "fields": ["llm_this_month", "llm_share"],
                        "description": format_html(
                            "What the team's runs used this calendar month (UTC), against its monthly token limit. "
                            "Each member's share is in the API: <code>GET /api/v1/teams/{}/usage</code>.",
                            obj.slug,
                        ),
                    },
                )
            )
        return fieldsets

    def _usage(self, obj: Team) -> dict:
        cached = getattr(obj, "_usage_this_month", None)
        if cached is None:
            cached = obj._usage_this_month = team_usage(obj)
        return cached

    @admin.display(description="used")
    def llm_this_month(self, obj: Team):
        usage = self._usage(obj)
        limit = "no limit" if usage["limit"] == 0 else f"{usage['limit']:,} tokens"
        requests = "request" if usage["calls"] == 1 else "requests"
        cost = Decimal(usage["cost_usd"])
        dollars = "less than $0.01" if 0 < cost < Decimal("0.01") else f"${cost:,.2f}"
        return f"{usage['used_tokens']:,} tokens of {limit} · {usage['calls']:,} {requests} · {dollars}"

    @admin.display(description="share of the limit")
    def llm_share(self, obj: Team):
        usage = self._usage(obj)
        return EMPTY if usage["limit"] == 0 else usage_bar(usage["used_tokens"], usage["limit"])

    def get_prepopulated_fields(self, request, obj=None):
        return self.prepopulated_fields if obj is None else {}

    # -- list columns

    @admin.display(description="members", ordering="member_count")
    def members(self, obj: Team):
        return obj.member_count

    @admin.display(description="your role", ordering="viewer_role")
    def your_role(self, obj: Team):
        return Role(obj.viewer_role).name.lower() if obj.viewer_role else EMPTY

    @admin.display(description="run starts per minute")
    def run_limits(self, obj: Team):
        return format_html(
            "{} for the team, {} per member",
            _limit(obj.run_starts_per_minute),
            _limit(obj.run_starts_per_user_per_minute),
        )

    @admin.display(description="LLM limits")
    def llm_limits(self, obj: Team):
        return format_html(
            "{} requests/min, {} tokens/month",
            _limit(obj.llm_requests_per_minute),
            _limit(obj.monthly_token_limit),
        )

    @admin.display(description="keeps finished runs")
    def keeps_runs(self, obj: Team):
        own = obj.run_retention_days
        days = settings.RUN_RETENTION_DAYS if own is None else own
        kept = "forever" if days == 0 else f"{days:,} days"
        return kept if own is not None else f"{kept} (default)"

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if request.user.is_superuser:
            columns.remove("your_role")
        return columns

    # -- saving through the services

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in TEAM_FIELDS if name in form.cleaned_data}
        if not change:
            created = team_create(slug=form.cleaned_data["slug"], **fields)
            obj.pk = created.pk
            obj.refresh_from_db()
            obj._state.adding = False
            return
        changed = {name: value for name, value in fields.items() if name in form.changed_data}
        if changed:
            team_update(team=obj, **changed)

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        team = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        kept = [f for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        # New admins first and demotions last, so that the team never has no admin in between.
        for member_form in sorted(kept, key=lambda f: f.cleaned_data.get("role") != Role.ADMIN):
            data, membership = member_form.cleaned_data, member_form.instance
            if membership.pk is None:
                formset.new_objects.append(member_add(team=team, username=data["username"], role=data["role"]))
            elif "role" in member_form.changed_data and not membership.is_token:
                changed = member_role_set(team=team, username=membership.user.get_username(), role=data["role"])
                formset.changed_objects.append((changed, ["role"]))
        for member_form in formset.deleted_forms:
            membership = member_form.instance
            if membership.pk is None:
                continue
            if membership.is_token:
                token_delete(team=team, token_id=membership.pk)
            else:
                member_remove(team=team, username=membership.user.get_username())
            formset.deleted_objects.append(membership)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            # The form checked the same rules: someone changed the team meanwhile. The admin's transaction rolled
            # back, so nothing was saved; say so rather than fail.
            self.message_user(request, f"Nothing was saved: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def _limit(value: int | None) -> str:
    if value is None:
        return "default"
    return "no limit" if value == 0 else f"{value:,}"
