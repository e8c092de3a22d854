"""connectors.base: the checks every connector's configuration shares."""

from __future__ import annotations

import pytest

from connectors.base import aws_endpoint_url, secure_url


@pytest.mark.parametrize("url", [
    "https://www.googleapis.com/", "https://oauth2.googleapis.com/token", "https://s3.example.com:8443",
    "http://127.0.0.1:8080/", "http://127.9.9.9", "http://localhost:5000/token", "http://[::1]:9000",
])
def test_secure_url_takes_https_and_plain_http_on_this_machine(url):
    assert secure_url(url) == url


@pytest.mark.parametrize("url", [
    "http://example.com", "http://127.0.0.1.example.net/", "http://localhost.example.net:80/",
    "http://[::1].example.net", "http://10.0.0.1/", "http://user@evil.example/@127.0.0.1",
    "ftp://127.0.0.1/", "127.0.0.1:8080", "https://", "http://127.0.0.1:port/",
])
def test_secure_url_refuses_what_would_send_credentials_elsewhere_in_the_clear(url):
    with pytest.raises(ValueError) as exc:
        secure_url(url)
    assert url in str(exc.value)


def test_aws_endpoint_url_drops_the_trailing_slash():
    assert aws_endpoint_url(None) is None
    assert aws_endpoint_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    with pytest.raises(ValueError, match="https://"):
        aws_endpoint_url("http://127.0.0.1.nip.io:5000")
