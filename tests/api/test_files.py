"""The Files API through the official SDK: upload, read, list, delete; batch input checks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.batch_support import chat_line, fresh_key, jsonl, sdk_for
from tests.conftest import RedisDatabases, Service, start_service


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return sdk_for(service)


def test_file_is_uploaded_read_listed_and_deleted(service: Service, sdk: openai.OpenAI) -> None:
    data = jsonl([chat_line(f"req-{i}", text=f"question {i}") for i in range(3)])
    created = sdk.files.create(file=("requests.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose) == (
        len(data),
        "requests.jsonl",
        "batch",
    )
    assert created.status == "processed"
    assert sdk.files.retrieve(created.id) == created
    assert sdk.files.content(created.id).content == data
    other = sdk.files.create(file=("notes.txt", b"not jsonl at all"), purpose="user_data")
    listed = [f.id for f in sdk.files.list()]
    assert listed.index(other.id) < listed.index(created.id)  # newest first
    user_data = [f.id for f in sdk.files.list(purpose="user_data")]
    assert other.id in user_data and created.id not in user_data
    deleted = sdk.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(created.id)
    assert created.id not in [f.id for f in sdk.files.list()]


def test_file_list_pages_with_after_and_order(service: Service) -> None:
    sdk = sdk_for(service, fresh_key(service))
    ids = [sdk.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data").id for i in range(3)]
    first = sdk.files.list(limit=2)
    assert [f.id for f in first.data] == [ids[2], ids[1]] and first.has_more
    rest = sdk.files.list(limit=2, after=ids[1])
    assert [f.id for f in rest.data] == [ids[0]] and not rest.has_more
    assert [f.id for f in sdk.files.list(order="asc")] == ids


def test_bad_batch_lines_are_refused_naming_each_line(service: Service, sdk: openai.OpenAI) -> None:
    lines = [
        chat_line("ok-1"),  # 1
        "{not json",  # 2
        chat_line("ok-1"),  # 3: custom_id repeats line 1
        {**chat_line("get"), "method": "GET"},  # 4
        chat_line("unknown", model="no-such-model"),  # 5
        chat_line("streams", stream=True),  # 6
        {**chat_line("url"), "url": "/v1/images/generations"},  # 7
        {"custom_id": "body", "method": "POST", "url": "/v1/chat/completions", "body": {}},  # 8
        chat_line("too-long", max_tokens=10**6),  # 9
        chat_line("ok-2"),  # 10
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.create(file=("bad.jsonl", jsonl(lines)), purpose="batch")
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    message = error["message"]
    for bad in range(2, 10):
        assert f"line {bad}:" in message, (bad, message)
    assert "line 1:" not in message and "line 10:" not in message
    assert "repeats line 1" in message and "no-such-model" in message and "stream" in message


def test_empty_batch_file_and_unknown_purpose_are_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.files.create(file=("empty.jsonl", b"\n\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        sdk.files.create(file=("x.txt", b"x"), purpose="batch_output")  # type: ignore[arg-type]


def test_upload_may_exceed_the_request_body_limit(service: Service) -> None:
    big = b"x" * (2 * 1024 * 1024)  # twice the body limit, far under the file limit
    created = sdk_for(service).files.create(file=("big.bin", big), purpose="user_data")
    assert created.bytes == len(big)


@pytest.fixture(scope="module")
def small_files(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    """An API (no workers) whose file limit is 1000 bytes."""
    tmp_path = tmp_path_factory.mktemp("small-files")
    svc = start_service(
        tmp_path,
        redis_dbs.allocate(),
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        workers=(),
        extra_env={"INFERQ_MAX_FILE_BYTES": "1000"},
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.mark.parametrize("size", [2000, 200_000], ids=["over-file-limit", "over-upload-limit"])
def test_file_over_the_size_limit_is_413_in_openai_shape(small_files: Service, size: int) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        sdk_for(small_files).files.create(file=("big.bin", b"x" * size), purpose="user_data")
    assert refused.value.status_code == 413
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    assert "exceeds" in error["message"]


def test_another_keys_file_is_not_found(service: Service, sdk: openai.OpenAI) -> None:
    mine = sdk.files.create(file=("mine.jsonl", jsonl([chat_line("a")])), purpose="batch")
    theirs = sdk_for(service, fresh_key(service))
    for call in (theirs.files.retrieve, theirs.files.content, theirs.files.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(mine.id)
        assert missing.value.body["type"] == "not_found_error"  # type: ignore[index]
    assert mine.id not in [f.id for f in theirs.files.list()]
    assert json.loads(sdk.files.content(mine.id).content)["custom_id"] == "a"
