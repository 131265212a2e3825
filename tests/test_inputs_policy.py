"""Which addresses the URL policy refuses and why, policy validation, and refusals as OpenAI errors
(no network: IP literals are refused before any connection)."""

from __future__ import annotations

import ipaddress

import pytest

from moesaic.errors import URLPolicyError
from moesaic.inputs import ImagePolicy, load_image
from moesaic.inputs.addresses import host_allowed, refusal_reason

# --- address classification ----------------------------------------------------------------------------

REFUSED = {
    "127.0.0.1": "loopback", "::1": "loopback", "10.1.2.3": "private", "172.16.5.4": "private",
    "192.168.1.1": "private", "100.64.0.1": "CGNAT", "169.254.169.254": "metadata", "fd00:ec2::254": "metadata",
    "169.254.10.10": "link-local", "fe80::1": "link-local", "fc00::1": "private", "0.0.0.0": "unspecified",
    "::": "unspecified", "224.0.0.1": "multicast", "ff02::1": "multicast", "240.0.0.1": "reserved",
    "::ffff:127.0.0.1": "wrapping 127.0.0.1", "::ffff:10.0.0.1": "wrapping 10.0.0.1",
    "::127.0.0.1": "wrapping 127.0.0.1", "2002:7f00:1::1": "wrapping 127.0.0.1",
    "64:ff9b::a9fe:a9fe": "wrapping 169.254.169.254", "192.0.2.7": "special-purpose", "2001:db8::1": "special-purpose",
}


@pytest.mark.parametrize("address,why", sorted(REFUSED.items()))
def test_non_public_addresses_are_refused_with_the_reason(address: str, why: str) -> None:
    reason = refusal_reason(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_policy_entries_are_validated_and_serialisable() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="valid CIDR"):
        ImagePolicy(allow_private_hosts=["10.0.0.0/33"])
    policy = ImagePolicy(allow_private_hosts="Images.Internal.", allow_hosts=["*.example.com"], timeout_s=3)
    assert policy.allow_private_hosts == frozenset({"images.internal"})
    assert ImagePolicy.model_validate(policy.model_dump(mode="json")) == policy
    assert host_allowed("cdn.example.com", policy) and host_allowed("example.com", policy)
    assert not host_allowed("notexample.com", policy) and not host_allowed("example.com.evil.test", policy)


def test_refusals_render_as_openai_errors() -> None:
    with pytest.raises(URLPolicyError) as info:
        load_image("http://169.254.169.254/latest/meta-data/")
    body = info.value.to_dict()["error"]
    assert body["code"] == "url_not_allowed" and info.value.status == 400
    assert "metadata" in str(body["message"])
