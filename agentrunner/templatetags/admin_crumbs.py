"""The admin's breadcrumbs name the section the index lists a model under, and leave it out where it only repeats
the model ("Home › Runs › a run", not "Home › Runs › Runs › a run"; "Home › Teams", not "Home › LLM › Teams")."""

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext

from agentrunner.admin_site import section_of

register = template.Library()


@register.simple_tag
def section_crumb(opts) -> str:
    """`› <section>`, linking to its page; empty when the section's name is the model's own plural."""
    name = section_of(opts)
    if name.lower() == str(opts.verbose_name_plural).lower():
        return ""
    return format_html('&rsaquo; <a href="{}">{}</a>', reverse("admin:app_list", args=[opts.app_label]), name)


@register.simple_tag
def list_crumbs(opts) -> str:
    """Home › section › the model's list, each linked: how the breadcrumbs of a page about its objects begin."""
    return format_html(
        '<a href="{}">{}</a> {} &rsaquo; <a href="{}">{}</a>',
        reverse("admin:index"),
        gettext("Home"),
        section_crumb(opts),
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        capfirst(opts.verbose_name_plural),
    )
