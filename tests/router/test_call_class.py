"""Admission metadata (priority, tenant, grpc-timeout), start-by deadlines and the headroom test, without sockets."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.router.call_class import (GRPC_TIMEOUT, PRIORITY, TENANT, call_class, has_headroom, parse_grpc_timeout,
                                        start_by)
from fastpath.router.features import MetadataError
from fastpath.router.router import Decision

UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@given(st.integers(0, 99_999_999), st.sampled_from(sorted(UNITS)))
def test_every_grpc_timeout_the_spec_allows_parses_to_its_seconds(n, unit):
    assert parse_grpc_timeout(f"{n}{unit}".encode()) == n * UNITS[unit]


@given(st.binary(max_size=12))
@settings(max_examples=500)
def test_any_other_grpc_timeout_is_refused_with_the_accepted_form(value):
    v = value.strip()
    valid = 2 <= len(v) <= 9 and v[:-1].isdigit() and v[:-1].isascii() and chr(v[-1]) in UNITS
    try:
        seconds = parse_grpc_timeout(value)
    except MetadataError as e:
        assert not valid and "grpc-timeout" in str(e) and "e.g. 250m" in str(e)
    else:
        assert valid and math.isfinite(seconds) and seconds >= 0


def test_priority_tenant_and_timeout_are_read_and_bad_values_named():
    c = call_class([(b":path", b"/x"), (PRIORITY, b"7"), (TENANT, b"acme-1"), (GRPC_TIMEOUT, b"250m")])
    assert (c.priority, c.tenant, c.timeout_s) == (7, "acme-1", 0.25)
    assert call_class([]).priority == -1  # absent: the config's default applies
    for headers, words in [([(PRIORITY, b"10")], "0 to 9"), ([(PRIORITY, b"high")], "not a priority"),
                           ([(TENANT, b"a b")], "tenant name"), ([(GRPC_TIMEOUT, b"5s")], "grpc-timeout")]:
        with pytest.raises(MetadataError, match=words):
            call_class(headers)


def test_start_by_leaves_a_share_of_the_slo_and_the_timeout_to_the_backend():
    assert start_by(10.0, 400.0, 0.0, 0.5) == pytest.approx(10.2)
    assert start_by(10.0, 400.0, 0.1, 0.5) == pytest.approx(10.05)  # the nearer of the two
    assert start_by(10.0, 0.0, 0.0, 0.5) == math.inf


def test_headroom_is_a_free_slot_on_some_candidate_or_nothing_of_ours_in_flight_there():
    busy = {0: 1.0, 1: 2.0}
    loaded = {0: 1.0, 1: 0.5}
    own = {0: 3.0, 1: 3.0}
    assert not has_headroom(Decision([0, 1], "p", slo_met=-1), busy.get, own.get)  # every slot busy
    assert has_headroom(Decision([0, 1], "p", slo_met=-1), loaded.get, own.get)  # backend 1 has a free slot
    # A pessimistic SLO prediction is no reason to hold while a slot is free.
    assert has_headroom(Decision([0, 1], "p", slo_met=0), loaded.get, own.get)
    assert not has_headroom(Decision([0], "p", slo_met=1), busy.get, own.get)
    # Nothing of ours in flight there: a stale figure never holds calls while a backend sits idle.
    assert has_headroom(Decision([0], "p", slo_met=0), busy.get, {0: 0.0}.get)
