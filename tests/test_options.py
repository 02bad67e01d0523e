"""``CancelOptions`` and the method policy: pure functions, tested without an app.

The wiring (each entry point passes its settings here and uses the budget) is tested once
per entry point in ``test_deadlines.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from fastapi_hangup import ALL_METHODS, DEFAULT_DEADLINE_HEADER
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import CancelPolicy, normalize_methods

ENVOY = DEFAULT_DEADLINE_HEADER


def scope_with(*headers: tuple[str | bytes, str | bytes]) -> dict[str, Any]:
    """An ASGI scope carrying ``headers`` as given: repeated names, any case."""
    raw = [
        (k if isinstance(k, bytes) else k.encode(), v if isinstance(v, bytes) else v.encode())
        for k, v in headers
    ]
    return {"type": "http", "headers": [*raw, (b"host", b"testserver")]}


def budget(*headers: tuple[str | bytes, str | bytes], **options: Any) -> float | None:
    return CancelOptions.build(**options).budget(scope_with(*headers))


# -- build(): every mistake is reported when the route is defined ---------------------------


@pytest.mark.parametrize("deadline", [-1.0, 0, 0.0, -math.inf, math.inf, math.nan], ids=repr)
def test_invalid_deadline_is_rejected(deadline: float) -> None:
    with pytest.raises(ValueError, match="deadline must be a positive number of seconds"):
        CancelOptions.build(deadline=deadline)


@pytest.mark.parametrize("grace", [-0.1, -math.inf, math.inf, math.nan], ids=repr)
def test_invalid_grace_is_rejected(grace: float) -> None:
    with pytest.raises(ValueError, match="grace must be zero or a positive number"):
        CancelOptions.build(grace=grace)


@pytest.mark.parametrize(
    "name", ["x budget", "x-budget:", "x-budget\r\n", "x-bud\x00get", "(budget)", "bügdet"]
)
def test_invalid_deadline_header_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid HTTP header name"):
        CancelOptions.build(deadline_header=name)


@pytest.mark.parametrize("timeout", [0, -1.0, math.inf, math.nan], ids=repr)
def test_invalid_callback_timeout_is_rejected(timeout: float) -> None:
    with pytest.raises(ValueError, match="callback_timeout must be a positive number"):
        CancelOptions.build(callback_timeout=timeout)


def test_error_message_names_the_rejected_value() -> None:
    with pytest.raises(ValueError, match=r"not -1\.0$"):
        CancelOptions.build(deadline=-1.0)


def test_valid_settings_are_kept() -> None:
    options = CancelOptions.build(
        deadline=0.1, grace=2.5, deadline_header="X-Budget-Ms", callback_timeout=0.5
    )

    assert options == CancelOptions(
        deadline=0.1, grace=2.5, deadline_header=b"x-budget-ms", callback_timeout=0.5
    )


def test_huge_deadline_and_zero_grace_are_valid() -> None:
    options = CancelOptions.build(deadline=1e9, grace=0.0)

    assert (options.deadline, options.grace) == (1e9, 0.0)


@pytest.mark.parametrize(
    ("deadline_header", "stored"),
    [
        (True, ENVOY.encode()),
        (False, None),
        (None, None),
        ("", None),
        ("X-Budget-Ms", b"x-budget-ms"),
    ],
    ids=["true-is-envoys", "false", "none", "empty", "custom-lowercased"],
)
def test_deadline_header_setting_is_stored_as_a_lowercase_name(
    deadline_header: str | bool | None, stored: bytes | None
) -> None:
    assert CancelOptions.build(deadline_header=deadline_header).deadline_header == stored


def test_no_settings_are_the_defaults() -> None:
    assert CancelOptions.build() == DEFAULTS


# -- budget(): the route's budget, or the client's if that is shorter -----------------------


def test_without_a_header_setting_the_budget_is_the_deadline() -> None:
    assert budget((ENVOY, "200"), deadline=5.0) == 5.0


def test_no_budget_without_a_deadline_or_a_header() -> None:
    assert budget(deadline_header=True) is None


def test_header_shortens_the_budget() -> None:
    assert budget((ENVOY, "1000"), deadline=5.0, deadline_header=True) == 1.0


def test_header_never_extends_the_budget() -> None:
    assert budget((ENVOY, "60000"), deadline=2.0, deadline_header=True) == 2.0


def test_largest_accepted_header_still_never_extends_the_budget() -> None:
    assert budget((ENVOY, "999999999"), deadline=5.0, deadline_header=True) == 5.0


def test_largest_accepted_header_is_the_budget_without_a_deadline() -> None:
    assert budget((ENVOY, "999999999"), deadline_header=True) == 999999.999


def test_header_without_a_deadline_is_the_budget() -> None:
    assert budget((ENVOY, "1000"), deadline_header=True) == 1.0


def test_custom_header_name_is_honoured() -> None:
    assert budget(("x-budget-ms", "1000"), deadline=5.0, deadline_header="X-Budget-Ms") == 1.0


def test_custom_header_name_replaces_envoys() -> None:
    assert budget((ENVOY, "200"), deadline=5.0, deadline_header="x-budget-ms") == 5.0


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("abc", id="letters"),
    pytest.param("-5", id="negative"),
    pytest.param("+200", id="plus-sign"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1e3", id="exponent"),
    pytest.param("0x10", id="hex"),
    pytest.param("200ms", id="unit"),
    pytest.param("0", id="zero"),
    pytest.param("000", id="zeros"),
    pytest.param("12345678901234567890", id="20-digits"),
    pytest.param("1000000000", id="10-digits"),
    pytest.param("2 00", id="inner-space"),
    pytest.param("   ", id="only-spaces"),
    pytest.param("\t", id="only-tab"),
    pytest.param("\xb2", id="superscript-two"),
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_header_leaves_the_routes_budget(value: str) -> None:
    header = (ENVOY.encode(), value.encode("latin-1"))

    assert budget(header, deadline=5.0, deadline_header=True) == 5.0


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_header_without_a_deadline_means_no_budget(value: str) -> None:
    header = (ENVOY.encode(), value.encode("latin-1"))

    assert budget(header, deadline_header=True) is None


def test_surrounding_whitespace_is_not_part_of_the_value() -> None:
    # Optional whitespace around a field value is not part of it (RFC 9110, 5.5); servers
    # strip it before the app sees the header, and so does the parser.
    assert budget((ENVOY, " 1000\t"), deadline=5.0, deadline_header=True) == 1.0


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["200", "300"], id="two-values"),
        pytest.param(["200", "abc"], id="valid-and-malformed"),
        pytest.param(["300", "200", "300"], id="three-values"),
    ],
)
def test_repeated_headers_that_disagree_are_ignored(values: list[str]) -> None:
    headers = [(ENVOY, value) for value in values]

    assert budget(*headers, deadline=5.0, deadline_header=True) == 5.0


def test_repeated_headers_that_agree_count_once() -> None:
    assert budget((ENVOY, "1000"), (ENVOY, "1000"), deadline=5.0, deadline_header=True) == 1.0


def test_header_name_in_the_scope_is_matched_case_insensitively() -> None:
    assert budget((ENVOY.title(), "1000"), deadline=5.0, deadline_header=True) == 1.0


def test_scope_without_headers_has_the_routes_budget() -> None:
    options = CancelOptions.build(deadline=5.0, deadline_header=True)

    assert options.budget({"type": "http"}) == 5.0


# -- The method policy ----------------------------------------------------------------------


def test_methods_are_upper_cased() -> None:
    assert normalize_methods(["get", "Post"], what="test") == frozenset({"GET", "POST"})


def test_every_http_method_is_known() -> None:
    assert normalize_methods(ALL_METHODS, what="test") == ALL_METHODS


def test_no_methods_is_an_empty_policy() -> None:
    assert normalize_methods((), what="test") == frozenset()


def test_unknown_methods_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match=r"^test got unknown HTTP methods \['FETCH', 'PURGE'\]$"):
        normalize_methods({"GET", "fetch", "purge"}, what="test")


def test_a_single_string_is_rejected_with_the_form_to_use() -> None:
    with pytest.raises(TypeError, match=r"takes a collection of methods, e\.g\. \{'GET'\}"):
        normalize_methods("GET", what="test")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (CancelPolicy(enabled=True, methods=None), {"GET", "POST"}),
        (CancelPolicy(enabled=True, methods=frozenset({"GET"})), {"GET"}),
        (CancelPolicy(enabled=True, methods=frozenset({"PUT"})), set()),
        (CancelPolicy(enabled=False, methods=None), set()),
        (CancelPolicy(enabled=False, methods=frozenset({"GET"})), set()),
    ],
    ids=["every-served-method", "listed-and-served", "listed-not-served", "off", "off-listed"],
)
def test_policy_cancels_the_served_methods_it_lists(
    policy: CancelPolicy, expected: set[str]
) -> None:
    assert policy.methods_for(["get", "POST"]) == expected
