"""Query construction from every accepted image source and message dialect."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from mmroute.errors import ImageError, InvalidInputError
from mmroute.images import ImagePolicy, decode
from mmroute.query import Query
from _images import png_bytes


def data_url(b: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(b).decode()


def test_all_sources_give_the_same_image(tmp_path):
    raw = png_bytes()
    path = tmp_path / "a.png"
    path.write_bytes(raw)
    qs = [Query.build("hi", [raw]), Query.build("hi", [str(path)]), Query.build("hi", [path]),
          Query.build("hi", [data_url(raw)]), Query.build("hi", ["a.png"], base_dir=tmp_path)]
    hashes = {q.images[0].sha256 for q in qs}
    assert len(hashes) == 1
    assert qs[0].images[0].width == 8 and qs[0].images[0].height == 6
    pil = Query.build("hi", [Image.new("RGB", (8, 6), (255, 0, 0))])
    assert pil.images[0].to_pil().getpixel((0, 0)) == (255, 0, 0)


def test_content_hash_depends_on_text_and_images():
    a = Query.build("what is this", [png_bytes((0, 0, 255))])
    b = Query.build("what is this", [png_bytes((0, 255, 0))])
    c = Query.build("what is this", [png_bytes((0, 0, 255))])
    assert a.content_hash != b.content_hash and a.content_hash == c.content_hash
    assert Query(text="x").content_hash != Query(text="y").content_hash


@pytest.mark.parametrize("bad,needle", [
    (b"", "empty"),
    (b"not an image at all", "not a readable image"),
    ("data:text/plain;base64,aGVsbG8=", "not an image type"),
    ("data:image/png;base64,@@@@", "not valid base64"),
    ("/definitely/missing.png", "not found"),
    ("ftp://example.com/a.png", "scheme"),
    ("file:///etc/passwd", "scheme"),
])
def test_bad_images_name_the_problem(bad, needle):
    with pytest.raises(ImageError, match=needle):
        Query.build("q", [bad])


def test_truncated_image_fails_on_decode_with_clear_error():
    raw = png_bytes(size=(64, 64))
    q = Query.build("q", [raw[: len(raw) // 2]]) if False else None  # header may still parse
    try:
        q = Query.build("q", [raw[:60]])
    except ImageError:
        return  # rejected at construction: fine
    with pytest.raises(ImageError):
        q.images[0].to_pil()


def test_pixel_cap_applies_before_decoding():
    big = png_bytes(size=(3000, 3000), color=(0, 0, 0))
    with pytest.raises(ImageError, match="pixel"):
        Query.build("q", [big], image_policy=ImagePolicy(max_pixels=1_000_000))


@pytest.mark.parametrize("mode,color", [("RGBA", (255, 0, 0, 0)), ("L", 128), ("P", 3), ("CMYK", (0, 0, 0, 0)), ("I;16", 4000)])
def test_unusual_modes_decode_to_rgb(mode, color):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    im = decode(png_bytes(color=color, mode=mode, fmt=fmt))
    assert im.mode == "RGB" and im.size == (8, 6)
    if mode == "RGBA":  # fully transparent pixels flatten onto white
        assert im.getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (10, 4), (0, 255, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode(buf.getvalue()).size == (4, 10)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (5, 5), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = decode(buf.getvalue()).getpixel((0, 0))
    assert r > 200 and b < 50


def test_remote_url_not_fetched_by_default():
    q = Query.build("describe", ["https://example.com/cat.png"])
    assert q.has_images and q.images[0].is_remote
    assert q.images[0].to_url() == "https://example.com/cat.png"
    with pytest.raises(ImageError, match="not fetched"):
        q.images[0].to_pil()


def test_remote_fetch_refuses_private_addresses():
    with pytest.raises(ImageError, match="private|loopback"):
        Query.build("x", ["http://127.0.0.1:9/a.png"], image_policy=ImagePolicy(allow_remote=True, timeout_s=1))


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_query_rejected(text):
    with pytest.raises(InvalidInputError, match="neither text nor images"):
        Query(text=text)


def test_text_hygiene():
    q = Query(text="a\x00b\ud800c")
    assert "\x00" not in q.text and q.text.encode("utf-8")
    assert Query(text="日本語のテキスト").text == "日本語のテキスト"


def test_openai_messages_last_user_turn_and_context():
    img = data_url(png_bytes())
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "what colour?"},
                                     {"type": "image_url", "image_url": {"url": img}}]},
    ]
    q = Query.from_messages(msgs)
    assert q.text == "what colour?" and q.n_images == 1
    qc = Query.from_messages(msgs, include_context=True)
    assert "first question" in qc.text and "first answer" in qc.text and qc.text.endswith("what colour?")


def test_langchain_messages_all_image_block_kinds():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    raw = png_bytes()
    b64 = base64.b64encode(raw).decode()
    blocks = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": data_url(raw)}},
        {"type": "image_url", "image_url": data_url(raw)},
        {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"},
        {"type": "image", "base64": b64, "mime_type": "image/png"},
        {"type": "image", "source_type": "url", "url": "https://example.com/x.png"},
    ]
    q = Query.from_messages([SystemMessage("s"), HumanMessage("old"), AIMessage("a"), HumanMessage(content=blocks)])
    assert q.text == "compare" and q.n_images == 5
    assert q.images[-1].is_remote


@pytest.mark.parametrize("msgs,needle", [
    ([{"role": "assistant", "content": "hi"}], "no user turn"),
    ([{"role": "tool", "content": "42"}], "no user turn"),
    ([{"role": "wizard", "content": "hi"}], "unknown role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "no url"),
    ([{"role": "user", "content": 42}], "string or a list"),
])
def test_bad_messages(msgs, needle):
    with pytest.raises(InvalidInputError, match=needle):
        Query.from_messages(msgs)


def test_unknown_block_types_are_ignored():
    q = Query.from_messages([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}, {"type": "text", "text": "hi"}]}])
    assert q.text == "hi" and not q.images


def test_coerce():
    assert Query.coerce("hello").text == "hello"
    assert Query.coerce({"text": "t", "images": [png_bytes()]}).n_images == 1
    assert Query.coerce([{"role": "user", "content": "m"}]).text == "m"
    with pytest.raises(InvalidInputError):
        Query.coerce(3.5)
