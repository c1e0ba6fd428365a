"""The flow definition editor: its assets served locally, and every problem located at its line in the text."""

import copy
import html
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agentrunner.models import Role
from flows import services
from flows.admin.json_lines import JSONPlaces, Place
from flows.models import Flow
from tests.conftest import join

pytestmark = pytest.mark.django_db

FLOW_ADD = reverse("admin:flows_flow_add")
CHECK = reverse("admin:flows_flow_check")

DEFINITION = {
    "name": "Review",
    "start_task": "review",
    "tasks": [
        {"name": "review", "agent": "pass", "input": {"claim": "{{ input.claim }}"}},
        {"name": "approve", "agent": "pass", "input": {"result": {"route": "approved", "by": ["a", "b"]}}},
    ],
    "conditions": [
        {"name": "small", "source_task": "review", "when": "input.claim < 1000", "target_task_success": "approve"}
    ],
}


def broken() -> dict:
    """Three mistakes: a task's agent, a condition's expression, a reference deep in a task's input."""
    value = copy.deepcopy(DEFINITION)
    value["tasks"][1]["agent"] = "approver"
    value["tasks"][1]["input"]["result"]["by"][1] = "{{ steps.nowhere.output }}"
    value["conditions"][0]["when"] = "input.claim <"
    return value


def line_of(text: str, fragment: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return number


def check(client, text: str):
    return client.post(CHECK, json.dumps({"text": text}), content_type="application/json")


# --- assets ----------------------------------------------------------------------------------------------------


def asset_urls(page: str) -> list[str]:
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    styles = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page)
    styles += re.findall(r'<link[^>]*href="([^"]+)"[^>]*rel="stylesheet"', page)
    return scripts + styles


def test_editor_page__every_script_and_stylesheet_is_served_from_here(admin_client):
    page = admin_client.get(FLOW_ADD).content.decode()

    urls = asset_urls(page)
    assert any(url.endswith("flows/vendor/codemirror/codemirror.js") for url in urls)
    assert any(url.endswith("flows/definition_editor.js") for url in urls)
    assert any(url.endswith("flows/vendor/codemirror/codemirror.css") for url in urls)
    static = "/" + settings.STATIC_URL.lstrip("/")
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served from here"
        if url.startswith(static):
            assert finders.find(url.removeprefix(static)), f"{url} is not a static file of the project"
        else:
            assert admin_client.get(url).status_code == 200, url  # e.g. the admin's translations script


@override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True)
def test_editor_assets__answer_200(admin_user):
    client = Client()  # a new handler: whitenoise reads the settings above when it starts
    client.force_login(admin_user)
    page = client.get(FLOW_ADD).content.decode()

    editor_assets = [url for url in asset_urls(page) if "/flows/" in url]
    assert len(editor_assets) == 9  # CodeMirror (5 scripts, 2 stylesheets) and the editor's own script and styles
    for url in editor_assets:
        response = client.get(url)
        assert response.status_code == 200, url
        response.close()


def test_vendored_editor__carries_its_licence_and_version():
    def read(name: str) -> str:
        return Path(finders.find(f"flows/vendor/codemirror/{name}")).read_text()

    assert "MIT License" in read("LICENSE")
    assert "CodeMirror 5.65.21" in read("README.md")
    assert 'CodeMirror.version = "5.65.21"' in read("codemirror.js")


def test_editor_page__keeps_the_text_area_the_form_posts(admin_client):
    page = admin_client.get(FLOW_ADD).content.decode()

    assert re.search(r'<textarea[^>]*name="definition"', page)  # without the script, it is the editor
    assert f'data-check-url="{CHECK}"' in page
    assert '<script id="id_definition-problems" type="application/json">[]</script>' in page


# --- the check: problems at their lines ------------------------------------------------------------------------


def test_check__each_problem_carries_the_line_and_column_of_its_path(admin_client):
    text = json.dumps(broken(), indent=2)

    response = check(admin_client, text)

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    found = {p["path"]: p for p in body["problems"]}
    agent = found["tasks[1].agent"]
    assert agent["line"] == line_of(text, '"agent": "approver"')
    assert agent["column"] == text.splitlines()[agent["line"] - 1].index('"agent"') + 1
    assert agent["item"] == "task 'approve'" and agent["severity"] == "error"
    assert found["conditions[0].when"]["line"] == line_of(text, '"when": "input.claim <"')
    assert found["conditions[0].when"]["item"] == "condition 'small'"
    assert found["tasks[1].input.result.by[1]"]["line"] == line_of(text, "{{ steps.nowhere.output }}")


def test_check__lines_are_those_of_the_text_as_typed(admin_client):
    compact = json.dumps(broken(), indent=None).replace('"tasks"', '\n\n"tasks"')  # everything on line 3 and 1

    problems = {p["path"]: p for p in check(admin_client, compact).json()["problems"]}

    assert problems["tasks[1].agent"]["line"] == 3
    assert compact.splitlines()[2][problems["tasks[1].agent"]["column"] - 1 :].startswith('"agent": "approver"')
    assert problems["conditions[0].when"]["line"] == 3


def test_check__a_missing_key_is_marked_at_its_object(admin_client):
    value = copy.deepcopy(DEFINITION)
    del value["tasks"][1]["agent"]
    value["tasks"][1]["name"] = ""  # a task's agent defaults to its name: now neither is there
    text = json.dumps(value, indent=2)

    problems = check(admin_client, text).json()["problems"]

    named = [p for p in problems if p["path"] == "tasks[1].name"]
    assert named and named[0]["line"] == line_of(text, '"name": ""')
    for problem in problems:
        assert problem["line"] is not None  # every path falls back to the nearest place that holds it


def test_check__a_syntax_error_is_at_its_line_and_column(admin_client):
    text = '{\n  "name": "x",\n  "tasks": [}'

    body = check(admin_client, text).json()

    assert body["valid"] is False
    [problem] = body["problems"]
    assert (problem["line"], problem["column"], problem["path"]) == (3, 13, "")
    assert problem["message"].startswith("This is not valid JSON: Expecting value")


def test_check__a_valid_definition_has_no_errors(admin_client):
    body = check(admin_client, json.dumps(DEFINITION, indent=2)).json()
    assert body == {"valid": True, "problems": []}


def test_check__answers_post_only_to_people_who_may_edit_flows_and_writes_nothing(
    admin_client, django_user_model, client
):
    assert admin_client.get(CHECK).status_code == 405
    assert admin_client.post(CHECK, "[1]", content_type="application/json").status_code == 400
    assert admin_client.post(CHECK, "not json", content_type="application/json").status_code == 400
    assert check(client, "{}").status_code == 302  # not signed in: the admin's login page

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    join(viewer, Role.VIEWER)  # reads the team's flows, edits none
    client.force_login(viewer)
    assert check(client, "{}").status_code == 403

    with CaptureQueriesContext(connection) as queries:
        assert check(admin_client, json.dumps(broken())).status_code == 200
    writes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert not [w for w in writes if "django_session" not in w]
    assert not Flow.objects.exists()


def test_public_validate_api__keeps_its_shape(admin_client):
    body = admin_client.post(
        reverse("flows-validate"), {"definition": broken()}, content_type="application/json"
    ).json()

    assert set(body) == {"valid", "problems"}
    assert all(set(p) == {"path", "message", "severity"} for p in body["problems"])


# --- the page after a refused save -----------------------------------------------------------------------------


def test_refused_save__lists_each_problem_with_its_line_and_gives_the_editor_the_lines(admin_client):
    text = json.dumps(broken(), indent=2)  # what the page shows back (pretty-printed as the field does)
    data = {"slug": "review", "name": "Review", "description": "", "enabled": "on", "definition": text}

    page = admin_client.post(FLOW_ADD, data).content.decode()

    line = line_of(text, '"agent": "approver"')
    assert (
        f'data-line="{line}" data-column="7">line {line}</a> · <code style="color:#ba2121">tasks[1].agent</code>'
        in (page)
    )
    island = re.search(r'<script id="id_definition-problems" type="application/json">(.*?)</script>', page, re.S)
    marks = {p["path"]: p["line"] for p in json.loads(island[1])}
    assert marks["tasks[1].agent"] == line
    assert marks["conditions[0].when"] == line_of(text, '"when": "input.claim <"')


def test_refused_save_of_invalid_json__gives_the_editor_the_line_of_the_mistake(admin_client):
    data = {
        "slug": "x",
        "name": "X",
        "description": "",
        "enabled": "on",
        "definition": '{\n  "name": "x",\n  "tasks": [}',
    }

    page = admin_client.post(FLOW_ADD, data).content.decode()

    island = re.search(r'<script id="id_definition-problems" type="application/json">(.*?)</script>', page, re.S)
    [mark] = json.loads(island[1])
    assert (mark["line"], mark["column"]) == (3, 13)


def test_saved_flow_page__marks_its_warnings_at_their_lines(admin_client):
    with_orphan = copy.deepcopy(DEFINITION)
    with_orphan["tasks"].append({"name": "orphan", "agent": "pass", "input": {}})
    flow = services.flow_create(slug="review", name="Review", definition=with_orphan)

    page = admin_client.get(reverse("admin:flows_flow_change", args=[flow.pk])).content.decode()

    island = re.search(r'<script id="id_definition-problems" type="application/json">(.*?)</script>', page, re.S)
    [warning] = json.loads(island[1])
    # The text as the editor shows it (PostgreSQL's jsonb gives the keys back in its own order).
    text = html.unescape(re.search(r'<textarea[^>]*name="definition"[^>]*>\n?(.*?)</textarea>', page, re.S)[1])
    assert (warning["path"], warning["severity"]) == ("tasks[2]", "warning")
    assert warning["line"] == line_of(text, '"name": "orphan"') - 1  # the element starts at its brace


# --- locating paths --------------------------------------------------------------------------------------------


def test_json_places__names_places_as_the_validator_does():
    text = '{"a.b": {"c": [1, {"d": true}]},\n "e": [[null]], "f": "x\\"y", "f": 2}'
    places = JSONPlaces(text)

    assert places.locate("a.b.c[1].d") == Place(line=1, column=20)
    assert places.locate("e[0][0]") == Place(line=2, column=9)
    assert places.locate("f") == Place(line=2, column=30)  # a repeated key: the last, as json.loads keeps
    assert places.locate("a.b.c[1].missing") == Place(line=1, column=19)  # the object that lacks it
    assert places.locate("nowhere.at.all") == Place(line=1, column=1)
    assert JSONPlaces("[1,").locate("[0]") is None  # not JSON: nothing to locate
