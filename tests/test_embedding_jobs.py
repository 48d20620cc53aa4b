"""The worker's embedding batcher, on the real all-MiniLM-L6-v2 and a real unreachable upstream."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from inferq.embedding_jobs import EmbedBatcher, Served, token_share
from inferq.errors import ProviderUnavailable
from inferq.providers.embeddings import EmbeddingResult, OpenAIEmbeddingProvider
from tests.embedding_support import assert_close, minilm
from tests.providers.support import free_port


def together(batcher: EmbedBatcher, requests: list[list[str]]) -> list[Served]:
    """Submit every request from its own thread, all released at the same moment."""
    start = threading.Barrier(len(requests))

    def one(texts: list[str]) -> Served:
        start.wait()
        return batcher.embed(texts)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_jobs_that_arrive_together_share_one_call_and_each_get_their_own_slice() -> None:
    model = minilm()
    batcher = EmbedBatcher(model.embed, max_inputs=64, max_wait_seconds=0.5)
    requests = [[f"job {i} first", f"job {i} second"] for i in range(6)]
    served = together(batcher, requests)
    assert len({s.call["id"] for s in served}) == 1
    assert served[0].call["jobs"] == 6 and served[0].call["inputs"] == 12
    for texts, share in zip(requests, served, strict=True):
        alone = model.embed(texts)
        for got, expected in zip(share.vectors, alone.vectors, strict=True):
            assert_close(got, expected)
        assert share.prompt_tokens == alone.prompt_tokens


def test_a_full_batch_is_called_at_once_and_an_oversized_job_gets_a_call_of_its_own() -> None:
    batcher = EmbedBatcher(minilm().embed, max_inputs=4, max_wait_seconds=30)
    started = time.monotonic()
    served = together(batcher, [["a", "b"], ["c", "d"]])
    assert time.monotonic() - started < 10  # filled: nobody waited the 30 s out
    assert served[0].call == served[1].call and served[0].call["inputs"] == 4
    big = batcher.embed([f"text {i}" for i in range(6)])
    assert big.call["jobs"] == 1 and big.call["inputs"] == 6 and len(big.vectors) == 6


def test_a_failed_call_fails_every_job_that_shared_it() -> None:
    upstream = OpenAIEmbeddingProvider(
        name="gone", params={"model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    batcher = EmbedBatcher(upstream.embed, max_inputs=64, max_wait_seconds=0.3)
    start = threading.Barrier(3)

    def one(text: str) -> Exception | None:
        start.wait()
        try:
            batcher.embed([text])
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(3) as pool:
        errors = list(pool.map(one, ["x", "y", "z"]))
    assert all(isinstance(e, ProviderUnavailable) for e in errors)


@pytest.mark.parametrize("total", [0, 1, 7, 100, 1001])
def test_a_total_only_usage_is_split_by_length_and_adds_up_exactly(total: int) -> None:
    texts = ["a", "bb", "a much longer text", "", "ccc", "dd"]
    result = EmbeddingResult([[0.0]] * len(texts), total)
    jobs = [(0, 1), (1, 2), (3, 3)]  # (start, count) of three jobs in one call
    shares = [token_share(result, texts, start, count) for start, count in jobs]
    assert sum(shares) == total
    assert all(share >= 0 for share in shares)
    if total >= 100:
        assert shares[1] > shares[0] and shares[1] > shares[2]  # the longest inputs cost most


def test_known_per_input_tokens_are_charged_exactly() -> None:
    result = EmbeddingResult([[0.0]] * 3, 12, input_tokens=[3, 4, 5])
    assert [token_share(result, ["x", "y", "z"], s, c) for s, c in [(0, 1), (1, 2)]] == [3, 9]
