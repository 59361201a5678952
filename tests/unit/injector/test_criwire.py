"""The CRI wire codec: golden bytes worked out by hand from the protobuf encoding rules and the
field numbers of cri-api's api.proto, round trips, skipping of fields we do not read (what real
runtimes send), and clear errors for malformed bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosbus.injector.backends import criwire as w


def test_varint_golden_values() -> None:
    assert w.varint(0) == b"\x00"
    assert w.varint(1) == b"\x01"
    assert w.varint(127) == b"\x7f"
    assert w.varint(128) == b"\x80\x01"
    assert w.varint(300) == b"\xac\x02"
    assert w.varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes, two's complement


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_int64_varints_round_trip(value: int) -> None:
    raw = w.varint(value)
    decoded, end = w.read_varint(raw, 0)
    assert w.as_int64(decoded) == value and end == len(raw) <= 10


def test_status_request_golden_bytes() -> None:
    # field 1 (container_id), wire type 2: key 0x0a, length 3, "abc"; field 2 (verbose), varint: 0x10 0x01
    raw = w.encode_status_request(w.StatusRequest("abc", verbose=True))
    assert raw == b"\x0a\x03abc\x10\x01"
    assert w.decode_status_request(raw) == w.StatusRequest("abc", True)
    assert w.encode_status_request(w.StatusRequest("abc")) == b"\x0a\x03abc"  # proto3: false is not sent


def test_stop_request_golden_bytes() -> None:
    assert w.encode_stop_request(w.StopRequest("abc", timeout=0)) == b"\x0a\x03abc"
    assert w.encode_stop_request(w.StopRequest("abc", timeout=10)) == b"\x0a\x03abc\x10\x0a"
    assert w.decode_stop_request(b"\x0a\x03abc\x10\x0a") == w.StopRequest("abc", 10)
    assert w.decode_stop_request(w.encode_stop_request(w.StopRequest("x", -5))) == w.StopRequest("x", -5)


def test_status_reply_golden_bytes() -> None:
    reply = w.StatusReply("c1", w.CONTAINER_RUNNING, 0, {"info": '{"pid":7}'})
    status = b"\x0a\x02c1" + b"\x18\x01"  # id = 1; state = 3 (RUNNING)
    entry = b"\x0a\x04info" + b"\x12\x09" + b'{"pid":7}'  # map entry: key = 1, value = 2
    expected = b"\x0a" + bytes([len(status)]) + status + b"\x12" + bytes([len(entry)]) + entry
    assert w.encode_status_reply(reply) == expected
    assert w.decode_status_reply(expected) == reply


def test_a_real_runtimes_extra_fields_are_skipped() -> None:
    metadata = w.string_field(1, "app") + w.varint_field(2, 3)  # ContainerMetadata{name, attempt}
    labels = w.bytes_field(12, w.string_field(1, "io.kubernetes.pod.name") + w.string_field(2, "web-0"))
    status = (
        w.string_field(1, "c1")
        + w.bytes_field(2, metadata)
        + w.varint_field(3, w.CONTAINER_EXITED)
        + w.varint_field(4, 1_700_000_000_000_000_000)
        + w.varint_field(7, 137)
        + w.bytes_field(8, w.string_field(1, "nginx:1"))
        + w.string_field(10, "Error")
        + labels
        + w.tag(20, w.FIXED64)
        + b"\x01" * 8
        + w.tag(21, w.FIXED32)
        + b"\x02" * 4
    )
    raw = (
        w.bytes_field(1, status)
        + w.bytes_field(2, w.string_field(1, "info") + w.string_field(2, "{}"))
        + w.bytes_field(2, w.string_field(1, "other") + w.string_field(2, "x"))
        + w.varint_field(9, 5)
    )
    reply = w.decode_status_reply(raw)
    assert reply == w.StatusReply(
        "c1", w.CONTAINER_EXITED, 137, {"info": "{}", "other": "x"}, labels={"io.kubernetes.pod.name": "web-0"}
    )  # the labels are read


@given(
    st.text(max_size=80),
    st.sampled_from(sorted(w.STATE_NAMES)),
    st.integers(-(1 << 31), (1 << 31) - 1),
    st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=4),
)
def test_status_replies_round_trip(cid: str, state: int, exit_code: int, info: dict[str, str]) -> None:
    reply = w.StatusReply(cid, state, exit_code, info)
    assert w.decode_status_reply(w.encode_status_reply(reply)) == reply


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x0a\x05ab", "runs past the end"),  # status claims 5 bytes, 2 follow
        (b"\x0a", "truncated varint"),
        (b"\x0a\x03\x0a\x05a", "runs past the end"),  # truncated inside the nested ContainerStatus
        (b"\x08\x01", "ContainerStatusResponse.status (field 1) has wire type 0, expected 2"),
        (b"\x0a\x02\x18\x80", "truncated varint"),
        (b"\x0b", "unsupported wire type 3"),  # a group start
        (b"\x00\x01", "field number 0"),
        (b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0a\x04\x0a\x02\xff\xfe", "ContainerStatus.id (field 1) is not UTF-8"),
    ],
)
def test_malformed_replies_are_clear_errors(raw: bytes, error: str) -> None:
    with pytest.raises(w.WireError, match=error.replace("(", r"\(").replace(")", r"\)")):
        w.decode_status_reply(raw)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_wire_error(raw: bytes) -> None:
    try:
        w.decode_status_reply(raw)
    except w.WireError:
        pass
