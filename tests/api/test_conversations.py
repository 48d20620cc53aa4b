"""Conversation memory, through the API: a job that names a conversation is sent its
earlier turns, and adds its own when it succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, start_service


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


def sent_history(memory: list[dict[str, Any]], prompt_tokens: int, own: str) -> int:
    """How many of the conversation's newest messages a job whose prompt counted
    `prompt_tokens` words was sent before its own message `own`."""
    for n in range(len(memory) + 1):
        if sum(words(m["content"]) for m in memory[len(memory) - n :]) + words(own) == (
            prompt_tokens
        ):
            return n
    raise AssertionError(f"no suffix of the conversation accounts for {prompt_tokens} tokens")


def test_a_long_conversation_sends_the_newest_turns_that_fit_the_context_window(
    service: Service,
) -> None:
    """sim-short-context has a 100-token window: 16 for the answer, the rest for the
    turns (an estimated 4 characters a token, 4 more a message)."""
    own = "And what comes next?"
    with service.client(service.create_key()) as client:
        for turn in range(5):
            said = chat(
                client,
                f"Turn {turn}: tell me more.",
                "long",
                model="sim-short-context",
                max_tokens=16,
            )
            assert said.status_code == 200, said.text
        memory = client.get("/v1/conversations/long").json()["messages"]
        last = chat(client, own, "long", model="sim-short-context", max_tokens=16)
        after = client.get("/v1/conversations/long").json()["messages"]
    assert last.status_code == 200, last.text
    n = sent_history(memory, last.json()["usage"]["prompt_tokens"], own)
    assert 0 < n < len(memory) == 10  # some turns, not all
    assert memory[-n]["role"] == "user"  # whole turns, from a question on
    estimated = sum(-(-len(m["content"]) // 4) + 4 for m in [*memory[-n:], {"content": own}])
    assert estimated + 16 <= 100
    # The conversation itself keeps every message, the new turn's too.
    assert len(after) == 12 and after[:10] == memory


def test_a_conversation_past_the_message_limit_sends_its_newest_turns(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    svc = start_service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db'}",
        workers=(("io", 4),),
        extra_env={"INFERQ_MAX_MESSAGES": "5"},
    )
    try:
        with svc.client() as client:
            for turn in range(3):
                assert chat(client, f"Question {turn}?", "c").status_code == 200
            memory = client.get("/v1/conversations/c").json()["messages"]
            last = chat(client, "And the last one?", "c")
    finally:
        svc.stop()
    assert last.status_code == 200, last.text  # was 422: 7 messages against a limit of 5
    # Room for 4 beside its own: the two newest turns.
    assert sent_history(memory, last.json()["usage"]["prompt_tokens"], "And the last one?") == 4


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


def test_a_key_lists_its_conversations_the_most_recently_active_first(service: Service) -> None:
    with service.client(service.create_key()) as client:
        for name in ("a", "b", "c"):
            chat(client, f"Hello from {name}.", name)
        chat(client, "Back to a.", "a")
        first = client.get("/v1/conversations", params={"limit": 2}).json()
        cursor = first["next_cursor"]
        second = client.get("/v1/conversations", params={"limit": 2, "cursor": cursor}).json()
        bad_cursors = [
            client.get("/v1/conversations", params={"cursor": cursor})
            # The last two past any message id (an int32 on PostgreSQL: found by fuzzing).
            for cursor in ("not-a-cursor", "-1", "²", "9" * 30, str(2**31))
        ]
        with service.client(service.create_key()) as stranger:
            theirs = stranger.get("/v1/conversations").json()
    assert [(c["id"], c["messages"]) for c in first["data"]] == [("a", 4), ("c", 2)]
    assert first["data"][0]["updated_at"] > first["data"][0]["created_at"]
    assert [c["id"] for c in second["data"]] == ["b"] and second["next_cursor"] is None
    assert theirs == {"data": [], "next_cursor": None}
    for bad in bad_cursors:
        assert bad.status_code == 422, bad.text
        assert bad.headers["content-type"] == "application/problem+json"
