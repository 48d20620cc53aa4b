"""Retrieval (RAG), through the API: documents indexed by a job, and a chat job answered
with the collection's most relevant ones before its question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from inferq.db.engine import create_sync
from inferq.db.tables import documents
from inferq.retrieval import CONTEXT_HEADER
from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import RedisDatabases, Service, start_service

HANDBOOK: list[dict[str, Any]] = [
    {"text": "The office is closed on Mondays.", "metadata": {"section": "hours"}},
    {"text": "Parking is free for visitors in lot B."},
    {"text": "The cafeteria serves a vegan lunch on Fridays."},
]


def words(text: str) -> int:
    """The simulated provider counts a prompt's tokens as its words."""
    return len(text.split())


def ask(client: httpx.Client, question: str, **rag: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    return wait_terminal(client, submit(client, model="sim", messages=messages, rag=rag)["id"])


def test_a_chat_job_is_sent_its_collections_most_relevant_documents(service: Service) -> None:
    question = "Is the office open on Monday?"
    with service.client(service.create_key()) as client:
        indexing = client.post("/v1/collections/handbook/documents", json={"documents": HANDBOOK})
        indexed = wait_terminal(client, indexing.json()["id"])
        listed = client.get("/v1/collections/handbook/documents").json()
        answered = ask(client, question, collection="handbook", top_k=1)
        unrelated = ask(client, question, collection="handbook", top_k=3, min_score=0.99)
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": "sim",
                "messages": [{"role": "user", "content": "Where can visitors park?"}],
                "rag": {"collection": "handbook", "top_k": 1},
            },
        )
        with service.client(service.create_key()) as stranger:
            theirs = ask(stranger, question, collection="handbook")
        deleted = client.delete("/v1/collections/handbook")
        gone = client.get("/v1/collections/handbook/documents")
    assert indexing.status_code == 202 and indexed["status"] == "succeeded", indexed
    ids = indexed["result"]["documents"]
    assert [d["id"] for d in listed["data"]] == ids
    assert [d["text"] for d in listed["data"]] == [d["text"] for d in HANDBOOK]
    assert listed["data"][0]["metadata"] == {"section": "hours"}
    # The closest document, and only it, went before the question.
    assert answered["status"] == "succeeded"
    [retrieved] = answered["result"]["retrieved"]
    assert retrieved["id"] == ids[0] and retrieved["score"] > 0.5
    context = CONTEXT_HEADER + "[1] " + HANDBOOK[0]["text"]
    assert answered["usage"]["prompt_tokens"] == words(context) + words(question)
    assert unrelated["result"]["retrieved"] == []  # nothing that alike: the question alone
    assert unrelated["usage"]["prompt_tokens"] == words(question)
    assert chat.status_code == 200
    job = httpx.get(
        f"{service.url}/v1/jobs/{chat.headers['x-inferq-job-id']}",
        headers=client.headers,
    ).json()
    assert [d["id"] for d in job["result"]["retrieved"]] == [ids[1]]  # the parking one
    assert theirs["result"]["retrieved"] == []  # another key's collection of that name
    assert deleted.json() == {"collection": "handbook", "deleted_documents": 3}
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


def test_a_long_document_is_indexed_in_pieces_and_only_the_answering_one_is_sent(
    service: Service,
) -> None:
    """Three paragraphs of ~700 characters: past the 1,000-character pieces, so each is
    a piece of its own (the splitter cuts at paragraphs first)."""
    topics = [
        "The office opens at nine and closes at five on weekdays. ",
        "Visitors park for free in lot B behind the main building. ",
        "The cafeteria serves a vegan lunch every Friday at noon. ",
    ]
    long_doc = "\n\n".join(topic * 12 for topic in topics)
    question = "Where can visitors park their car?"
    with service.client(service.create_key()) as client:
        indexing = client.post(
            "/v1/collections/manual/documents",
            json={"documents": [{"text": long_doc, "metadata": {"title": "manual"}}]},
        )
        indexed = wait_terminal(client, indexing.json()["id"])
        listed = client.get("/v1/collections/manual/documents").json()["data"]
        answered = ask(client, question, collection="manual", top_k=1)
    job = indexing.json()["id"]
    assert indexed["result"]["documents"] == [f"{job}:0:{k}" for k in range(3)]
    assert [d["text"] for d in listed] == [(topic * 12).strip() for topic in topics]
    assert all(d["metadata"] == {"title": "manual"} for d in listed)
    [retrieved] = answered["result"]["retrieved"]
    assert retrieved["id"] == f"{job}:0:1"  # the parking paragraph
    # Only that piece went before the question, not the whole document.
    sent = CONTEXT_HEADER + "[1] " + (topics[1] * 12).strip()
    assert answered["usage"]["prompt_tokens"] == words(sent) + words(question)


def test_a_collection_lists_its_documents_in_the_order_they_were_sent(service: Service) -> None:
    sent = [{"text": f"Note number {n}."} for n in range(12)]
    with service.client(service.create_key()) as client:
        wait_terminal(
            client,
            client.post("/v1/collections/notes/documents", json={"documents": sent}).json()["id"],
        )
        listed = client.get("/v1/collections/notes/documents").json()["data"]
    # As text, `<job>:10` sorted before `<job>:2`.
    assert [d["text"] for d in listed] == [d["text"] for d in sent]


def test_a_collection_indexed_with_another_embedding_model_is_said_so(service: Service) -> None:
    """Vectors of another size (the embedding model setting changed since they were
    indexed) are left out; a collection with no others fails the job, naming why."""
    question = "Is the office open on Monday?"
    db = create_sync(service.database_url)
    with service.client(service.create_key()) as client:
        old = client.post("/v1/collections/old/documents", json={"documents": HANDBOOK})
        old_ids = wait_terminal(client, old.json()["id"])["result"]["documents"]
        with db.begin() as conn:  # as a model of 128 dimensions would have left them
            conn.execute(
                sa.update(documents)
                .where(documents.c.id.in_(old_ids))
                .values(embedding=bytes(4 * 128))
            )
        stale = ask(client, question, collection="old")
        new = client.post("/v1/collections/old/documents", json={"documents": HANDBOOK[2:]})
        new_ids = wait_terminal(client, new.json()["id"])["result"]["documents"]
        mixed = ask(client, "Is there a vegan lunch?", collection="old", top_k=3)
    db.dispose()
    assert stale["status"] == "failed", stale
    assert stale["error"]["type"] == "retrieval_unavailable"
    assert "128 dimensions" in stale["error"]["message"]
    assert "384" in stale["error"]["message"]
    assert "index its documents again" in stale["error"]["message"]
    # Re-indexed documents are compared; the stale ones are left out, not misread.
    assert mixed["status"] == "succeeded", mixed
    assert [d["id"] for d in mixed["result"]["retrieved"]] == new_ids


def test_bad_document_requests_are_refused_with_a_problem(service: Service) -> None:
    with service.client() as client:
        empty = client.post("/v1/collections/c/documents", json={"documents": []})
        blank = client.post("/v1/collections/c/documents", json={"documents": [{"text": ""}]})
        bad_name = client.post(
            "/v1/collections/no%20spaces/documents", json={"documents": HANDBOOK}
        )
        bad_rag = client.post(
            "/v1/jobs", json={"model": "sim", "prompt": "x", "rag": {"collection": "c", "top_k": 0}}
        )
    for response in (empty, blank, bad_name, bad_rag):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_retrieval_without_its_embedding_model_is_refused(
    tmp_path: Path, redis_dbs: RedisDatabases
) -> None:
    # The per-test registry has no all-MiniLM, which retrieval uses by default.
    svc = start_service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db'}", workers=())
    try:
        with svc.client() as client:
            add = client.post("/v1/collections/c/documents", json={"documents": HANDBOOK})
            rag = client.post(
                "/v1/jobs", json={"model": "sim", "prompt": "x", "rag": {"collection": "c"}}
            )
    finally:
        svc.stop()
    for response in (add, rag):
        assert response.status_code == 422, response.text
        assert "INFERQ_RAG_EMBEDDING_MODEL" in response.text


def test_a_key_lists_its_collections_and_pages_through_one(service: Service) -> None:
    notes = [{"text": f"Note number {n}."} for n in range(5)]
    with service.client(service.create_key()) as client:
        for name, count in (("zeta", 1), ("alpha", 5), ("mid", 2)):
            job = client.post(
                f"/v1/collections/{name}/documents", json={"documents": notes[:count]}
            )
            wait_terminal(client, job.json()["id"])
        first = client.get("/v1/collections", params={"limit": 2}).json()
        cursor = first["next_cursor"]
        second = client.get("/v1/collections", params={"limit": 2, "cursor": cursor}).json()
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/collections/alpha/documents", params=params).json()
            pages.append([d["text"] for d in page["data"]])
            if (cursor := page["next_cursor"]) is None:
                break
        whole = client.get("/v1/collections/alpha/documents").json()
        refused = [
            client.get("/v1/collections/alpha/documents", params={"cursor": "no-such-id"}),
            client.get("/v1/collections", params={"limit": 0}),
            client.get("/v1/collections", params={"cursor": "not a name"}),
        ]
        with service.client(service.create_key()) as stranger:
            theirs = stranger.get("/v1/collections").json()
    assert [(c["name"], c["documents"]) for c in first["data"]] == [("alpha", 5), ("mid", 2)]
    assert [c["name"] for c in second["data"]] == ["zeta"] and second["next_cursor"] is None
    texts = [n["text"] for n in notes]
    assert pages == [texts[0:2], texts[2:4], texts[4:]]
    assert [d["text"] for d in whole["data"]] == texts and whole["next_cursor"] is None
    for response in refused:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert "cursor" in refused[0].json()["detail"]
    assert theirs == {"data": [], "next_cursor": None}
