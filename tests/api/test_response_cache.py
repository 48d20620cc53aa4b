"""The exact response cache, through the API: a repeated request is answered without a
provider call, and only for the key that asked before."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, start_service
from tests.test_worker import completions


def calls_for(service: Service, prompt: str) -> int:
    """How many times the simulated provider answered `prompt`."""
    return sum(1 for record in completions(service) if prompt in str(record["prompt"]))


def run(client: httpx.Client, **body: Any) -> dict[str, Any]:
    return wait_terminal(client, submit(client, **body)["id"], timeout=60)


def test_a_repeated_request_is_answered_from_the_cache_without_a_provider_call(
    service: Service,
) -> None:
    prompt = f"cache me {uuid.uuid4().hex[:8]}"
    asked = {"model": "sim-slow", "prompt": prompt, "max_tokens": 5, "cache": "exact"}
    with service.client() as client:
        first = run(client, **asked)
        second = run(client, **asked)
        hotter = run(client, **asked, temperature=0.5)  # another request: a miss
        uncached = run(client, **{**asked, "cache": "off"})  # neither reads nor keeps
        third = run(client, **asked)
        other_key = service.create_key()
        with service.client(other_key) as stranger:
            theirs = run(stranger, **asked)
    for job in (first, second, hotter, uncached, third, theirs):
        assert job["status"] == "succeeded", job
    assert [first["cached"], second["cached"], third["cached"]] == [False, True, True]
    assert second["output"] == first["output"] == third["output"]
    assert second["usage"] == first["usage"] and second["served_model"] == "sim-slow"
    assert second["cost_usd"] == 0.0
    assert not hotter["cached"] and not uncached["cached"]
    assert not theirs["cached"]  # one key's answers never reach another key
    # The provider answered: first, hotter, uncached and the other key's; not the hits.
    assert calls_for(service, prompt) == 4


def test_cache_hits_spend_none_of_the_keys_tokens_per_minute(service: Service) -> None:
    """A key's tokens-per-minute limit guards the provider: answers from the cache
    settle their reservation to nothing, so repeating a cached request is not refused."""
    asked = {"model": "sim", "prompt": f"budget {uuid.uuid4().hex[:8]}", "max_tokens": 8}
    with service.client(service.create_key("--tpm", "120")) as client:
        miss = run(client, **asked, cache="exact")
        hits = [run(client, **asked, cache="exact") for _ in range(15)]
        uncached = [client.post("/v1/jobs", json=asked) for _ in range(15)]
    spent = miss["usage"]["prompt_tokens"] + miss["usage"]["completion_tokens"]
    assert 15 * spent > 120  # fifteen provider calls' worth would be refused
    assert [job["cached"] for job in hits] == [True] * 15
    # Provider calls do spend it: the same request uncached is refused within 15.
    assert 429 in [response.status_code for response in uncached]


def test_a_key_empties_its_cache_and_only_its_own(service: Service) -> None:
    asked = {"model": "sim", "prompt": f"purge {uuid.uuid4().hex[:8]}", "cache": "exact"}
    with (
        service.client(service.create_key()) as client,
        service.client(service.create_key()) as other,
    ):
        mine, theirs = run(client, **asked), run(other, **asked)
        run(client, model="sim", prompt="Name three colours.", cache="semantic")
        purged = client.delete("/v1/cache")
        again = run(client, **asked)
        meaning = run(client, model="sim", prompt="Name three colours!", cache="semantic")
        still_theirs = run(other, **asked)
        empty = client.delete("/v1/cache")
    assert [mine["cached"], theirs["cached"]] == [False, False]
    # The exact answer, the semantic one and its index of vectors.
    assert purged.status_code == 200 and purged.json() == {"deleted_entries": 3}
    assert again["cached"] is False  # asked again after the purge: run again
    assert meaning["cached"] is False
    assert still_theirs["cached"] is True  # the other key's entry survived
    assert empty.json() == {"deleted_entries": 3}  # cached anew


def test_openai_routes_take_cache_and_say_whether_it_answered(service: Service) -> None:
    content = f"cache me too {uuid.uuid4().hex[:8]}"
    body = {
        "model": "sim-slow",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 5,
        "cache": "exact",
    }
    with service.client() as client:
        miss = client.post("/v1/chat/completions", json=body)
        hit = client.post("/v1/chat/completions", json=body)
        plain = client.post("/v1/chat/completions", json={**body, "cache": "off"})
        streamed = ""
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            job_id = r.headers["x-inferq-job-id"]
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        for line in lines[:-1]:
            choices = json.loads(line.removeprefix("data: "))["choices"]
            streamed += choices[0]["delta"].get("content") or ""
        streamed_job = client.get(f"/v1/jobs/{job_id}").json()
    assert miss.status_code == hit.status_code == plain.status_code == 200
    assert miss.headers["x-inferq-cache"] == "miss" and hit.headers["x-inferq-cache"] == "hit"
    assert "x-inferq-cache" not in plain.headers
    answer = miss.json()["choices"][0]["message"]["content"]
    assert answer and hit.json()["choices"][0]["message"]["content"] == answer
    # A stream of the same request is the same request: answered from the cache too.
    assert streamed_job["cached"] and streamed == answer and lines[-1] == "data: [DONE]"
    assert calls_for(service, content) == 2  # the miss and the uncached one


def test_an_unknown_cache_mode_is_refused_with_a_problem(service: Service) -> None:
    with service.client() as client:
        response = client.post("/v1/jobs", json={"model": "sim", "prompt": "x", "cache": "fuzzy"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "cache" in response.text


def test_a_request_that_means_the_same_is_answered_by_the_semantic_cache(
    service: Service,
) -> None:
    def ask(client: httpx.Client, content: str, cache: str = "semantic", **more: Any) -> Any:
        body = {"model": "sim-slow", "messages": [{"role": "user", "content": content}]}
        return client.post(
            "/v1/chat/completions", json={**body, "max_tokens": 5, "cache": cache, **more}
        )

    with service.client(service.create_key()) as client:  # a key of its own: empty cache
        first = ask(client, "What is the capital of France?")
        alike = ask(client, "what's the capital of France?")
        other = ask(client, "What is the capital of Spain?")
        hotter = ask(client, "what's the capital of France?", temperature=0.7)
        exact = ask(client, "What is the capital of France ?", cache="exact")
        job = client.get(f"/v1/jobs/{alike.headers['x-inferq-job-id']}").json()
    assert [r.headers["x-inferq-cache"] for r in (first, alike, other, hotter, exact)] == [
        "miss",
        "hit",  # cosine 0.996 with all-MiniLM
        "miss",  # 0.71: another question
        "miss",  # other sampling parameters: another answer
        "miss",  # "exact" takes no near match
    ]
    answer = first.json()["choices"][0]["message"]["content"]
    assert alike.json()["choices"][0]["message"]["content"] == answer
    assert job["cached"] and job["cost_usd"] == 0.0
    assert calls_for(service, "capital of France") == 3  # first, hotter, exact


def test_the_semantic_cache_without_its_embedding_model_is_refused(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    # The per-test registry has no all-MiniLM, which the semantic cache uses by default.
    svc = start_service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db'}", workers=())
    try:
        with svc.client() as client:
            job = client.post("/v1/jobs", json={"model": "sim", "prompt": "x", "cache": "semantic"})
            exact = client.post("/v1/jobs", json={"model": "sim", "prompt": "x", "cache": "exact"})
    finally:
        svc.stop()
    assert job.status_code == 422, job.text
    assert job.headers["content-type"] == "application/problem+json"
    assert "INFERQ_SEMANTIC_CACHE_MODEL" in job.text
    assert exact.status_code == 202
