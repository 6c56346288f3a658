"""Retry-After read one way for the client and webhook deliveries, and a worker's patience with a service
that does not answer."""

from __future__ import annotations

import email.utils
import time

import pytest

from emotionq.errors import StoreUnavailable
from emotionq.retrying import patiently, retry_after_s


def test_retry_after_is_seconds_or_an_http_date_never_negative_and_capped():
    assert retry_after_s("7") == 7.0 and retry_after_s(" 120 ") == 120.0
    assert retry_after_s("90000", cap_s=86400) == 86400
    assert retry_after_s(None) is None and retry_after_s("") is None and retry_after_s("soon") is None
    assert retry_after_s("\u00b2") is None and retry_after_s("\u0663") is None  # digits, but not ASCII ones
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after_s(later) <= 60
    assert retry_after_s(later, cap_s=10) == 10
    no_zone = email.utils.formatdate(time.time() + 60).replace("+0000", "-0000")  # a date with no zone said
    assert 55 <= retry_after_s(no_zone) <= 60


def test_patiently_retries_its_error_until_it_answers_or_patience_runs_out():
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise StoreUnavailable("down")
        return "up"

    assert patiently(flaky, patience_s=5, retry_on=StoreUnavailable, what="store", first_pause_s=0.01) == "up"
    assert len(calls) == 3 and calls[2] - calls[1] >= 0.02  # the pause doubled

    def down() -> str:
        raise StoreUnavailable("still down")

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        patiently(down, patience_s=0.1, retry_on=StoreUnavailable, what="store", first_pause_s=0.01)
    assert time.monotonic() - started < 1.0

    def broken() -> str:
        raise ValueError("a bug")

    with pytest.raises(ValueError):  # only the error it was told to wait out is retried
        patiently(broken, patience_s=5, retry_on=StoreUnavailable, what="store")
