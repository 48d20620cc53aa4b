"""Metrics, logs and usage after a known sequence of jobs, through a real API and worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_jobs import submit, wait_terminal
from tests.conftest import TESTS, RedisDatabases, Service, free_port, start_service, wait_for
from tests.webhooks.receiver import Receiver

SECRET_PROMPT = "zebra quartz lantern"  # must never reach a log line
REQUEST_ID = "req-observability-1"


@dataclass
class Run:
    """The service after the known sequence, and what the sequence produced."""

    service: Service
    worker_metrics: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    limited_key: str = ""


def run_job(
    client: httpx.Client, name: str, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    if "messages" not in body:
        body["prompt"] = f"{name} hello"
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return wait_terminal(client, response.json()["id"], timeout=60)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases) -> Iterator[Run]:
    """Successes, a failure, a retry, a fallback, a webhook and a rate-limited request."""
    tmp = tmp_path_factory.mktemp("observability")
    with Receiver() as receiver:
        svc = start_service(
            tmp,
            redis_dbs.allocate(),
            f"sqlite:///{tmp / 'db.sqlite'}",
            workers=(),
            extra_env={
                "INFERQ_MODELS_FILE": str(TESTS / "observability_models.yaml"),
                "INFERQ_RETRY_BASE_DELAY_SECONDS": "0.05",
                "INFERQ_RETRY_MAX_DELAY_SECONDS": "0.1",
                "INFERQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            },
        )
        # Chosen once the API listens, so the two cannot pick the same free port.
        port = free_port()
        svc.env["INFERQ_WORKER_METRICS_PORT"] = str(port)
        svc.start_worker("io", 8)
        try:
            done = Run(svc, f"http://127.0.0.1:{port}/metrics")
            with svc.client() as client:
                for i in range(3):
                    done.jobs[f"ok{i}"] = run_job(client, f"ok{i}", model="sim-priced")
                done.jobs["refused"] = run_job(client, "refused", model="sim-refuses")
                done.jobs["retried"] = run_job(client, "retried", model="sim-twice")
                done.jobs["fallback"] = run_job(client, "fallback", model="sim-down")
                done.jobs["logged"] = run_job(
                    client,
                    "logged",
                    headers={"X-Request-ID": REQUEST_ID},
                    model="sim-priced",
                    messages=[{"role": "user", "content": SECRET_PROMPT}],
                    webhook={"url": receiver.url("/hook")},
                )
                wait_for(lambda: receiver.received("/hook"), timeout=20)
            done.limited_key = svc.create_key("--rpm", "1")
            with svc.client(done.limited_key) as limited:
                done.jobs["limited"] = run_job(limited, "limited", model="sim-priced")
                refused = limited.post("/v1/jobs", json={"model": "sim-priced", "prompt": "x"})
                assert refused.status_code == 429
            yield done
        finally:
            svc.stop()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def served_by(run: Run, model: str) -> list[dict[str, Any]]:
    return [
        j for j in run.jobs.values() if j["status"] == "succeeded" and j["served_model"] == model
    ]


def test_worker_metrics_count_exactly_the_known_sequence(run: Run) -> None:
    # The webhook's outcome is counted just after the receiver answers.
    wait_for(
        lambda: (
            value(
                scrape(run.worker_metrics), "inferq_webhook_deliveries_total", outcome="delivered"
            )
            == 1
        ),
        timeout=10,
    )
    m = scrape(run.worker_metrics)
    finished = {
        ("sim-priced", "succeeded"): 5,
        ("sim-refuses", "failed"): 1,
        ("sim-twice", "succeeded"): 1,
        ("sim-down", "succeeded"): 1,
    }
    for (model, outcome), count in finished.items():
        assert value(m, "inferq_jobs_finished_total", model=model, outcome=outcome) == count
        for histogram in ("inferq_job_queue_wait_seconds", "inferq_job_duration_seconds"):
            assert value(m, histogram + "_count", model=model) == count, histogram
    assert sum(v for (n, _), v in m.items() if n == "inferq_jobs_finished_total") == 8
    # The fallback job's first token came from sim-priced.
    assert value(m, "inferq_job_ttft_seconds_count", model="sim-priced") == 6
    assert value(m, "inferq_job_ttft_seconds_count", model="sim-twice") == 1
    assert value(m, "inferq_job_ttft_seconds_count", model="sim-refuses") == 0
    priced = served_by(run, "sim-priced")
    gaps = sum(j["usage"]["completion_tokens"] - 1 for j in priced)
    assert value(m, "inferq_job_inter_token_seconds_count", model="sim-priced") == gaps
    errors = {
        ("sim-refuses", "rejected"): 1,
        ("sim-twice", "unavailable"): 2,
        ("sim-down", "unavailable"): 2,
    }
    for (model, kind), count in errors.items():
        assert value(m, "inferq_provider_errors_total", model=model, kind=kind) == count
    assert value(m, "inferq_provider_retries_total", model="sim-twice") == 2
    assert value(m, "inferq_provider_retries_total", model="sim-down") == 1
    assert value(m, "inferq_provider_fallbacks_total", model="sim-down", fallback="sim-priced") == 1
    tokens_in = sum(j["usage"]["prompt_tokens"] for j in priced)
    tokens_out = sum(j["usage"]["completion_tokens"] for j in priced)
    assert value(m, "inferq_tokens_total", model="sim-priced", direction="input") == tokens_in
    assert value(m, "inferq_tokens_total", model="sim-priced", direction="output") == tokens_out
    cost = value(m, "inferq_cost_usd_total", model="sim-priced")
    assert cost == pytest.approx(sum(j["cost_usd"] for j in priced))
    assert cost == pytest.approx((tokens_in * 1.5 + tokens_out * 6.0) / 1e6)
    assert value(m, "inferq_webhook_deliveries_total", outcome="delivered") == 1


def test_api_metrics_count_requests_rejections_and_read_the_queues(run: Run) -> None:
    m = scrape(run.service.url + "/metrics")
    route = {"method": "POST", "route": "/v1/jobs"}
    assert value(m, "inferq_http_requests_total", status="202", **route) == 8
    assert value(m, "inferq_http_requests_total", status="429", **route) == 1
    assert value(m, "inferq_http_request_duration_seconds_count", **route) == 9
    assert value(m, "inferq_admission_rejections_total", reason="requests") == 1
    assert value(m, "inferq_jobs_submitted_total", model="sim-priced", priority="normal") == 5
    assert value(m, "inferq_jobs_submitted_total", model="sim-down", priority="normal") == 1
    # Polls are counted under the route's template, never the job id.
    assert (
        value(
            m, "inferq_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200"
        )
        > 0
    )
    assert not any(job["id"] in str(labels) for job in run.jobs.values() for _, labels in m)
    for priority in ("high", "normal", "low"):
        assert value(m, "inferq_queue_depth", queue=f"io.{priority}") == 0
    assert value(m, "inferq_workers_alive") == 1
    assert value(m, "inferq_breaker_state", endpoint="sim:sim-down", state="closed") == 1


def test_queue_depths_are_read_from_a_broker_redis_apart_from_the_services(
    tmp_path: Path, redis_dbs: RedisDatabases, redis_url: str
) -> None:
    broker = redis_url  # given back after the test; the service's, when it stops
    svc = Service(tmp_path, redis_dbs.allocate(), f"sqlite:///{tmp_path / 'db.sqlite'}", broker)
    svc.start_api()  # no worker: what is submitted stays in the queues
    try:
        with svc.client() as client:
            for n in range(2):
                submit(client, model="sim", prompt=f"wait {n}", priority="high")
        m = scrape(svc.url + "/metrics")
        top = svc.top_once().stdout
    finally:
        svc.stop()
    assert value(m, "inferq_queue_depth", queue="io.high") == 2
    assert value(m, "inferq_queue_depth", queue="io.normal") == 0
    assert re.search(r"io\.high\s*│\s*2\b", top), top


def test_request_id_is_returned_and_generated_when_absent(run: Run) -> None:
    given = httpx.get(run.service.url + "/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    fresh = httpx.get(run.service.url + "/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
    odd = httpx.get(run.service.url + "/healthz", headers={"X-Request-ID": "a b\tc"})
    assert odd.headers["x-request-id"] != "a b\tc"


def log_lines(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Every line each process logged, parsed as JSON (a line that is not JSON fails)."""
    parsed: dict[str, list[dict[str, Any]]] = {}
    for path in run.service.root.glob("*.log"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        parsed[path.stem] = [orjson.loads(line) for line in lines]
    return parsed


def test_one_jobs_log_lines_are_json_and_carry_its_request_id_on_both_sides(run: Run) -> None:
    job_id = run.jobs["logged"]["id"]
    logs = log_lines(run)
    api = [e for e in logs["api"] if e.get("request_id") == REQUEST_ID]
    worker = [e for e in logs["worker-io-0"] if e.get("request_id") == REQUEST_ID]
    queued = next(e for e in api if e["event"] == "job.queued")
    assert queued["job_id"] == job_id and queued["model"] == "sim-priced"
    assert queued["key_id"] and queued["priority"] == "normal"
    events = {e["event"]: e for e in worker if e.get("job_id") == job_id}
    assert {"job.running", "job.finished"} <= events.keys()
    finished = events["job.finished"]
    assert finished["outcome"] == "succeeded" and finished["provider"] == "sim"
    assert finished["cost_usd"] == pytest.approx(run.jobs["logged"]["cost_usd"])
    for name in (
        "queue_wait_s",
        "ttft_s",
        "duration_s",
        "prompt_tokens",
        "completion_tokens",
        "attempt",
        "key_id",
    ):
        assert finished[name] is not None, name


def test_no_log_line_holds_a_key_or_prompt_text(run: Run) -> None:
    text = "\n".join(p.read_text() for p in run.service.root.glob("*.log"))
    assert run.service.key not in text and run.limited_key not in text
    assert SECRET_PROMPT not in text
    assert "ok0 hello" not in text


def test_usage_totals_equal_the_sum_of_the_jobs_usage(run: Run) -> None:
    mine = [j for name, j in run.jobs.items() if name != "limited"]
    with run.service.client() as client:
        report = client.get("/v1/usage", params={"group_by": "model"}).json()
        by_day = client.get("/v1/usage", params={"group_by": "day"}).json()
        other = client.get("/v1/usage", params={"key_id": _key_id(run)}).json()
    total = report["total"]
    assert total["jobs"] == len(mine)
    assert total["prompt_tokens"] == sum(j["usage"]["prompt_tokens"] for j in mine if j["usage"])
    assert total["completion_tokens"] == sum(
        j["usage"]["completion_tokens"] for j in mine if j["usage"]
    )
    assert total["cost_usd"] == pytest.approx(sum(j["cost_usd"] or 0 for j in mine))
    groups = {g["key"]: g for g in report["data"]}
    assert groups["sim-priced"]["jobs"] == 5 and groups["sim-twice"]["jobs"] == 1
    assert [g["jobs"] for g in by_day["data"]] == [len(mine)]
    assert other["total"]["jobs"] == 1
    assert other["total"]["cost_usd"] == pytest.approx(run.jobs["limited"]["cost_usd"])


def test_only_an_admin_key_reads_another_keys_usage(run: Run) -> None:
    with run.service.client(run.limited_key) as client:
        assert client.get("/v1/usage").status_code == 200
        assert client.get("/v1/usage", params={"key_id": "someone"}).status_code == 403


def _key_id(run: Run) -> str:
    with run.service.client(run.limited_key) as client:
        key_id: str = client.get("/v1/usage").json()["key_id"]
    return key_id


DEPLOY = TESTS.parent / "deploy"


def test_dashboard_and_alert_rules_name_only_metrics_the_service_exports(run: Run) -> None:
    exported = {
        name
        for url in (run.service.url + "/metrics", run.worker_metrics)
        for family in text_string_to_metric_families(httpx.get(url).text)
        for name in (family.name, *(s.name for s in family.samples))
    }
    dashboard = orjson.loads((DEPLOY / "grafana" / "inferq-dashboard.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {
        "InferqQueueDepthGrowing",
        "InferqHighErrorRate",
        "InferqBreakerOpen",
        "InferqTTFTHigh",
    } <= alerts.keys()
    exprs += [r["expr"] for r in alerts.values()]
    used = {name for e in exprs for name in re.findall(r"\binferq_[a-z_]+", e)}
    assert used and used <= exported, used - exported


def test_top_shows_queues_workers_throughput_and_cost_per_model(run: Run) -> None:
    out = run.service.top_once().stdout
    for text in ("io.high", "io.normal", "local.low", "workers alive", "error rate"):
        assert text in out, out
    priced = served_by(run, "sim-priced")
    cost = sum(j["cost_usd"] for j in priced)
    row = next(line for line in out.splitlines() if "sim-priced" in line)
    assert f"{cost:.6f}" in row and str(len(priced)) in row, out
