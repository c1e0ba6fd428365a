import pytest

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("path", ["/api/v1/runs", "/api/v1/agents/run", "/api/v1/flows", "/api/v1/flow/execute"])
def test_json_nested_too_deeply__is_a_400_not_a_500(staff_api, path):
    response = staff_api.post(path, DEEP, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
