"""Junk at every door: no API operation, admin page or admin form answers a server error (5xx), whatever it is sent.

`make fuzz` runs these (1–3 minutes each, fixed seeds; FUZZ_SEED picks others); `make test` leaves them out.
Complements tests/agentrunner/test_schemathesis.py, which generates values from the OpenAPI document's types:
here the values ignore the types (NUL characters, lone surrogates, huge numbers, JSON in text fields...), as
the targeted tests of each finding do (test_api_parsing.py, the admin tests of schedules and digests).
"""

import json
import os
import random

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from flows import services as flow_services
from runs import services as run_services
from runs.models import RunStatus
from tests.digests.factories import digest
from tests.flows.factories import chain
from tests.runs.factories import make_run
from tests.schedules.factories import schedule

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

SEED = int(os.environ.get("FUZZ_SEED", "1"))
TEXT = ["\x00", "a\x00b", "\ud800", "-1", "0", "abc", "99999999999999999999", "1e3", "'", "☃", "", " ", "x" * 3000,
        "00000000-0000-0000-0000-000000000000", "%", "_", "\\", "../../etc", "2026-02-30", "25:99", "*/0 * * * *",
        "Mars/Olympus", "null", "NaN", "on", "{", "[]", '{"a": "\\u0000"}', '{"a": "\\ud800"}']  # fmt: skip
VALUES = [None, True, -1, 0, 2**31, 2**63, 1.5, 1e308, -1e308, [], [1, "a", None], {}, {"a": {"b": {"c": []}}},
          [[[[[]]]]], {"$ref": "#"}, *TEXT]  # fmt: skip
IN_URL = [t for t in TEXT if "\ud800" not in t]  # a URL cannot carry a lone surrogate (the client cannot encode it)
# /health answers 503 by design while no worker cluster runs (its own tests cover it).
SKIPPED = ("/api/v1/health",)


def openapi() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


def body_fields(document: dict, operation: dict) -> list[str]:
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    while isinstance(schema, dict) and "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return list((schema or {}).get("properties", {}))


@pytest.mark.parametrize("persona", ["superuser_api", "api"])
def test_api__junk_in_any_field_parameter_or_header_is_never_a_5xx(request, persona, owner):
    client = request.getfixturevalue(persona)
    client.raise_request_exception = False
    run, _ = run_services.run_create(agent_type="pass", input={})
    flow_services.flow_create(slug="f1", name="f1", definition=chain(("a", "pass", {})), owner=owner)
    real = {"run_id": str(run.pk), "slug": "f1", "agent_type": "pass", "username": "owner"}
    document, rng, failures = openapi(), random.Random(SEED), []
    for path, operations in document["paths"].items():
        if path in SKIPPED:
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            parameters = operation.get("parameters", [])
            in_path = [p["name"] for p in parameters if p["in"] == "path"]
            in_query = [p["name"] for p in parameters if p["in"] == "query"]
            fields = body_fields(document, operation)
            for attempt in range(60):
                url = path
                for name in in_path:
                    value = real.get(name, "1") if attempt % 3 else rng.choice(IN_URL)
                    url = url.replace("{" + name + "}", value.replace("/", "%2F").replace("\x00", "%00"))
                query = {n: rng.choice(IN_URL) for n in in_query if rng.random() < 0.5}
                body = {k: rng.choice(VALUES) for k in fields if rng.random() < 0.7} if fields else rng.choice(VALUES)
                payload = "{not json" if attempt % 10 == 0 else json.dumps(body)
                headers = {"HTTP_X_TEAM": rng.choice([*IN_URL, "default"])} if rng.random() < 0.3 else {}
                if method == "get":
                    response = client.get(url, query, **headers)
                else:
                    response = getattr(client, method)(url, payload, content_type="application/json", **headers)
                if response.status_code >= 500:
                    failures.append((method.upper(), url, query, payload[:300], response.status_code))
    assert not failures, "\n".join(map(str, failures[:20]))


def every_admin_url(kinds: tuple[str, ...], *, ids) -> list[str]:
    urls = []
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        for kind in kinds:
            for object_id in ids(model) if kind in ("change", "history", "delete") else [None]:
                try:
                    args = [] if object_id is None else [object_id]
                    urls.append(reverse(f"admin:{info[0]}_{info[1]}_{kind}", args=args))
                except NoReverseMatch:
                    pass
    return urls


def test_admin__junk_in_list_parameters_and_object_ids_is_never_a_5xx(admin_client):
    admin_client.raise_request_exception = False
    make_run(RunStatus.COMPLETED)
    failures = []
    for url in every_admin_url(("changelist",), ids=None):
        for value in IN_URL:
            for name in ("q", "o", "p", "status", "team__id__exact", "e", "all"):
                if admin_client.get(url, {name: value}).status_code >= 500:
                    failures.append((url, name, value[:30]))
    junk_ids = [(t or "x").replace("/", "%2F") for t in IN_URL]
    for url in every_admin_url(("change", "history", "delete"), ids=lambda model: junk_ids):
        if admin_client.get(url).status_code >= 500:
            failures.append((url,))
    assert not failures, "\n".join(map(str, failures[:20]))


def test_admin__junk_in_every_form_is_never_a_5xx(admin_client):
    admin_client.raise_request_exception = False
    make_run(RunStatus.COMPLETED)
    flow = flow_services.flow_create(slug="f1", name="f1", definition=chain(("a", "pass", {})))
    schedule(name="s1")
    digest(name="d1")

    def first_id(model):
        obj = model._default_manager.first()
        return [] if obj is None else [obj.pk]

    urls = every_admin_url(("add", "change"), ids=first_id)
    urls += [reverse("admin:runs_run_start"), reverse("admin:flows_flow_run", args=[flow.pk])]
    rng, failures = random.Random(SEED), []
    for url in urls:
        page = admin_client.get(url)
        context = page.context if page.status_code == 200 else None
        if not context or not (context.get("adminform") or context.get("form")):
            continue
        form = context["adminform"].form if context.get("adminform") else context["form"]
        for _ in range(40):
            data = {name: rng.choice(TEXT) for name in form.fields if rng.random() < 0.8}
            for inline in context.get("inline_admin_formsets") or []:
                prefix = inline.formset.prefix
                data |= {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0"}
                data |= {f"{prefix}-0-{name}": rng.choice(TEXT) for name in inline.formset.form.base_fields}
            data = {k: v.replace("\ud800", "?") for k, v in data.items()}  # a form post cannot carry one
            if admin_client.post(url, data).status_code >= 500:
                failures.append((url, {k: v[:30] for k, v in data.items()}))
    assert not failures, "\n".join(map(str, failures[:20]))
