"""Raw JPEG payloads (the course's dialect): whole frames and split frames, with loss."""

from mjpeg_rtsp.rawjpeg import RawJpegAssembler

JPEG = b"\xff\xd8" + bytes(range(256)) * 3 + b"\xff\xd9"


def test_whole_frames_pass_through():
    assembler = RawJpegAssembler()
    assert assembler.push(JPEG, 1) == JPEG
    assert assembler.push(JPEG, 2) == JPEG
    assert assembler.frames_dropped == 0


def test_split_frames_are_joined_in_order():
    assembler = RawJpegAssembler()
    pieces = [JPEG[:300], JPEG[300:600], JPEG[600:]]
    assert assembler.push(pieces[0], 10) is None
    assert assembler.push(pieces[1], 11) is None
    assert assembler.push(pieces[2], 12) == JPEG


def test_a_missing_piece_drops_the_frame_never_half_of_it():
    assembler = RawJpegAssembler()
    pieces = [JPEG[:300], JPEG[300:600], JPEG[600:]]
    assert assembler.push(pieces[0], 10) is None
    assert assembler.push(pieces[2], 12) is None  # 11 was lost
    assert assembler.frames_dropped == 1
    assert assembler.push(JPEG, 13) == JPEG  # the next frame is fine


def test_a_frame_without_its_end_is_dropped_when_the_next_starts():
    assembler = RawJpegAssembler()
    assert assembler.push(JPEG[:300], 1) is None
    assert assembler.push(JPEG, 2) == JPEG
    assert assembler.frames_dropped == 1


def test_pieces_without_a_start_are_ignored():
    assembler = RawJpegAssembler()
    assert assembler.push(JPEG[300:], 5) is None
    assert assembler.frames_dropped == 0
