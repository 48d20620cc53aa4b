"""The SSRF guard: which addresses a webhook may reach, at submit and at delivery."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from inferq.webhooks.ssrf import Allowlist, WebhookRefused, check_url, refusal
from tests.api.test_jobs import submit
from tests.conftest import RedisDatabases, Service, start_service, wait_for


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud_metadata"),
        ("169.254.1.1", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.254", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "cloud_metadata"),
        ("ff02::1", "multicast"),
        # IPv6 forms that reach an IPv4 address: judged by that address.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud_metadata"),
        ("::ffff:10.1.2.3", "private"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud_metadata"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("100.128.0.1", None),
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001:80b::200e", None),
    ],
)
def test_address_is_judged_by_what_it_reaches(address: str, reason: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud_metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud_metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://localhost:1/", "loopback"),
        ("http://LOCALHOST./hook", "loopback"),
        # Spellings of 127.0.0.1 the resolver accepts; the resolved address decides.
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http:///nohost", "no_host"),
        ("http://example.com:99999/", "bad_port"),
    ],
)
def test_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        check_url(url, Allowlist())
    assert refused.value.reason == reason


def test_public_address_passes_and_keeps_its_port() -> None:
    target = check_url("https://8.8.8.8:8443/hook", Allowlist())
    assert (target.scheme, target.host, target.port, target.addresses) == (
        "https",
        "8.8.8.8",
        8443,
        ("8.8.8.8",),
    )


def test_allowlist_admits_listed_addresses_networks_and_hosts_only() -> None:
    allow = Allowlist.parse(" 127.0.0.1, 10.0.0.0/8 ,localhost, ")
    assert check_url("http://127.0.0.1:9/", allow).addresses == ("127.0.0.1",)
    assert check_url("http://10.200.0.1/", allow).addresses == ("10.200.0.1",)
    assert check_url("http://localhost:9/", allow).host == "localhost"
    with pytest.raises(WebhookRefused):
        check_url("http://127.0.0.2/", allow)
    with pytest.raises(WebhookRefused):
        check_url("http://169.254.169.254/", allow)


def test_name_is_judged_by_the_address_it_resolves_to_at_each_check() -> None:
    # The same name is refused once it resolves to a private address, whatever it was
    # allowed as before: every delivery attempt resolves and checks afresh.
    assert check_url("http://localhost:9/", Allowlist.parse("127.0.0.1")).addresses[0] == (
        "127.0.0.1"
    )
    with pytest.raises(WebhookRefused) as refused:
        check_url("http://localhost:9/", Allowlist())
    assert refused.value.reason == "loopback"
    assert "127.0.0.1" in refused.value.detail


def test_unresolvable_host_is_an_os_error_not_a_refusal() -> None:
    with pytest.raises(OSError):
        check_url("http://no-such-host.invalid/", Allowlist())


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDatabases
) -> Iterator[Service]:
    """The API allows 127.0.0.2; its worker allows nothing.

    So a URL passes at submit and is refused at delivery: the case of a name that
    resolved to a public address at submit and to a private one later.
    """
    tmp = tmp_path_factory.mktemp("guarded")
    svc = start_service(
        tmp,
        redis_dbs.allocate(),
        f"sqlite:///{tmp / 'inferq.db'}",
        workers=(),
        extra_env={
            "INFERQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.2",
            "INFERQ_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.2",
        },
    )
    svc.env["INFERQ_WEBHOOK_ALLOW_HOSTS"] = ""
    svc.start_worker("io", 2)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud_metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://localhost:1/", "loopback"),
        ("gopher://example.com/", "scheme"),
    ],
)
def test_submit_with_an_internal_webhook_url_is_refused(
    guarded: Service, url: str, reason: str
) -> None:
    with guarded.client() as client:
        before = len(client.get("/v1/jobs").json()["data"])
        response = client.post(
            "/v1/jobs", json={"model": "sim", "prompt": "hi", "webhook": {"url": url}}
        )
        after = len(client.get("/v1/jobs").json()["data"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["reason"] == reason and problem["param"] == "webhook.url"
    assert problem["type"].endswith("/webhook-url-refused")
    assert after == before  # no job was made


def test_delivery_rechecks_the_address_and_fails_without_sending(guarded: Service) -> None:
    with guarded.client() as client:
        job = submit(client, model="sim", prompt="hi", webhook={"url": "http://127.0.0.2:9/hook"})

        def ended() -> dict[str, Any] | None:
            found = client.get(f"/v1/jobs/{job['id']}/webhook").json()["data"]
            return found[0] if found and found[0]["status"] == "failed" else None

        delivery: dict[str, Any] = wait_for(ended, timeout=20)  # type: ignore[assignment]
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] is None
    assert "refused (loopback)" in attempt["error"] and "127.0.0.2" in attempt["error"]
    assert delivery["last_error"] == attempt["error"]


def test_webhook_url_is_validated_as_a_string_of_bounded_length(guarded: Service) -> None:
    with guarded.client() as client:
        for webhook in ({"url": ""}, {"url": "https://x.example/" + "a" * 2100}, {"uri": "x"}):
            response = client.post(
                "/v1/jobs", json={"model": "sim", "prompt": "hi", "webhook": webhook}
            )
            assert response.status_code == 422, webhook
