"""flows/app/media.py: only the dataset's own files resolve; traversal in every spelling is refused (403), a file in
the folder that is not a video of the dataset is unknown (404)."""

import os

import pytest

from flows.app.media import MediaRefused, MediaRoot


@pytest.fixture
def tree(tmp_path):
    videos = tmp_path / "data" / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "a.mp4").write_bytes(b"a")
    (videos / "sub" / "b c.mp4").write_bytes(b"b")
    (videos / "notes.txt").write_text("not a video of the dataset")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (videos / "escape.mp4").symlink_to(secret)  # a symlink inside the folder that leads out of it
    (videos / "inner.mp4").symlink_to(videos / "a.mp4")  # one that stays inside
    sources = [str(videos / "a.mp4"), str(videos / "sub" / "b c.mp4"), str(videos / "escape.mp4")]
    return MediaRoot([*sources, "https://example.invalid/remote.mp4"]), videos, secret


def test_dataset_files_resolve_by_their_relative_path(tree):
    media, videos, _ = tree
    assert media.root == str(videos)
    assert media.url_path(str(videos / "sub" / "b c.mp4")) == "sub/b%20c.mp4"
    assert media.resolve("sub/b c.mp4", "sub/b%20c.mp4") == os.path.realpath(videos / "sub" / "b c.mp4")
    assert media.resolve("a.mp4") == os.path.realpath(videos / "a.mp4")
    # a symlink that stays inside the folder serves the dataset file it points to
    assert media.resolve("inner.mp4") == os.path.realpath(videos / "a.mp4")
    assert media.url_path("https://example.invalid/remote.mp4") is None
    assert media.url_path(str(videos / "escape.mp4")) is None  # a source that leads out is never linked


@pytest.mark.parametrize(
    ("decoded", "raw"),
    [
        ("../secret.txt", "../secret.txt"),
        ("sub/../../secret.txt", "sub/../../secret.txt"),
        ("./a.mp4", "./a.mp4"),
        ("/etc/passwd", "/etc/passwd"),
        ("C:/Windows/win.ini", "C:/Windows/win.ini"),
        ("..\\secret.txt", "..\\secret.txt"),
        ("a.mp4\x00.txt", "a.mp4%00.txt"),
        ("../secret.txt", "%2e%2e/secret.txt"),
        ("../secret.txt", "..%2Fsecret.txt"),
        ("%2e%2e/secret.txt", "%252e%252e/secret.txt"),  # double encoding
        ("escape.mp4", "escape.mp4"),  # symlink out of the folder
    ],
)
def test_traversal_is_forbidden(tree, decoded, raw):
    media, _, _ = tree
    with pytest.raises(MediaRefused) as err:
        media.resolve(decoded, raw)
    assert err.value.status == 403, err.value.reason


@pytest.mark.parametrize("decoded", ["notes.txt", "missing.mp4", "sub", ""])
def test_other_names_are_not_found(tree, decoded):
    media, _, _ = tree
    with pytest.raises(MediaRefused) as err:
        media.resolve(decoded, decoded)
    assert err.value.status == 404


def test_no_local_sources_serves_nothing():
    media = MediaRoot(["s3://bucket/v.mp4"])
    assert media.root is None and media.url_path("s3://bucket/v.mp4") is None
    with pytest.raises(MediaRefused) as err:
        media.resolve("v.mp4")
    assert err.value.status == 404
