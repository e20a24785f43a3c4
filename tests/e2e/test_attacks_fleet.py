"""Attacks on the fleet limits (issue 14) through two real Envoys, `tollgate limits` and a real
redis-server (the fixtures of test_fleet.py): a client's identity is the only part of a
descriptor it controls, so it tries to escape its budget through it — bytes that are not UTF-8
(a protobuf string must be), the key's separators and escapes, a huge value — against a quota
with `on_failure_allow: true`, where any error of the limits service would let it through."""
import time

import pytest

from test_fleet import call, fleet, metric, pair  # noqa: F401  (fixtures)


BIG = " ".join(["spend"] * 60)


def spend(gw, tenant, limit=40) -> int:
    """Calls until refused for good; returns how many went through (fails when never refused).
    A refusal right after an answer may come before that call's settlement gave its unused
    reservation back (the charge goes after the answer), so a refusal counts only when it
    still stands once the charges have landed."""
    passed = 0
    for _ in range(limit):
        r = call(gw, "opensmall", tenant, text=BIG)
        if r.status_code == 429:
            time.sleep(1.0)
            r = call(gw, "opensmall", tenant, text=BIG)
            if r.status_code == 429:
                return passed
        assert r.status_code == 200, r.text
        passed += 1
    pytest.fail(f"{tenant!r} was never refused")


class TestFleetIdentity:
    @pytest.mark.parametrize("tenant", [
        b"ev\xffil\xc3(",  # not UTF-8
        "sep|arated|hour|0".encode(),  # the Redis key's separator
        b"per%7Ccent%25",  # its escapes
        ("x" * 6000).encode(),  # big
    ], ids=["not-utf8", "separators", "escapes", "huge"])
    def test_identity_cannot_open_the_failure_path_or_escape_the_budget(self, pair, tenant):
        before = sum(metric(gw, "tollgate_limits_unavailable_total") for gw in pair)
        first = spend(pair[0], tenant)
        assert first >= 1
        # Refused on the other Envoy too, and by the service (not by a failed call).
        for _ in range(3):
            r = call(pair[1], "opensmall", tenant, text=BIG)
            assert r.status_code == 429, r.text
        assert sum(metric(gw, "tollgate_limits_unavailable_total") for gw in pair) == before

    def test_separators_do_not_share_a_counter(self, pair):
        """`a|b` and its escaped spelling are two callers."""
        spend(pair[0], b"same|key")
        assert call(pair[1], "opensmall", b"same%7Ckey", text=BIG).status_code == 200
