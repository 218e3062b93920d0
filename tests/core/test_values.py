"""The strict value grammars of SPEC §3: what is accepted, and the lookalikes that are not."""

import pytest

from webhook.core import values


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("30", 30), ("3600", 3600), (12, 12)])
def test_seconds_accepts_ascii_digits_in_range(raw, expected):
    assert values.parse_seconds(raw, 3600) == expected


@pytest.mark.parametrize(
    "raw",
    [
        " 30",
        "30 ",
        "+30",
        "-1",
        "3_0",
        "1e3",
        "\u0663\u0660",
        "\uff11\uff12",
        "",
        "3601",
        "0x10",
        "30.0",
        True,
        None,
        3.0,
        [30],
    ],
)
def test_seconds_rejects_lookalikes(raw):
    with pytest.raises(values.InvalidValue, match=r"want integer 0\.\.3600"):
        values.parse_seconds(raw, 3600)


def test_seconds_bound_follows_max_seconds():
    assert values.parse_seconds("100", 100) == 100
    with pytest.raises(values.InvalidValue, match=r"0\.\.100"):
        values.parse_seconds("101", 100)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False)])
def test_bool_is_exactly_true_or_false(raw, expected):
    assert values.parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["True", "FALSE", "yes", "1", "", " true"])
def test_bool_rejects_everything_else(raw):
    with pytest.raises(values.InvalidValue):
        values.parse_bool(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["sleep", "10"]', ["sleep", "10"]),
        ("sleep 10 && kill -TERM 1", ["/bin/sh", "-c", "sleep 10 && kill -TERM 1"]),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_command_json_array_or_shell_string(raw, expected):
    assert values.parse_command(raw) == expected


@pytest.mark.parametrize("raw", ["[]", '["a", 1]', "[not json", "", "   ", '[""]', 5])
def test_command_rejects_empty_and_malformed(raw):
    with pytest.raises(values.InvalidValue):
        values.parse_command(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("8080", 8080), ("http", "http"), ("metrics-1", "metrics-1"), (443, 443)]
)
def test_port_number_or_name(raw, expected):
    assert values.parse_port(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["0", "65536", "-1", "Http", "a--b", "-http", "http-", "1-2", "averyveryverylongname", ""],
)
def test_port_rejects_bad_numbers_and_names(raw):
    with pytest.raises(values.InvalidValue):
        values.parse_port(raw)


def test_names_are_trimmed_deduplicated_and_non_empty():
    assert values.parse_names(" app , proxy,,app ,") == ("app", "proxy")
    assert values.parse_names("envoy,\n  istio-proxy\n") == ("envoy", "istio-proxy")
    with pytest.raises(values.InvalidValue):
        values.parse_names(" , ,")


def test_init_order_allows_one_star_and_needs_a_name():
    assert values.parse_init_order("a,*,b") == ("a", "*", "b")
    for bad in ("a,*,b,*", "*", "*, ,*"):
        with pytest.raises(values.InvalidValue):
            values.parse_init_order(bad)


def test_http_path_must_be_absolute():
    assert values.parse_http_path("/drain") == "/drain"
    for bad in ("drain", "", "/a b", "/\u00e9"):
        with pytest.raises(values.InvalidValue):
            values.parse_http_path(bad)


def test_cluster_version():
    assert values.parse_cluster_version("auto") is None
    assert values.parse_cluster_version("1.29") == (1, 29)
    for bad in ("1.x", "2.1", "v1.30", "1.30.1", 1.3):
        with pytest.raises(values.InvalidValue):
            values.parse_cluster_version(bad)
