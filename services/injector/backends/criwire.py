"""The protobuf wire format of the few CRI messages the runtime adapter needs, both directions.

Pure: bytes in, values out. The CRI (`runtime.v1`, kubernetes/cri-api pkg/apis/runtime/v1/api.proto)
is proto3; this encodes and decodes only the fields chaosbus reads or writes and skips every other
field, so a runtime that sends more (metadata, image, labels, mounts...) still decodes. The field
numbers below were checked against api.proto:

    ContainerStatusRequest  { string container_id = 1; bool verbose = 2; }
    ContainerStatusResponse { ContainerStatus status = 1; map<string, string> info = 2; }
    ContainerStatus         { string id = 1; ContainerState state = 3; int32 exit_code = 7; ... }
    StopContainerRequest    { string container_id = 1; int64 timeout = 2; }
    StopContainerResponse   { }
    enum ContainerState     { CREATED = 0; RUNNING = 1; EXITED = 2; UNKNOWN = 3; }

A map field is a repeated message `{ key = 1; value = 2; }` on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {
    CONTAINER_CREATED: "created",
    CONTAINER_RUNNING: "running",
    CONTAINER_EXITED: "exited",
    CONTAINER_UNKNOWN: "unknown",
}

_U64 = (1 << 64) - 1
_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """Bytes that are not the protobuf message they should be."""


# --- primitives -------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Base-128 varint; a negative value is its 64-bit two's complement (as int64 fields are)."""
    if value < 0:
        value &= _U64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); raises WireError on a truncated or over-long varint."""
    result = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise WireError(f"truncated varint at byte {pos}")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _U64, pos + i + 1
        shift += 7
    raise WireError(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def as_int64(value: int) -> int:
    """A decoded varint read as a signed 64-bit (int64/int32/enum) field."""
    return value - (1 << 64) if value >= 1 << 63 else value


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def string_field(number: int, value: str) -> bytes:
    """A length-delimited string field; proto3 leaves the empty string off the wire."""
    raw = value.encode()
    return tag(number, LENGTH) + varint(len(raw)) + raw if raw else b""


def bytes_field(number: int, raw: bytes) -> bytes:
    return tag(number, LENGTH) + varint(len(raw)) + raw


def varint_field(number: int, value: int) -> bytes:
    """A varint field (bool, enum, int32/64); proto3 leaves zero off the wire."""
    return tag(number, VARINT) + varint(value) if value else b""


Field = tuple[int, int, int | bytes]  # (number, wire type, varint value or payload bytes)


def fields(data: bytes) -> list[Field]:
    """Every field of one message in wire order; fixed-width payloads come back as bytes.

    Raises:
        WireError: truncated data, a field number 0, or the deprecated group wire types.
    """
    out: list[Field] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            value, pos = _take(data, pos, size)
        elif wire_type == LENGTH:
            size, pos = read_varint(data, pos)
            value, pos = _take(data, pos, size)
        else:
            raise WireError(f"unsupported wire type {wire_type} for field {number}")
        out.append((number, wire_type, value))
    return out


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if pos + size > len(data):
        raise WireError(f"field of {size} bytes at byte {pos} runs past the end ({len(data)} bytes)")
    return data[pos : pos + size], pos + size


def _payload(number: int, wire_type: int, value: int | bytes, want: int, what: str) -> int | bytes:
    if wire_type != want:
        raise WireError(f"{what} (field {number}) has wire type {wire_type}, expected {want}")
    return value


def _text(number: int, wire_type: int, value: int | bytes, what: str) -> str:
    raw = _payload(number, wire_type, value, LENGTH, what)
    assert isinstance(raw, bytes)
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise WireError(f"{what} (field {number}) is not UTF-8") from e


def _number(number: int, wire_type: int, value: int | bytes, what: str) -> int:
    raw = _payload(number, wire_type, value, VARINT, what)
    assert isinstance(raw, int)
    return as_int64(raw)


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRequest:
    container_id: str
    verbose: bool = False


@dataclass(frozen=True)
class StopRequest:
    container_id: str
    timeout: int = 0  # seconds before the runtime kills; 0: at once


@dataclass(frozen=True)
class StatusReply:
    container_id: str = ""
    state: int = CONTAINER_CREATED
    exit_code: int = 0
    info: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # ContainerStatus.labels


def encode_status_request(req: StatusRequest) -> bytes:
    return string_field(1, req.container_id) + varint_field(2, int(req.verbose))


def decode_status_request(data: bytes) -> StatusRequest:
    cid, verbose = "", False
    for number, wt, value in fields(data):
        if number == 1:
            cid = _text(number, wt, value, "ContainerStatusRequest.container_id")
        elif number == 2:
            verbose = _number(number, wt, value, "ContainerStatusRequest.verbose") != 0
    return StatusRequest(cid, verbose)


def encode_stop_request(req: StopRequest) -> bytes:
    return string_field(1, req.container_id) + varint_field(2, req.timeout)


def decode_stop_request(data: bytes) -> StopRequest:
    cid, timeout = "", 0
    for number, wt, value in fields(data):
        if number == 1:
            cid = _text(number, wt, value, "StopContainerRequest.container_id")
        elif number == 2:
            timeout = _number(number, wt, value, "StopContainerRequest.timeout")
    return StopRequest(cid, timeout)


def encode_status_reply(reply: StatusReply) -> bytes:
    status = string_field(1, reply.container_id) + varint_field(3, reply.state) + varint_field(7, reply.exit_code)
    for key, val in reply.labels.items():
        status += bytes_field(12, string_field(1, key) + string_field(2, val))
    out = bytes_field(1, status)
    for key, val in reply.info.items():
        out += bytes_field(2, string_field(1, key) + string_field(2, val))
    return out


def decode_status_reply(data: bytes) -> StatusReply:
    """ContainerStatusResponse: the status fields chaosbus reads and the whole info map.

    Raises:
        WireError: malformed bytes, or a known field with the wrong wire type.
    """
    cid, state, exit_code = "", CONTAINER_CREATED, 0
    info: dict[str, str] = {}
    labels: dict[str, str] = {}
    for number, wt, value in fields(data):
        if number == 1:
            payload = _payload(number, wt, value, LENGTH, "ContainerStatusResponse.status")
            assert isinstance(payload, bytes)
            cid, state, exit_code, labels = _decode_status(payload)
        elif number == 2:
            payload = _payload(number, wt, value, LENGTH, "ContainerStatusResponse.info")
            assert isinstance(payload, bytes)
            key, val = _decode_map_entry(payload)
            info[key] = val
    return StatusReply(cid, state, exit_code, info, labels)


def _decode_status(data: bytes) -> tuple[str, int, int, dict[str, str]]:
    cid, state, exit_code = "", CONTAINER_CREATED, 0
    labels: dict[str, str] = {}
    for number, wt, value in fields(data):
        if number == 1:
            cid = _text(number, wt, value, "ContainerStatus.id")
        elif number == 3:
            state = _number(number, wt, value, "ContainerStatus.state")
        elif number == 7:
            exit_code = _number(number, wt, value, "ContainerStatus.exit_code")
        elif number == 12:
            payload = _payload(number, wt, value, LENGTH, "ContainerStatus.labels")
            assert isinstance(payload, bytes)
            key, val = _decode_map_entry(payload)
            labels[key] = val
    return cid, state, exit_code, labels


def _decode_map_entry(data: bytes) -> tuple[str, str]:
    key = val = ""
    for number, wt, value in fields(data):
        if number == 1:
            key = _text(number, wt, value, "info key")
        elif number == 2:
            val = _text(number, wt, value, "info value")
    return key, val
