"""`POST /v1/embeddings` through a running service, driven by the official OpenAI SDK."""

from __future__ import annotations

import base64
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from inferq.providers.embeddings import SentenceTransformersProvider
from tests.conftest import MODELS, RedisDatabases, Service, start_service
from tests.embedding_support import assert_close
from tests.embedding_support import minilm as direct_minilm

MODEL = "all-minilm-l6-v2"


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0)


@pytest.fixture
def minilm() -> SentenceTransformersProvider:
    """The same model computed here, directly, to compare the service's answers with."""
    return direct_minilm()


def job_of(service: Service, job_id: str) -> dict[str, Any]:
    with service.client() as client:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return job


def test_embeddings_match_the_model_computed_directly(
    service: Service, sdk: openai.OpenAI, minilm: SentenceTransformersProvider
) -> None:
    texts = ["The weather is lovely today.", "Quarterly revenue grew by 8%.", "日本語も"]
    raw = sdk.embeddings.with_raw_response.create(model=MODEL, input=texts, encoding_format="float")
    response = raw.parse()
    expected = minilm.embed(texts)
    assert response.object == "list" and response.model == MODEL
    assert [d.index for d in response.data] == [0, 1, 2]
    for item, vector in zip(response.data, expected.vectors, strict=True):
        assert item.object == "embedding" and len(item.embedding) == 384
        assert_close(item.embedding, vector)
    assert response.usage.prompt_tokens == expected.prompt_tokens
    assert response.usage.total_tokens == expected.prompt_tokens
    job = job_of(service, raw.headers["x-inferq-job-id"])
    assert job["status"] == "succeeded" and job["priority"] == "high"
    assert job["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": 0}


def test_a_single_string_input_gives_one_embedding(
    sdk: openai.OpenAI, minilm: SentenceTransformersProvider
) -> None:
    response = sdk.embeddings.create(model=MODEL, input="just one", encoding_format="float")
    assert len(response.data) == 1
    assert_close(response.data[0].embedding, minilm.embed(["just one"]).vectors[0])


def test_base64_is_little_endian_float32_of_the_same_vectors(
    service: Service, sdk: openai.OpenAI
) -> None:
    texts = ["encode me", "and me"]
    floats = sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    with service.client() as client:
        raw = client.post(
            "/v1/embeddings", json={"model": MODEL, "input": texts, "encoding_format": "base64"}
        )
    assert raw.status_code == 200, raw.text
    for item, expected in zip(raw.json()["data"], floats.data, strict=True):
        packed = base64.b64decode(item["embedding"])
        assert len(packed) == 384 * 4
        assert_close(list(struct.unpack("<384f", packed)), expected.embedding)
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    decoded = sdk.embeddings.create(model=MODEL, input=texts)
    for got, expected in zip(decoded.data, floats.data, strict=True):
        assert_close(got.embedding, expected.embedding)


def test_dimensions_equal_to_the_models_are_accepted_and_others_refused(
    sdk: openai.OpenAI,
) -> None:
    response = sdk.embeddings.create(model=MODEL, input="x", dimensions=384)
    assert len(response.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=MODEL, input="x", dimensions=128)
    assert "384-dimensional" in refused.value.message
    assert refused.value.param == "dimensions"


def test_bad_requests_map_to_the_sdk_exception_classes(
    service: Service, sdk: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as chat_model:
        sdk.embeddings.create(model="sim", input="x")
    assert "'sim' is a chat model, not an embedding model" in chat_model.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=MODEL, input=[])
    with pytest.raises(openai.BadRequestError) as empty_string:
        sdk.embeddings.create(model=MODEL, input=["fine", ""])
    assert empty_string.value.param == "input.1"
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=MODEL, input=["x"] * 2049)
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=MODEL, input=[[1, 2, 3]])  # token ids
    wrong = openai.OpenAI(base_url=f"{service.url}/v1", api_key="iq_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=MODEL, input="x")


def test_the_jobs_api_refuses_an_embedding_model(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json={"model": MODEL, "prompt": "hello"})
    assert response.status_code == 422
    assert "is an embedding model, not a chat model" in response.json()["detail"]


def test_a_failed_embedding_job_is_an_error_naming_the_job(
    service: Service, sdk: openai.OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.embeddings.create(model="embed-unreachable", input="x")
    assert failed.value.status_code == 502
    job_id = failed.value.response.headers["x-inferq-job-id"]
    body = failed.value.body
    assert isinstance(body, dict) and body["job_id"] == job_id
    job = job_of(service, job_id)
    assert job["status"] == "failed" and job["error"]["type"] == "unavailable"


def test_concurrent_requests_are_served_by_fewer_model_calls(
    service: Service, sdk: openai.OpenAI, minilm: SentenceTransformersProvider
) -> None:
    texts = [f"request number {i} of a burst" for i in range(16)]

    def one(text: str) -> tuple[list[float], str]:
        raw = sdk.embeddings.with_raw_response.create(
            model=MODEL, input=text, encoding_format="float"
        )
        return raw.parse().data[0].embedding, raw.headers["x-inferq-job-id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, texts))
    calls: dict[str, list[dict[str, Any]]] = {}
    for (vector, job_id), expected in zip(answers, minilm.embed(texts).vectors, strict=True):
        assert_close(vector, expected)  # a job's vector does not depend on its batch
        call = job_of(service, job_id)["result"]["model_call"]
        calls.setdefault(call["id"], []).append(call)
    assert len(calls) < len(texts), calls
    for seen in calls.values():
        # Each call reports every job it served, and all of them are in this burst.
        assert len(seen) == seen[0]["jobs"] == seen[0]["inputs"]


def test_the_jobs_result_holds_the_vectors_for_clients_that_poll(
    service: Service, sdk: openai.OpenAI
) -> None:
    raw = sdk.embeddings.with_raw_response.create(model=MODEL, input=["a", "b"])
    job = job_of(service, raw.headers["x-inferq-job-id"])
    vectors = job["result"]["embeddings"]
    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    for got, item in zip(vectors, raw.parse().data, strict=True):
        assert_close(got, item.embedding)


def test_a_wait_past_the_limit_answers_504_naming_the_job(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    idle = start_service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        workers=(),
        extra_env={"INFERQ_SYNC_WAIT_SECONDS": "1"},
        models_file=MODELS,
    )
    try:
        with idle.client() as client:
            response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
            job_id = response.headers["x-inferq-job-id"]
            job = client.get(f"/v1/jobs/{job_id}").json()
    finally:
        idle.stop()
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "job_pending" and error["job_id"] == job_id
    assert f"/v1/jobs/{job_id}" in error["message"]
    assert job["status"] == "queued"
