"""read_metadata: real values from files built here, and no exception (or noise) for hostile ones."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from forensix import metadata
from forensix.metadata import Metadata, c2pa_trust_settings, read_metadata

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
A1111 = (
    "a photo of a cat, highly detailed\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 64x64, Model: sd_xl_base_1.0"
)
COMFY_PROMPT = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 8.0}}})
COMFY_WORKFLOW = json.dumps({"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]})


def noise(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def loaded(data: bytes) -> Image.Image:
    """What the pipeline passes: the file opened and loaded by Pillow, before orientation/RGB conversion."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def exifread_reads(monkeypatch) -> list[int]:
    """The reads exifread makes, per stream it is given: its work, counted without a clock."""
    counts: list[int] = []
    plain_init, plain_read = metadata._BudgetedStream.__init__, metadata._BudgetedStream.read

    def init(self, *args):
        plain_init(self, *args)
        self.index = len(counts)
        counts.append(0)

    def read(self, *args):
        counts[self.index] += 1
        return plain_read(self, *args)

    monkeypatch.setattr(metadata._BudgetedStream, "__init__", init)
    monkeypatch.setattr(metadata._BudgetedStream, "read", read)
    return counts


def read(data: bytes, with_image: bool = True) -> Metadata:
    meta = read_metadata(data, loaded(data) if with_image else None)
    json.dumps(meta.fields)  # always plain JSON
    assert isinstance(meta.notes, str) and len(meta.notes) <= 200
    return meta


def camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "Canon EOS 5D"  # Model
    exif[0x0112] = 6  # Orientation
    exif[0x0132] = "2022:01:01 00:00:00"  # DateTime (file change): DateTimeOriginal wins
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:06:01 10:00:00"  # DateTimeOriginal
    sub[0xA434] = "EF50mm f/1.8 STM "  # LensModel, stripped
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 0.0)})
    return exif


def xmp_packet(source_type: str = TRAINED, form: str = "attribute", prolog: str = "") -> bytes:
    if form == "attribute":
        description = (
            '<rdf:Description rdf:about="" xmp:CreatorTool="Adobe Firefly"'
            f' Iptc4xmpExt:DigitalSourceType="{source_type}" photoshop:Credit="Made with AI"/>'
        )
    else:  # element form, with the source type as an rdf:resource and dc:creator as an rdf:Seq
        description = (
            '<rdf:Description rdf:about=""><xmp:CreatorTool>Adobe Firefly</xmp:CreatorTool>'
            f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{source_type}"/>'
            "<dc:creator><rdf:Seq><rdf:li>Jane Doe</rdf:li></rdf:Seq></dc:creator></rdf:Description>"
        )
    return (
        f'{prolog}<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'{description}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)
XXE = '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


# ---------------------------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("with_image", [True, False])
def test_jpeg_camera_exif_fields_and_notes(with_image):
    data = encode(noise(), "JPEG", quality=92, exif=camera_exif().tobytes())
    meta = read(data, with_image)
    assert meta.fields["exif"] == {
        "make": "Canon",
        "model": "Canon EOS 5D",
        "lens": "EF50mm f/1.8 STM",
        "date_taken": "2021:06:01 10:00:00",
        "date_modified": "2022:01:01 00:00:00",
        "orientation": 6,
        "gps": True,
    }
    assert meta.fields["jpeg_quality"] == 92
    assert "png_text" not in meta.fields and "xmp" not in meta.fields
    assert meta.notes == "Camera: Canon EOS 5D; taken 2021:06:01 10:00:00; GPS present; JPEG quality ≈ 92"


def test_a_modification_date_is_not_called_taken_and_make_is_kept_when_model_omits_it():
    """Issue 14, defect 12: IFD0 DateTime is when the file was last written, not when it was taken."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "FUJIFILM", "X-T4", "Digital Camera X-T4 Ver1.00"
    exif[0x0132] = "2020:02:02 12:00:00"
    meta = read(encode(noise(), "JPEG", quality=75, exif=exif.tobytes()))
    assert meta.fields["exif"] == {
        "make": "FUJIFILM",
        "model": "X-T4",
        "software": "Digital Camera X-T4 Ver1.00",
        "date_modified": "2020:02:02 12:00:00",
    }
    assert meta.notes == (
        "Camera: FUJIFILM X-T4; file written 2020:02:02 12:00:00; Software: Digital Camera X-T4 Ver1.00; "
        "JPEG quality ≈ 75"
    )
    exif.get_ifd(0x8769)[0x9003] = "2005:05:05 05:05:05"  # with DateTimeOriginal: both kept, the note says taken
    meta = read(encode(noise(), "JPEG", quality=75, exif=exif.tobytes()))
    assert (meta.fields["exif"]["date_taken"], meta.fields["exif"]["date_modified"]) == (
        "2005:05:05 05:05:05",
        "2020:02:02 12:00:00",
    )
    assert "taken 2005:05:05 05:05:05" in meta.notes and "2020:02:02" not in meta.notes


def test_webp_exif_is_read_through_pillow_where_exifread_finds_none():
    meta = read(encode(noise(), "WEBP", exif=camera_exif().tobytes()))
    assert meta.fields["exif"]["make"] == "Canon" and meta.fields["exif"]["gps"] is True
    assert meta.fields["exif"]["orientation"] == 6 and "jpeg_quality" not in meta.fields


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_parameters_in_exif_user_comment(fmt):
    exif = Image.Exif()
    prompt = "masterpiece, " * 200 + A1111  # > 1000 bytes: exifread alone would drop it
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + prompt.encode("utf-16-be")  # what A1111 (piexif) writes
    meta = read(encode(noise(), fmt, exif=exif.tobytes()))
    assert meta.fields["exif"]["generation_parameters"] is True and meta.fields["exif"]["generator"] == "A1111"
    assert meta.fields["exif"]["user_comment"] == prompt[:2000]
    assert meta.notes.startswith("Stable Diffusion parameters in EXIF UserComment (A1111)")


# ------------------------------------------------------------------------------------ embedded text


def png_with_text(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key.replace("_", " ") if key == "Creation_Time" else key, value, zip=len(value) > 100)
    return encode(noise(), "PNG", pnginfo=info)


@pytest.mark.parametrize("with_image", [True, False])
def test_png_a1111_parameters(with_image):
    meta = read(png_with_text(parameters=A1111, Software="x", **{"date:create": "2024"}), with_image)
    assert meta.fields["png_text"] == {
        "parameters": A1111,
        "Software": "x",
        "generation_parameters": True,
        "generator": "A1111",
        "other_keys": ["date:create"],
    }
    assert set(meta.fields) <= {"png_text", "c2pa"}
    assert meta.notes == "Stable Diffusion parameters in PNG text (A1111); Software: x"


def test_png_comfyui_prompt_and_workflow_in_itxt():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("prompt", COMFY_PROMPT)
    info.add_itxt("workflow", COMFY_WORKFLOW, zip=True)
    text = read(encode(noise(), "PNG", pnginfo=info)).fields["png_text"]
    assert json.loads(text["prompt"]) == json.loads(COMFY_PROMPT)
    assert json.loads(text["workflow"]) == json.loads(COMFY_WORKFLOW)
    assert text["generation_parameters"] is True and text["generator"] == "ComfyUI"


@pytest.mark.parametrize(
    ("chunks", "generator", "note"),
    [
        ({"invokeai_metadata": '{"steps": 30}'}, "InvokeAI", "Stable Diffusion parameters in PNG text (InvokeAI)"),
        (
            {"Software": "NovelAI", "Comment": '{"steps": 28, "sampler": "k_euler", "seed": 1}'},
            "NovelAI",
            "Generation parameters in PNG text (NovelAI)",
        ),
        ({"Description": A1111}, "A1111", "Stable Diffusion parameters in PNG text (A1111)"),
        ({"prompt": "a cat in a hat"}, None, "Generation parameters in PNG text"),
    ],
)
def test_other_front_ends_are_recognised(chunks, generator, note):
    meta = read(png_with_text(**chunks))
    assert meta.fields["png_text"]["generation_parameters"] is True
    assert meta.fields["png_text"].get("generator") == generator
    assert meta.notes.startswith(note)


def test_png_text_without_generation_parameters():
    meta = read(png_with_text(Title="Holiday", Author="Jane"))
    assert meta.fields["png_text"] == {"Title": "Holiday", "Author": "Jane", "generation_parameters": False}
    assert meta.notes == ""


def test_long_text_is_truncated_but_still_recognised():
    long = "a very long prompt, " * 1000 + A1111  # the marker sits past the stored 2000 chars
    text = read(png_with_text(parameters=long)).fields["png_text"]
    assert text["parameters"] == long[:2000] and text["generator"] == "A1111"


def test_jpeg_comment_with_parameters():
    meta = read(encode(noise(), "JPEG", quality=90, comment=A1111.encode()))
    assert meta.fields["png_text"]["comment"] == A1111 and meta.fields["png_text"]["generator"] == "A1111"
    assert meta.notes == "Stable Diffusion parameters in JPEG comment (A1111); JPEG quality ≈ 90"


# ----------------------------------------------------------------------------------------------- XMP


@pytest.mark.parametrize("form", ["attribute", "element"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_xmp_digital_source_type(fmt, form):
    meta = read(encode(noise(), fmt, xmp=xmp_packet(form=form)))
    xmp = meta.fields["xmp"]
    assert xmp["digital_source_type"] == TRAINED and xmp["digital_source_type_name"] == "trainedAlgorithmicMedia"
    assert xmp["creator_tool"] == "Adobe Firefly"
    if form == "attribute":
        assert xmp["credit"] == "Made with AI"
    else:
        assert xmp["creator"] == "Jane Doe"
    assert meta.notes.startswith("XMP DigitalSourceType: trainedAlgorithmicMedia; ")  # generative signals first
    assert "Software: Adobe Firefly" in meta.notes


def test_xmp_in_png_itxt():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
    meta = read(encode(noise(), "PNG", pnginfo=info))
    assert meta.fields["xmp"]["digital_source_type_name"] == "trainedAlgorithmicMedia"
    assert "png_text" not in meta.fields  # the XMP chunk is not repeated as text


def test_xmp_found_by_bounded_scan_where_pillow_does_not_expose_it():
    source = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    data = encode(noise(), "BMP") + xmp_packet(source, form="element")  # trailing packet, found in the tail
    meta = read(data, with_image=False)
    assert meta.fields["xmp"]["digital_source_type_name"] == "digitalCapture"
    assert meta.notes == "XMP DigitalSourceType: digitalCapture; Software: Adobe Firefly"  # not a generative one


@pytest.mark.parametrize("doctype", [BILLION_LAUGHS, XXE])
def test_xmp_with_entity_declarations_is_rejected_and_other_fields_survive(doctype, monkeypatch):
    bomb = xmp_packet(prolog=doctype).replace(b"Adobe Firefly", b"&lol9;" if doctype == BILLION_LAUGHS else b"&xxe;")
    data = encode(noise(), "JPEG", quality=80, xmp=bomb, exif=camera_exif().tobytes())
    parsed: list = []
    parse = metadata.ET.fromstring
    monkeypatch.setattr(metadata.ET, "fromstring", lambda text, *a, **kw: parsed.append(text) or parse(text, *a, **kw))
    meta = read(data)
    assert parsed == []  # never given to the XML parser: nothing to expand
    assert meta.fields["xmp"] == {"error": "XMP with DOCTYPE/ENTITY declarations rejected"}
    assert meta.fields["exif"]["make"] == "Canon" and meta.fields["jpeg_quality"] == 80


def test_malformed_xmp_is_skipped():
    data = encode(noise(), "JPEG", xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF><unclosed></x:xmpmeta>")
    meta = read(data)
    assert "xmp" not in meta.fields and meta.fields["jpeg_quality"] == 75


# --------------------------------------------------------------------------------------- JPEG quality


@pytest.mark.parametrize("quality", [5, 25, 50, 75, 90, 95, 100])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_quality_is_exact_for_libjpeg_tables(quality, mode):
    assert read(encode(noise().convert(mode), "JPEG", quality=quality)).fields["jpeg_quality"] == quality


def test_no_jpeg_quality_for_other_formats():
    assert "jpeg_quality" not in read(encode(noise(), "PNG")).fields


# ------------------------------------------------------------------------------------- hostile input


def rich_jpeg() -> bytes:
    return encode(noise(), "JPEG", quality=85, exif=camera_exif().tobytes(), xmp=xmp_packet(), comment=b"hello")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        bytes(np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8)),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",
        b"II*\x00\x08\x00\x00\x00" + b"\xff" * 64,  # TIFF with an IFD of 65535 entries past the end
        b"<x:xmpmeta>" * 1000,
    ],
    ids=["empty", "garbage", "random", "png-header", "jpeg-bad-exif", "tiff-bad-ifd", "xmp-openers"],
)
def test_garbage_gives_empty_fields(data, caplog, capsys):
    with caplog.at_level(logging.WARNING):  # exifread warns about every such file unless silenced
        meta = read_metadata(data)
    assert set(meta.fields) <= {"c2pa"} and not meta.fields.get("c2pa", {}).get("present")
    assert meta.notes == ""
    assert not caplog.records and capsys.readouterr() == ("", "")


def test_hostile_exif_work_is_bounded(exifread_reads):
    # 3000 chained IFDs, each pointing at a GPS IFD that claims 65535 entries past the end: unbounded,
    # exifread takes minutes on these 54 kB.
    count, tiff = 3000, bytearray(b"MM\x00*\x00\x00\x00\x08")
    for k in range(count):
        following = 8 + (k + 1) * 18 if k < count - 1 else 0
        tiff += struct.pack(">HHHIII", 1, 0x8825, 4, 1, 8 + count * 18, following)
    data = encode(noise(), "JPEG", exif=b"Exif\x00\x00" + bytes(tiff) + b"\xff\xff")
    meta = read(data)
    assert exifread_reads == [metadata.EXIFREAD_READ_BUDGET + 1]  # stopped by the budget, at the budget
    assert read(encode(noise(), "JPEG", exif=camera_exif().tobytes())).fields["exif"]["make"] == "Canon"
    assert exifread_reads[1] < metadata.EXIFREAD_READ_BUDGET / 10  # a camera's EXIF is far within it
    assert "exif" not in meta.fields and meta.fields["jpeg_quality"] == 75


def test_truncated_jpeg_keeps_what_its_header_holds():
    data = rich_jpeg()
    meta = read_metadata(data[: len(data) // 2])
    assert meta.fields["exif"]["make"] == "Canon" and meta.fields["jpeg_quality"] == 85
    assert meta.fields["xmp"]["digital_source_type_name"] == "trainedAlgorithmicMedia"


def test_corrupted_files_never_raise(exifread_reads):
    rng = np.random.default_rng(0)
    originals = [rich_jpeg(), png_with_text(parameters=A1111, prompt=COMFY_PROMPT)]
    for original in originals:
        for _ in range(150):
            data = bytearray(original)
            for at in rng.integers(0, len(data), 8):
                data[at] = int(rng.integers(0, 256))
            meta = read_metadata(bytes(data[: int(rng.integers(1, len(data) + 1))]))
            json.dumps(meta.fields)
    assert exifread_reads and max(exifread_reads) <= metadata.EXIFREAD_READ_BUDGET + 1  # bounded work, each


def test_non_bytes_input_does_not_raise():
    assert read_metadata(None) == Metadata({}, "")  # type: ignore[arg-type]
    assert read_metadata(bytearray(rich_jpeg())).fields["exif"]["make"] == "Canon"  # type: ignore[arg-type]


def test_one_failing_reader_does_not_lose_the_others(monkeypatch):
    def boom(*args):
        raise RuntimeError("exifread blew up")

    monkeypatch.setattr(metadata.exifread, "process_file", boom)
    meta = read(rich_jpeg())
    assert meta.fields["exif"]["make"] == "Canon"  # Pillow's parse steps in
    assert meta.fields["xmp"]["creator_tool"] == "Adobe Firefly" and meta.fields["jpeg_quality"] == 85


def test_notes_stay_short():
    exif = camera_exif()
    exif[0x0131] = "S" * 500
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", A1111)
    meta = read(encode(noise(), "PNG", pnginfo=text, exif=exif.tobytes()))
    assert meta.fields["exif"]["software"] == "S" * 200
    assert len(meta.notes) <= 200 and meta.notes.startswith("Stable Diffusion parameters in PNG text (A1111)")


# ---------------------------------------------------------------------------------------------- C2PA


def test_no_c2pa_key_without_the_library(monkeypatch):
    monkeypatch.setattr(metadata, "C2PA_AVAILABLE", False)
    assert "c2pa" not in read(rich_jpeg()).fields


def test_c2pa_absent_manifest():
    pytest.importorskip("c2pa")
    assert metadata.C2PA_AVAILABLE
    for data in (rich_jpeg(), encode(noise(), "PNG"), rich_jpeg() + b"c2pa"):  # the last one passes the pre-check
        assert read(data).fields["c2pa"] == {"present": False}


@pytest.fixture(scope="module")
def c2pa_signer_info(c2pa_test_ca):
    return c2pa_test_ca[0]


@pytest.fixture(scope="module")
def c2pa_test_ca():
    """A throwaway CA and signing certificate (C2PA refuses self-signed end-entity certificates):
    the signer's info, and the CA's certificate as PEM (a trust anchor)."""
    c2pa = pytest.importorskip("c2pa")
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forensix tests")
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), org])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(True, False, False, False, False, sign, sign, False, False)

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject: str, public_key, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("forensix test CA"))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage(sign=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    ca = certificate("forensix test CA", ca_key.public_key(), ca=True).sign(ca_key, hashes.SHA256())
    leaf = (
        certificate("forensix test signer", key.public_key(), ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, pem, None), ca_pem


def c2pa_sign(signer_info, data: bytes, mime: str, actions: list | None = None) -> bytes:
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "forensix-test", "version": "1.0"}],
        "title": "generated.jpg",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": actions or [{"action": "c2pa.created", "digitalSourceType": TRAINED}]},
            }
        ],
    }
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(c2pa.Signer.from_info(signer_info), mime, io.BytesIO(data), out)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_c2pa_signed_manifest(c2pa_signer_info, fmt, mime):
    signed = c2pa_sign(c2pa_signer_info, encode(noise(), fmt), mime)
    meta = read(signed)
    assert meta.fields["c2pa"] == {
        "present": True,
        "validation_state": "Valid",
        "validation_status": ["signingCredential.untrusted"],  # our CA is in no trust list
        "claim_generator": "forensix-test 1.0",
        "title": "generated.jpg",
        "issuer": "forensix tests",
        "signer": "forensix test signer",
        "digital_source_type": TRAINED,
        "digital_source_type_name": "trainedAlgorithmicMedia",
        "generated_by_ai": True,
    }
    assert meta.notes.startswith("C2PA manifest (valid; trainedAlgorithmicMedia), generator: forensix-test 1.0")


def test_c2pa_tampered_pixels_are_invalid(c2pa_signer_info):
    signed = bytearray(c2pa_sign(c2pa_signer_info, encode(noise(), "JPEG", quality=90), "image/jpeg"))
    signed[-100] ^= 0xFF  # inside the entropy-coded data the manifest's hash covers
    credentials = read_metadata(bytes(signed)).fields["c2pa"]
    assert credentials["present"] is True and credentials["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in credentials["validation_status"]


COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def test_c2pa_is_trusted_only_against_its_anchors_and_invalid_once_the_pixels_change(c2pa_test_ca):
    info, ca_pem = c2pa_test_ca
    signed = c2pa_sign(info, encode(noise(), "JPEG", quality=90), "image/jpeg")
    untrusted = read_metadata(signed).fields["c2pa"]
    trusted = read_metadata(signed, c2pa_trust=ca_pem).fields["c2pa"]
    assert untrusted["validation_state"] == "Valid" and untrusted["validation_status"] == [
        "signingCredential.untrusted"
    ]
    assert trusted["validation_state"] == "Trusted" and "validation_status" not in trusted
    assert trusted["generated_by_ai"] is True and "edited_with_ai" not in trusted
    assert read_metadata(signed, c2pa_trust=ca_pem).notes.startswith("C2PA manifest (trusted; trainedAlgorithmicMedia)")
    # the same anchors as a c2pa settings file
    settings = json.dumps({"trust": {"trust_anchors": ca_pem}, "verify": {"remote_manifest_fetch": True}})
    assert read_metadata(signed, c2pa_trust=settings).fields["c2pa"]["validation_state"] == "Trusted"
    assert c2pa_trust_settings(settings)["verify"]["remote_manifest_fetch"] is False  # never fetched, whatever it says
    tampered = bytearray(signed)
    tampered[-100] ^= 0xFF
    changed = read_metadata(bytes(tampered), c2pa_trust=ca_pem).fields["c2pa"]
    assert changed["validation_state"] == "Invalid" and "assertion.dataHash.mismatch" in changed["validation_status"]


def test_c2pa_says_when_an_ai_tool_edited_a_capture(c2pa_signer_info):
    actions = [
        {"action": "c2pa.created", "digitalSourceType": CAPTURE},
        {"action": "c2pa.edited", "digitalSourceType": COMPOSITE},
    ]
    meta = read_metadata(c2pa_sign(c2pa_signer_info, encode(noise(), "PNG"), "image/png", actions))
    credentials = meta.fields["c2pa"]
    assert credentials["digital_source_type_name"] == "digitalCapture" and credentials["edited_with_ai"] is True
    assert "generated_by_ai" not in credentials
    assert meta.notes.startswith(
        "C2PA manifest (valid; digitalCapture; edited with an AI tool)"
    )  # a generative signal: first


def test_c2pa_trust_text_is_checked():
    for bad, message in (
        ("hello", "neither PEM"),
        ("{", "not a c2pa settings file"),
        ('{"verify": {}}', "'trust' section"),
    ):
        with pytest.raises(ValueError, match=message):
            c2pa_trust_settings(bad)
    offline = {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}
    assert c2pa_trust_settings(None) == {"verify": offline}
    hostile = {
        "trust": {"trust_anchors": "x"},
        "verify": {"ocsp_fetch": True},
        "core": {"allowed_network_hosts": ["*"]},
    }
    assert c2pa_trust_settings(json.dumps(hostile)) == {"trust": {"trust_anchors": "x"}, "verify": offline}


def test_scan_c2pa_trust_makes_the_rows_trusted_and_resume_holds_to_it(
    c2pa_test_ca, small_input_weights, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from forensix.cli import app

    monkeypatch.setenv("FORENSIX_HOME", str(tmp_path / "home"))
    info, ca_pem = c2pa_test_ca
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(c2pa_sign(info, encode(noise(i), "JPEG"), "image/jpeg"))
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(ca_pem)
    out = tmp_path / "r.jsonl"
    base = ["scan", str(folder), "--weights", str(small_input_weights), "--workers", "0", "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--c2pa-trust", str(anchors)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["metadata"]["c2pa"]["validation_state"] for r in rows] == ["Trusted", "Trusted"]
    meta = json.loads((tmp_path / "r.jsonl.meta.json").read_text())
    assert len(meta["c2pa_trust"]) == 64  # the anchors' sha256, not the anchors
    out.write_text(out.read_text().splitlines()[0] + "\n")
    refused = runner.invoke(app, [*base, "--resume"])
    assert refused.exit_code == 2 and "not no --c2pa-trust" in refused.stderr, refused.output
    assert runner.invoke(app, [*base, "--resume", "--c2pa-trust", str(anchors)]).exit_code == 0
    (tmp_path / "bad.pem").write_text("not a certificate")
    bad = runner.invoke(app, [*base, "--c2pa-trust", str(tmp_path / "bad.pem")])
    assert bad.exit_code == 2 and "neither PEM certificates" in bad.stderr
