"""OpenAI's API on the queue, driven by the official SDK and by LangChain's ChatOpenAI."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.conftest import RedisDatabases, Service, start_service, wait_for


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0)


def job_of(service: Service, job_id: str) -> dict[str, object]:
    with service.client() as client:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
    return job


def test_chat_completion_is_a_job_and_answers_in_openai_shape(
    service: Service, sdk: openai.OpenAI
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=16,
        temperature=0,
        seed=5,
    )
    completion = raw.parse()
    job = job_of(service, raw.headers["x-inferq-job-id"])
    assert completion.object == "chat.completion"
    assert completion.id == f"chatcmpl-{job['id']}"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == job["output"]["text"]  # type: ignore[index]
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert job["priority"] == "high" and job["status"] == "succeeded"


def test_chat_stream_chunks_add_up_to_the_job_output_and_end_with_usage(
    service: Service, sdk: openai.OpenAI
) -> None:
    stream = sdk.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    job_id = chunks[0].id.removeprefix("chatcmpl-")
    job = job_of(service, job_id)
    assert text == job["output"]["text"]  # type: ignore[index]
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["length"] or [
        c.choices[0].finish_reason for c in finishing
    ] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == job["usage"]["completion_tokens"]  # type: ignore[index]


def test_stream_cut_after_the_first_tokens_ends_with_an_error_not_done(
    service: Service,
) -> None:
    body = {"model": "sim-cut", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with (
        service.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body, timeout=30) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in lines[-1]
    assert '"error"' in lines[-1] and '"rejected"' in lines[-1]
    # The five tokens streamed before the cut reach the client (held text is sent with
    # the error, not dropped).
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text.split()) == 5


def test_sdk_raises_on_a_stream_that_fails_midway(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="sim-cut", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert len(text.split()) == 5


def test_text_completion_whole_and_streamed(service: Service, sdk: openai.OpenAI) -> None:
    whole = sdk.completions.create(
        model="gemma-3-270m", prompt="The capital of France is", max_tokens=8, temperature=0, seed=1
    )
    assert whole.object == "text_completion" and whole.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in sdk.completions.create(
            model="gemma-3-270m",
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            seed=1,
            stream=True,
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


def test_non_stream_completion_writes_no_live_deltas(service: Service, sdk: openai.OpenAI) -> None:
    # Nobody reads a non-stream answer as it comes: its job's event stream carries the
    # terminal event only, with the whole text.
    raw = sdk.chat.completions.with_raw_response.create(
        model="sim", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8
    )
    text = raw.parse().choices[0].message.content
    job_id = raw.headers["x-inferq-job-id"]
    with service.client() as client:
        body = client.get(f"/v1/jobs/{job_id}/events").text
    events = [
        line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("event:")
    ]
    assert events == ["done"]
    assert text and text in body

    streamed = sdk.chat.completions.with_raw_response.create(
        model="sim",
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=8,
        stream=True,
    )
    for _ in streamed.parse():
        pass
    with service.client() as client:
        body = client.get(f"/v1/jobs/{streamed.headers['x-inferq-job-id']}/events").text
    assert body.count("event: delta") > 1


def test_models_list_in_openai_shape(sdk: openai.OpenAI) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert {"gemma-3-270m", "sim"} <= ids


def test_an_empty_stop_sequence_is_a_400_naming_stop_not_a_500(sdk: openai.OpenAI) -> None:
    # The OpenAI schema took it and the job's refused it later: an unhandled error.
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as chat:
        sdk.chat.completions.create(model="sim", messages=messages, stop=[""])  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as text:
        sdk.completions.create(model="sim", prompt="x", stop="")
    for bad in (chat, text):
        assert bad.value.param == "stop" and "must not be empty" in bad.value.message


def test_errors_map_to_the_sdk_exception_classes(service: Service, sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="sim", messages=messages, n=2)  # type: ignore[arg-type]
    assert bad.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="sim", messages=messages, temperature=9)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="sim", messages=[])
    wrong = openai.OpenAI(base_url=f"{service.url}/v1", api_key="iq_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="sim", messages=messages)  # type: ignore[arg-type]


def test_failed_job_is_an_error_naming_the_job(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="sim-fail", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    body = failed.value.body
    assert isinstance(body, dict) and body.get("job_id")


def test_a_prompt_past_the_models_context_is_a_400_naming_the_job(sdk: openai.OpenAI) -> None:
    """llama.cpp refuses a prompt longer than its context window: the client's request
    is at fault, so the OpenAI SDK sees a BadRequestError (400), not a gateway failure."""
    too_long = [{"role": "user", "content": "word " * 3000}]  # gemma-3-270m: 2048 tokens
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gemma-3-270m", messages=too_long, max_tokens=4)  # type: ignore[arg-type]
    body = refused.value.body
    assert isinstance(body, dict) and body.get("job_id")
    assert body["type"] == "invalid_request_error" and body["code"] == "job_invalid"
    assert "exceed context window" in body["message"]
    # A simulated provider that answers 400 the same; a stream ends with the same error.
    with pytest.raises(openai.BadRequestError):
        sdk.completions.create(model="sim-invalid", prompt="x")
    stream = sdk.chat.completions.create(
        model="sim-invalid", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError) as ended:
        list(stream)
    assert "invalid_request" in str(ended.value.body)


def test_streaming_client_that_disconnects_cancels_its_job(service: Service) -> None:
    body = {"model": "sim-slow", "messages": [{"role": "user", "content": "long"}], "stream": True}
    with service.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=body, timeout=30) as response:
            job_id = response.headers["x-inferq-job-id"]
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break
        wait_for(lambda: job_of(service, job_id)["status"] == "cancelled", timeout=15)
    assert job_of(service, job_id)["output"]["finish_reason"] == "cancelled"  # type: ignore[index]


def test_langchain_chat_openai_invokes_and_streams_against_inferq(service: Service) -> None:
    llm = ChatOpenAI(
        base_url=f"{service.url}/v1",
        api_key=service.key,
        model="sim",
        max_retries=0,
        timeout=30,
    )
    answer = llm.invoke("Hello there")
    assert isinstance(answer.content, str) and answer.content
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Hello there"))
    assert streamed == answer.content  # the simulated provider is deterministic per prompt


def test_non_stream_wait_past_the_limit_answers_504_naming_the_job(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    idle = start_service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        workers=(),
        extra_env={"INFERQ_SYNC_WAIT_SECONDS": "1"},
    )
    try:
        with idle.client() as client:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "sim", "messages": [{"role": "user", "content": "x"}]},
            )
            job_id = response.headers["x-inferq-job-id"]
            job = client.get(f"/v1/jobs/{job_id}").json()
    finally:
        idle.stop()
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "job_pending" and error["job_id"] == job_id
    assert job_id in error["message"]
    assert job["status"] == "queued"
