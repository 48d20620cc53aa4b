"""Conversation memory, through the API: a job that names a conversation is sent its
earlier turns, and adds its own when it succeeds."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import Service


def words(text: str) -> int:
    """The simulated provider counts a prompt's tokens as its words."""
    return len(text.split())


def chat(client: httpx.Client, content: str, conversation: str, **more: Any) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "user", "content": content}], **more}
    return client.post("/v1/chat/completions", json={**body, "conversation_id": conversation})


def test_a_conversation_sends_its_earlier_turns_and_keeps_each_new_one(service: Service) -> None:
    with service.client(service.create_key()) as client:
        first = chat(client, "My name is Ada.", "support:42")
        answer = first.json()["choices"][0]["message"]["content"]
        second = wait_terminal(
            client,
            submit(
                client,
                model="sim",
                messages=[{"role": "user", "content": "What is my name?"}],
                conversation_id="support:42",
            )["id"],
        )
        memory = client.get("/v1/conversations/support:42").json()
        with service.client(service.create_key()) as stranger:
            theirs = stranger.get("/v1/conversations/support:42")
        deleted = client.delete("/v1/conversations/support:42")
        gone = client.get("/v1/conversations/support:42")
        afresh = chat(client, "Hello again.", "support:42")
    assert first.status_code == 200 and second["status"] == "succeeded"
    # The second job was sent the first turn before its own message.
    assert second["usage"]["prompt_tokens"] == words("My name is Ada.") + words(answer) + 4
    assert [(m["role"], m["content"]) for m in memory["messages"]] == [
        ("user", "My name is Ada."),
        ("assistant", answer),
        ("user", "What is my name?"),
        ("assistant", second["output"]["text"]),
    ]
    assert [m["job_id"] for m in memory["messages"]] == [
        first.headers["x-inferq-job-id"],
        first.headers["x-inferq-job-id"],
        second["id"],
        second["id"],
    ]
    assert theirs.status_code == 404  # another key's conversation of the same name
    assert theirs.headers["content-type"] == "application/problem+json"
    assert deleted.json() == {"id": "support:42", "deleted_messages": 4}
    assert gone.status_code == 404
    assert afresh.json()["usage"]["prompt_tokens"] == words("Hello again.")


def test_a_failed_turn_is_not_remembered(service: Service) -> None:
    with service.client(service.create_key()) as client:
        kept = chat(client, "Remember this.", "t1")
        failed = chat(client, "This fails.", "t1", model="sim-fail")
        memory = client.get("/v1/conversations/t1").json()
    assert kept.status_code == 200 and failed.status_code >= 400
    assert [m["content"] for m in memory["messages"]][0::2] == ["Remember this."]
    assert len(memory["messages"]) == 2


def test_bad_conversation_requests_are_refused_with_a_problem(service: Service) -> None:
    with service.client() as client:
        bad_id = chat(client, "x", "not an id!")
        on_prompt = client.post(
            "/v1/jobs", json={"model": "sim", "prompt": "x", "conversation_id": "c"}
        )
        bad_path = client.get("/v1/conversations/" + "x" * 65)
    for response in (on_prompt, bad_path):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert "conversation_id" in on_prompt.text
    # The OpenAI-shaped route answers as OpenAI does: 400 naming the parameter.
    assert bad_id.status_code == 400 and bad_id.json()["error"]["param"] == "conversation_id"
