"""A template whose prompt does not parse is refused on save (SPEC §12, where Mission
Control stores it), with the way to send braces literally; nothing is stored."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ADMIN_KEY
from tests.reliability.conftest import make_app
from tests.support import state_digest

RAW = "to send the braces literally wrap them in {% raw %}...{% endraw %}"
UNCLOSED = "Summarise {{ inputs.repo }}:\n{% if inputs.diff %}{{ inputs.diff }}"


@pytest.fixture(scope="module")
def client(settings):
    return make_app(settings).test_client()


def send(client, method: str, body: dict):
    return client.open("/api/workflows", method=method, json=body,
                       headers={"x-api-key": ADMIN_KEY})


def create(client, **fields) -> dict:
    resp = send(client, "POST", {"name": f"t-{uuid.uuid4().hex[:8]}", "agent": "echo", **fields})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["template"]


@pytest.mark.parametrize("field, prompt, error", [
    ("prompt", UNCLOSED, "prompt: does not parse as a template "
     "(line 2: Unexpected end of template. Jinja was looking for the following tags: "
     "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.); "
     + RAW),
    ("task_prompt", "awk '{{print $1}}'", "prompt: does not parse as a template (line 1: "),
    ("prompt", "{{ steps[0].output | no_such_filter }}",
     "prompt: does not parse as a template (line 1: No filter named 'no_such_filter'.)"),
])
def test_post_and_put_refuse_a_prompt_that_does_not_parse(client, settings, field, prompt,
                                                          error):
    existing = create(client, prompt="Summarise {{ inputs.repo }}")
    before = state_digest(settings.database_url)
    for method, body in (("POST", {"name": "broken", "agent": "echo", field: prompt}),
                         ("PUT", {"id": existing["id"], field: prompt})):
        resp = send(client, method, body)
        assert resp.status_code == 400, (method, resp.get_json())
        message = resp.get_json()["error"]
        assert message.startswith(error) and message.endswith(RAW), (method, message)
    assert state_digest(settings.database_url) == before


@pytest.mark.parametrize("prompt", [
    "for f in *.py; do echo {$f}; done; awk '{print $1}'",
    "{% raw %}{{ not a template }}{% endraw %} {{ inputs.repo }}",
    "{{ inputs.repo }}}",
])
def test_prompts_that_parse_are_saved_as_sent(client, prompt):
    tpl = create(client, prompt=prompt)
    assert tpl["prompt"] == prompt
    resp = send(client, "PUT", {"id": tpl["id"], "prompt": prompt + "\n{{ steps | length }}"})
    assert resp.status_code == 200, resp.get_json()
