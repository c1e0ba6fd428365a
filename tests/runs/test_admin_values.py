"""The run pages' values: documents as "PDF, 37 KB — download", JSON as a tree, and start forms filled in from
an earlier run that keep its documents out of the text area."""

import base64
import json
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from agentrunner.models import Role
from agentrunner.teams.services import team_default
from runs.admin.values import (
    TEXT_INLINE_MAX_CHARS,
    TREE_MAX_NODES,
    as_document,
    documents_in,
    put_at,
    value_at,
    without_documents,
)
from runs.models import Run, RunStatus, Step
from tests.conftest import join, team_named
from tests.flows.factories import chain, flow
from tests.runs.factories import make_run

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 148  # 37,897 bytes: "PDF, 37 KB"
PDF_BASE64 = base64.b64encode(PDF).decode()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000
START = reverse("admin:runs_run_start")


def change_url(run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


def value_url(run, of="input", at="") -> str:
    return reverse("admin:runs_run_value", args=[run.pk]) + "?" + urlencode({"of": of, "at": at})


def pdf_run(**fields) -> Run:
    return make_run(
        RunStatus.COMPLETED,
        agent_type="document-extractor",
        input={"filename": "policy.pdf", "pdf_base64": PDF_BASE64},
        result={"fields": {"policy_number": "PL-1"}, "pages": 1},
        **fields,
    )


def staff(django_user_model, *codenames, username="staff", role=None, team=None):
    """A staff member with these Django permissions and, if `role`, that role in `team` (the default team)."""
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    if role is not None:
        join(user, role, team)
    return user


# --- telling documents from text ---------------------------------------------------------------


def test_as_document__pdf_in_base64_is_a_pdf_of_its_decoded_size():
    document = as_document(PDF_BASE64)

    assert (document.label, document.media_type, document.size) == ("PDF", "application/pdf", len(PDF))
    assert document.description == "PDF, 37 KB"
    assert document.content() == PDF


def test_as_document__line_wrapped_base64_and_data_urls():
    wrapped = "\n".join(PDF_BASE64[i : i + 76] for i in range(0, len(PDF_BASE64), 76))
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()

    assert as_document(wrapped).content() == PDF
    assert as_document(data_url).description == "PNG image, 2 KB"
    assert as_document("data:text/plain;base64,aGVsbG8=").description == "Text, 5 bytes"


def test_as_document__short_base64_counts_only_under_a_base64_key():
    short = base64.b64encode(b"%PDF-1.7 tiny").decode()

    assert as_document(short) is None  # could be an id or a token
    assert as_document(short, key="pdf_base64").label == "PDF"


@pytest.mark.parametrize(
    "text",
    [
        "hello world " * 40,  # spaces: prose
        "a" * 301,  # not a multiple of four
        "abc",
        "0f" * 32,  # a hex digest, short
        "Policy number: PL-2025-1\n" * 20,
    ],
)
def test_as_document__ordinary_text_is_not_a_document(text):
    assert as_document(text) is None


def test_documents_in__finds_places_and_without_documents_leaves_the_rest():
    value = {"document": {"filename": "a.pdf", "pdf_base64": PDF_BASE64}, "pages": [PDF_BASE64, "x"], "n": 1}

    places = [at for at, _ in documents_in(value)]
    rest, taken = without_documents(value)

    assert places == ["/document/pdf_base64", "/pages/0"]
    assert rest == {"document": {"filename": "a.pdf"}, "pages": [None, "x"], "n": 1}
    assert [at for at, _ in taken] == places
    assert value["document"]["pdf_base64"] == PDF_BASE64  # the original is untouched


def test_put_at_and_value_at__json_pointers():
    value = {"a/b": {"~": [1, 2]}}

    assert value_at(value, "/a~1b/~0/1") == 2
    put_at(value, "/new/place", "x")
    assert value["new"] == {"place": "x"}
    with pytest.raises(KeyError):
        put_at(value, "/a~1b/~0/5", "x")


# --- the run page ------------------------------------------------------------------------------


def test_run_page__document_input_shows_kind_size_and_download_not_base64(admin_client):
    run = pdf_run()

    content = admin_client.get(change_url(run)).content.decode()

    assert "PDF, 37 KB — <a href=" in content
    assert value_url(run, at="/pdf_base64").replace("&", "&amp;") in content
    assert PDF_BASE64[1000:1100] not in content  # no base64 blob anywhere in the page
    assert '<span class="jt-key">filename</span> <span class="jt-str">policy.pdf</span>' in content


def test_download__returns_the_exact_bytes_as_an_attachment(admin_client):
    run = pdf_run()

    response = admin_client.get(value_url(run, at="/pdf_base64"))

    assert response.status_code == 200
    assert response.content == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="policy.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_download__a_steps_document_long_text_and_whole_value(admin_client):
    run = pdf_run()
    long_text = "line of text\n" * 3000
    step = Step.objects.create(
        run=run, sequence=1, name="copy", agent_type="pass", input={"doc": {"content_base64": PDF_BASE64}}
    )
    step.output = {"text": long_text}
    step.save()

    document = admin_client.get(value_url(run, of=f"step-{step.pk}-input", at="/doc/content_base64"))
    text = admin_client.get(value_url(run, of=f"step-{step.pk}-output", at="/text"))
    whole = admin_client.get(value_url(run, of="result"))

    assert document.content == PDF and document["Content-Type"] == "application/pdf"
    assert (
        document["Content-Disposition"]
        == f'attachment; filename="run-{str(run.pk)[:8]}-step-{step.pk}-input-content_base64.pdf"'
    )
    assert text.content.decode() == long_text and text["Content-Type"] == "text/plain; charset=utf-8"
    assert json.loads(whole.content) == run.result and whole["Content-Type"] == "application/json"


def test_download__unknown_places_are_not_found(admin_client):
    run = pdf_run()
    other = pdf_run()
    other_step = other.steps.get()

    assert admin_client.get(value_url(run, at="/nothing")).status_code == 404
    assert admin_client.get(value_url(run, at="/pdf_base64/x")).status_code == 404
    assert admin_client.get(value_url(run, of="step-999999-input")).status_code == 404
    assert admin_client.get(value_url(run, of=f"step-{other_step.pk}-input")).status_code == 404  # not this run's
    assert admin_client.get(value_url(run, of="secrets")).status_code == 404
    missing = reverse("admin:runs_run_value", args=["6f1c1f4e-2b6a-4d43-9d8e-0c9a4a1b2c3d"])
    assert admin_client.get(missing).status_code == 404


def test_download__only_for_who_may_see_the_run(client, django_user_model):
    run = pdf_run()
    url = value_url(run, at="/pdf_base64")

    # Django permissions no longer decide: a staff member of no team sees no runs at all.
    client.force_login(staff(django_user_model, "view_run", username="no-team"))
    assert client.get(url).status_code == 403
    assert client.get(change_url(run)).status_code == 403  # the same rule as the run page

    # Of another team: the run does not exist for them.
    client.force_login(staff(django_user_model, username="other-team", role=Role.ADMIN, team=team_named("other")))
    assert client.get(url).status_code == 404

    client.force_login(django_user_model.objects.create_user(username="not-staff", password="pw"))
    assert client.get(url).status_code == 302  # to the admin's login

    client.force_login(staff(django_user_model, username="viewer", role=Role.VIEWER))
    assert client.get(url).content == PDF


def test_download__needs_get(admin_client):
    run = pdf_run()

    assert admin_client.post(value_url(run, at="/pdf_base64")).status_code == 405


# --- the tree ----------------------------------------------------------------------------------


def test_tree__long_text_is_cut_with_the_whole_text_a_click_away(admin_client):
    medium = "word " * 100  # 500 characters: opens in place
    huge = "x y " * (TEXT_INLINE_MAX_CHARS // 2)  # too long for the page: a download
    run = make_run(RunStatus.COMPLETED, agent_type="pass", input={"medium": medium}, result={"huge": huge})

    content = admin_client.get(change_url(run)).content.decode()

    assert "show all 500 characters</summary>" in content
    assert f'<div class="jt-full">{medium}</div>' in content
    assert f"download all {len(huge):,} characters" in content
    assert huge not in content


def test_tree__a_huge_value_shows_its_first_values_and_offers_the_file(admin_client):
    run = make_run(RunStatus.COMPLETED, agent_type="pass", result={"items": list(range(TREE_MAX_NODES + 500))})

    content = admin_client.get(change_url(run)).content.decode()

    assert f"Only the first {TREE_MAX_NODES:,} values are shown here." in content
    assert content.count("<details") == content.count("</details>")
    assert "Download as a JSON file" in content


def test_tree__a_flow_runs_steps_show_their_input_and_output(admin_client):
    version = flow(slug="docs", definition=chain(("copy", "pass", {"doc": "{{ input.doc }}"}))).current_version
    run = Run.objects.create(
        team=team_default(), agent_type="", flow_version=version, status=RunStatus.COMPLETED, input={"doc": PDF_BASE64}
    )
    Step.objects.create(
        run=run, name="copy", agent_type="pass", status="SUCCESS", input={"doc": PDF_BASE64}, output={"ok": True}
    )

    content = admin_client.get(change_url(run)).content.decode()

    assert "Each step&#x27;s input and output" in content
    assert content.count("PDF, 37 KB — <a href=") == 2  # the run's input and the step's
    assert PDF_BASE64[1000:1100] not in content


# --- start forms filled in from an earlier run -------------------------------------------------


def test_start_page__from_a_run_keeps_its_document_out_of_the_text_area(admin_client):
    source = pdf_run()

    response = admin_client.get(START, {"from": source.pk})

    content = response.content.decode()
    form = response.context["form"]
    assert PDF_BASE64[1000:1100] not in content
    assert json.loads(form["input"].value()) == {"filename": "policy.pdf"}
    assert form["agent_type"].value() == "document-extractor"
    assert "PDF, 37 KB" in content and "(at pdf_base64)" in content
    assert form["keep"].value() == ["/pdf_base64"]


def test_start_page__kept_document_goes_back_into_the_new_run(admin_client):
    source = pdf_run()
    data = {
        "agent_type": "document-extractor",
        "input": '{"filename": "policy.pdf", "mode": "rules"}',
        "from_run": source.pk,
        "keep": ["/pdf_base64"],
    }

    response = admin_client.post(START, data)

    new = Run.objects.exclude(pk=source.pk).get()
    assert response.status_code == 302
    assert new.input == {"filename": "policy.pdf", "mode": "rules", "pdf_base64": PDF_BASE64}


def test_start_page__unticked_document_is_left_out(admin_client):
    source = make_run(RunStatus.COMPLETED, agent_type="pass", input={"keep": 1, "scan": PDF_BASE64})

    admin_client.post(START, {"agent_type": "pass", "input": '{"keep": 1}', "from_run": source.pk})

    assert Run.objects.exclude(pk=source.pk).get().input == {"keep": 1}


def test_start_page__chosen_file_replaces_the_kept_document(admin_client):
    source = pdf_run()
    upload = SimpleUploadedFile("other.txt", b"Policy number: PL-2")
    data = {
        "agent_type": "document-extractor",
        "input": "{}",
        "from_run": source.pk,
        "keep": ["/pdf_base64"],
        "document": upload,
    }

    admin_client.post(START, data)

    assert Run.objects.exclude(pk=source.pk).get().input == {"filename": "other.txt", "text": "Policy number: PL-2"}


def test_start_page__a_run_id_that_is_not_one_fills_nothing_in(admin_client):
    response = admin_client.get(START, {"from": "not-a-run"})

    assert response.status_code == 200
    assert "keep" not in response.context["form"].fields


def test_run_page__offers_re_run_with_changes(admin_client):
    run = pdf_run()

    content = admin_client.get(change_url(run)).content.decode()

    assert f'href="{START}?from={run.pk}"' in content and "Re-run with changes" in content


def test_run_now__latest_runs_document_is_kept_not_shown(admin_client):
    definition = chain(("extract", "document-extractor", "{{ input.document }}"))
    extractor_flow = flow(slug="extract", definition=definition)
    document = {"filename": "policy.pdf", "pdf_base64": PDF_BASE64}
    source = Run.objects.create(
        team=team_default(),
        agent_type="",
        flow_version=extractor_flow.current_version,
        status=RunStatus.COMPLETED,
        input={"document": document, "claim": 5},
    )
    url = reverse("admin:flows_flow_run", args=[extractor_flow.pk])

    page = admin_client.get(url)
    admin_client.post(
        url, {"input": page.context["form"]["input"].value(), "from_run": source.pk, "keep": ["/document/pdf_base64"]}
    )

    assert PDF_BASE64[1000:1100] not in page.content.decode()
    assert json.loads(page.context["form"]["input"].value()) == {"document": {"filename": "policy.pdf"}, "claim": 5}
    assert "PDF, 37 KB" in page.content.decode() and "(at document → pdf_base64)" in page.content.decode()
    assert Run.objects.exclude(pk=source.pk).get().input == {"document": document, "claim": 5}


def test_run_now__chosen_file_replaces_the_document(admin_client):
    extractor_flow = flow(slug="extract", definition=chain(("extract", "document-extractor", "{{ input.document }}")))
    source = Run.objects.create(
        team=team_default(),
        agent_type="",
        flow_version=extractor_flow.current_version,
        status=RunStatus.COMPLETED,
        input={"document": {"filename": "policy.pdf", "pdf_base64": PDF_BASE64}},
    )
    url = reverse("admin:flows_flow_run", args=[extractor_flow.pk])
    upload = SimpleUploadedFile("new.txt", b"Policy number: PL-3")

    admin_client.post(url, {"input": "{}", "from_run": source.pk, "keep": ["/document/pdf_base64"], "document": upload})

    new = Run.objects.exclude(pk=source.pk).get()
    assert new.input == {"document": {"filename": "new.txt", "text": "Policy number: PL-3"}}


def test_run_now__from_a_run_of_another_flow_is_the_latest_run_instead(admin_client):
    mine = flow(slug="mine", definition=chain(("a", "pass", {"x": "{{ input.x }}"})))
    other = flow(slug="other", definition=chain(("a", "pass", {"x": "{{ input.x }}"})))
    Run.objects.create(
        team=team_default(),
        agent_type="",
        flow_version=mine.current_version,
        status=RunStatus.COMPLETED,
        input={"x": 1},
    )
    foreign = Run.objects.create(
        team=team_default(),
        agent_type="",
        flow_version=other.current_version,
        status=RunStatus.COMPLETED,
        input={"x": 2},
    )

    response = admin_client.get(reverse("admin:flows_flow_run", args=[mine.pk]), {"from": foreign.pk})

    assert json.loads(response.context["form"]["input"].value()) == {"x": 1}


def test_download__a_declared_type_we_do_not_know_is_a_plain_file(admin_client):
    page = "data:text/html;base64," + base64.b64encode(b"<script>alert(1)</script>" + bytes(300)).decode()
    run = make_run(RunStatus.COMPLETED, agent_type="pass", input={"page": page})

    response = admin_client.get(value_url(run, at="/page"))

    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "File, 325 bytes" in admin_client.get(change_url(run)).content.decode()
