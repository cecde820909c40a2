"""The local broker's frame reader: frames split and joined across reads, large frames, refusals."""

from __future__ import annotations

import pytest

from kiwipy.broker._wire import MAX_FRAME_BYTES, FrameError, FrameReader, encode_frame

pytestmark = pytest.mark.timeout(30)


def feed(reader: FrameReader, data: bytes, chunk: int) -> list[tuple[dict[str, object], bytes]]:
    """Write ``data`` into the reader's buffers as a socket would, ``chunk`` bytes at most per
    read, and collect the frames."""
    frames: list[tuple[dict[str, object], bytes]] = []
    offset = 0
    while offset < len(data):
        buffer = reader.get_buffer()
        assert len(buffer) > 0
        piece = data[offset : offset + min(chunk, len(buffer))]
        buffer[: len(piece)] = piece
        reader.received(len(piece))
        offset += len(piece)
        frames.extend(reader.frames())
    return frames


@pytest.mark.parametrize("chunk", [1, 3, 7, 100, 65536, 1 << 20])
def test_frames_come_out_whole_and_in_order_however_the_bytes_arrive(chunk: int) -> None:
    sent = [({"op": "publish", "id": i}, bytes([i % 256]) * (i * 37)) for i in range(60)]
    data = b"".join(encode_frame(header, body) for header, body in sent)
    assert feed(FrameReader(size=64), data, chunk) == sent


def test_a_frame_larger_than_the_buffer_grows_it_then_the_room_is_given_back() -> None:
    reader = FrameReader(size=1024)
    body = b"x" * 300_000
    frames = feed(reader, encode_frame({"op": "big"}, body) + encode_frame({"op": "small"}), 4096)
    assert frames == [({"op": "big"}, body), ({"op": "small"}, b"")]
    assert len(reader.get_buffer()) == 1024


def test_a_large_frame_read_in_small_pieces_is_moved_a_few_times_not_per_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The buffer doubles as the frame's bytes arrive: its bytes are moved about once each in
    all, not once per piece read (500 pieces here), and memory follows what arrived."""
    moved: list[int] = []
    make_room = FrameReader._make_room

    def counted(reader: FrameReader, needed: int) -> None:
        moved.append(reader._end - reader._start)
        make_room(reader, needed)

    monkeypatch.setattr(FrameReader, "_make_room", counted)
    body = b"y" * 2_000_000
    reader = FrameReader(size=4096)
    frame = encode_frame({"op": "big"}, body)
    half = feed(reader, frame[: len(frame) // 2], 4096)
    assert half == []
    assert len(reader._buffer) < len(frame)  # not the size the frame announced
    frames = feed(reader, frame[len(frame) // 2 :], 4096)
    assert frames == [({"op": "big"}, body)]
    assert len(moved) <= 10  # 4 KiB doubled to 2 MiB
    assert sum(moved) < 2 * len(frame)


def test_an_oversized_or_foreign_frame_is_refused() -> None:
    too_long = (MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"\0" * 8
    with pytest.raises(FrameError, match="refused"):
        feed(FrameReader(), too_long, 100)
    not_json = (9).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"{{{{{"
    with pytest.raises(FrameError, match="not JSON"):
        feed(FrameReader(), not_json, 100)
