"""Tests for numbered lines, the one format of every line whose delivery is checked."""

import pytest

from mechat import numbered, protocol


@pytest.mark.parametrize("size", [28, 64, protocol.MAX_LINE_OCTETS])
def test_a_padded_line_carries_its_sender_and_number(size: int) -> None:
    """A line made to a size has that size, is a valid message (§4), and reads back."""
    line = numbered.make_line(b"00000042", 7, size=size)
    assert len(line) == size
    protocol.check_message(line)
    assert numbered.read_line(line) == (b"00000042", 7)


def test_a_payload_is_carried_whole() -> None:
    """A payload with multi-byte UTF-8, a tab and a colon is kept, and the line is a message (§4)."""
    payload = "tab\there: été ☃ 🐍".encode()
    line = numbered.make_line(b"alice", 123_456, payload)
    assert line.endswith(b":alice:00123456:" + payload)
    protocol.check_message(line)
    assert numbered.read_line(line) == (b"alice", 123_456)


@pytest.mark.parametrize("position", [0, 5, 8, 9, 17, 20, 26, 27, 63])
def test_any_altered_octet_is_caught(position: int) -> None:
    """Changing any one octet of a line makes it unreadable, never a different valid line."""
    line = bytearray(numbered.make_line(b"00000001", 2, size=64))
    line[position] ^= 0x01
    assert numbered.read_line(bytes(line)) is None


@pytest.mark.parametrize("line", [b"", b"no colons at all", b"0000abcd:sender:only", b"zzzzzzzz:a:00000001:"])
def test_what_is_not_a_numbered_line_is_damaged(line: bytes) -> None:
    """A line without the four fields, or with a checksum that is no number, reads as damaged."""
    assert numbered.read_line(line) is None
