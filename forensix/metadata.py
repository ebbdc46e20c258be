"""Provenance notes for one image: EXIF, embedded text, XMP, C2PA Content Credentials, JPEG quality.

These are shown beside the detector score and never mixed into it: metadata is trivially stripped or
forged, so it can corroborate a verdict but not make one. read_metadata runs in DataLoader workers once
per image, so every reader is cheap, bounded on hostile input and guarded on its own (one failing never
loses the others), and everything it returns is plain JSON (str, int, bool, list, dict).

Metadata.fields holds only what was found:
  exif          make, model, software, lens, date_taken, date_modified, orientation (int), gps (bool); user_comment, and
                generation_parameters/generator when it holds A1111 parameters (JPEG/WebP)
  png_text      text chunks (PNG) or the comment (JPEG/GIF) under known keys (parameters, prompt, workflow,
                Software, Comment, ...), generation_parameters (bool), generator (A1111, ComfyUI, ...), other_keys
  xmp           creator_tool, digital_source_type (IPTC URI) and digital_source_type_name, credit, creator;
                or error when the packet was rejected (DOCTYPE/ENTITY) or too large
  c2pa          present (bool), validation_state (Trusted / Valid / Invalid, against the trust given),
                validation_status (failure codes), claim_generator, title, issuer, signer, digital_source_type(_name),
                generated_by_ai / edited_with_ai (when the active manifest's actions say so); error when a
                manifest store could not be read. Only with c2pa-python.
  jpeg_quality  IJG quality 1-100 whose luminance table is nearest the file's
  decoder_warnings  what the decoder warned of while reading the file (corrupt EXIF, a malformed MPO, an
                invalid APNG, a TIFF tag past the end of the file), distinct messages, at most 20
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import exifread
import numpy as np
from PIL import Image

from .text import one_line

try:  # Content Credentials need the optional c2pa-python package (pip install 'forensix[provenance]')
    import c2pa

    C2PA_AVAILABLE = True
except Exception:  # ImportError, or OSError when its bundled native library cannot load
    c2pa = None
    C2PA_AVAILABLE = False

# exifread logs a warning for every file without EXIF and for each oddity in hostile ones.
logging.getLogger("exifread").setLevel(logging.ERROR)

MAX_FIELD = 200  # chars kept of a short field (camera model, software, ...)
MAX_TEXT = 2000  # chars kept of a text chunk / comment (prompts, ComfyUI JSON)
MAX_SCAN_TEXT = 1 << 20  # chars of a text value searched for generation markers
MAX_TEXT_ENTRIES = 200  # text chunks looked at
MAX_OTHER_KEYS = 20
MAX_NOTES = 200
MAX_DECODER_WARNINGS = 20
MAX_XMP = 2 << 20  # bytes of an XMP packet we parse
XMP_SCAN_HEAD = 8 << 20  # where a raw scan looks for a packet Pillow does not expose
XMP_SCAN_TAIL = 2 << 20
MAX_XMP_ELEMENTS = 20_000
MAX_C2PA_CODES = 10
# exifread reads field by field (~3 us a read): a hostile IFD claiming 65535 entries past the end of the data,
# or thousands of IFDs pointing at one, would cost seconds. Camera EXIF takes a few hundred reads.
EXIFREAD_READ_BUDGET = 20_000

# Formats whose XMP Pillow puts in image.info['xmp']: for these, no packet there means no packet at all.
PILLOW_XMP_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
}
TEXT_PLACES = {"PNG": "PNG text", "JPEG": "JPEG comment", "MPO": "JPEG comment", "GIF": "GIF comment"}

# Text keys kept verbatim (matched case-insensitively); others are only listed by name.
GENERATION_KEYS = ("parameters", "prompt", "workflow", "invokeai_metadata", "invokeai_graph", "sd-metadata", "dream")
DESCRIPTIVE_KEYS = (
    "software", "comment", "description", "title", "author", "source", "copyright",
    "creation time", "generation time", "disclaimer", "warning", "fooocus_scheme",
)  # fmt: skip
TEXT_KEYS = frozenset(GENERATION_KEYS + DESCRIPTIVE_KEYS)
SD_FRONT_ENDS = ("A1111", "ComfyUI", "InvokeAI", "SwarmUI", "Fooocus")

# IPTC digital source types that say the pixels were (partly) made by a generative model.
IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATIVE_SOURCE_TYPES = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia", "compositeSynthetic"}
)
XMP_WANTED = {"CreatorTool": "creator_tool", "DigitalSourceType": "digital_source_type", "Credit": "credit"}
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"
XMP_ROOTS = ((b"<x:xmpmeta", b"</x:xmpmeta>"), (b"<x:xapmeta", b"</x:xapmeta>"), (b"<rdf:RDF", b"</rdf:RDF>"))
UNSAFE_XML = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
XMP_SOURCE_TYPE = re.compile(r"DigitalSourceType(?:\s*=\s*[\"']|>|\s+rdf:resource\s*=\s*[\"'])\s*([^\"'<>\s]{1,300})")

# EXIF fields: (key, exifread name, Pillow IFD or None for IFD0, tag id).
EXIF_TEXT_FIELDS = (
    ("make", "Image Make", None, 0x010F),
    ("model", "Image Model", None, 0x0110),
    ("software", "Image Software", None, 0x0131),
    ("lens", "EXIF LensModel", 0x8769, 0xA434),
    ("date_taken", "EXIF DateTimeOriginal", 0x8769, 0x9003),  # when the picture was taken
    ("date_modified", "Image DateTime", None, 0x0132),  # when the file was last written: not a capture date
)
EXIF_IFD, GPS_IFD, ORIENTATION, USER_COMMENT = 0x8769, 0x8825, 0x0112, 0x9286

# libjpeg's luminance table (natural order; Pillow reports quantization tables in natural order too).
IJG_LUMINANCE = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ]
)  # fmt: skip


def _ijg_tables() -> np.ndarray:
    """Row q-1: the luminance table libjpeg writes at quality q (jpeg_quality_scaling, baseline-clamped)."""
    q = np.arange(1, 101)[:, None]
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    return np.clip((IJG_LUMINANCE[None, :] * scale + 50) // 100, 1, 255)


IJG_TABLES = _ijg_tables()


@dataclass
class Metadata:
    fields: dict[str, Any]  # nested JSON-able; only keys that were found
    notes: str  # a short human sentence, '' when nothing notable


def read_metadata(
    data: bytes, image: Image.Image | None = None, decoder_warnings: Sequence[str] = (), c2pa_trust: str | None = None
) -> Metadata:
    """Provenance fields and a one-line note for one image file; never raises.

    data is the file's bytes; image the same file already opened and loaded by Pillow (before orientation
    or mode conversion), so text chunks, image.info and quantization tables come without decoding again.
    Without it the file is opened here, and readers that need it are skipped if that fails.
    decoder_warnings are what decoding the file warned of (forensix.imaging.file_warnings): a damaged
    file is a fact about it, kept in the fields and the notes. c2pa_trust is what a Content Credential
    is validated against (:func:`c2pa_trust_settings`: PEM trust anchors, or a c2pa settings file's
    text); without it no signer is trusted, and a sound manifest is at best Valid.
    """
    fields: dict[str, Any] = {}
    if decoder_warnings:
        fields["decoder_warnings"] = [w[:MAX_FIELD] for w in dict.fromkeys(decoder_warnings)][:MAX_DECODER_WARNINGS]
    notes = ""
    with warnings.catch_warnings():  # Pillow warns on odd EXIF, c2pa on deprecations: no noise in workers
        warnings.simplefilter("ignore")
        try:
            data = bytes(data)
            if image is None:
                image = _guarded(_open_image, data)
            fmt = (image.format if image is not None else None) or _sniff_format(data)
            for key, reader in READERS:
                # the one reader with a setting of its own
                value = _guarded(reader, data, image, c2pa_trust) if key == "c2pa" else _guarded(reader, data, image)
                if value:
                    fields[key] = value
            notes = _guarded(_notes, fields, fmt) or ""
        except Exception:  # belt and braces: the contract is 'never raises', even for a non-bytes data
            pass
    return Metadata(fields, notes)


def _guarded(function: Callable[..., Any], *args: Any) -> Any:
    """function(*args), or None if it raises: one reader's failure must not cost the others."""
    try:
        return function(*args)
    except Exception:  # hostile input reaches third-party parsers; any exception type is possible
        return None


def _open_image(data: bytes) -> Image.Image | None:
    image = Image.open(io.BytesIO(data))
    try:
        image.load()  # text chunks after the pixel data only arrive with load()
    except Exception:  # a truncated file still has the header's info, EXIF and quantization tables
        pass
    return image


def _sniff_format(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def _clip(value: Any, limit: int = MAX_FIELD) -> str:
    """A bounded, stripped str from whatever a parser returned (bytes decoded leniently, NULs dropped)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: limit * 4]).decode("utf-8", "replace")
    return str(value)[: limit * 4].replace("\x00", "").strip()[:limit]


def _one_line(value: Any) -> str:
    return one_line(_clip(value))


# ---------------------------------------------------------------------------------------------- EXIF


def _read_exif(data: bytes, image: Image.Image | None) -> dict[str, Any]:
    # exifread first (it reads EXIF from the bytes alone); Pillow's parse where it finds nothing (e.g. WebP).
    found = _guarded(_exif_from_exifread, data) or _guarded(_exif_from_pillow, image) or {}
    comment = _guarded(_user_comment, image)
    if comment:
        found["user_comment"] = comment[:MAX_TEXT]
        if _has_a1111_parameters(comment):  # A1111 writes its parameters here for JPEG and WebP
            found["generation_parameters"] = True
            found["generator"] = "A1111"
    return found


class _ReadBudgetExceeded(Exception):
    pass


class _BudgetedStream(io.BytesIO):
    """A BytesIO that raises after a number of reads: bounds exifread's work on hostile files."""

    def __init__(self, data: bytes, budget: int) -> None:
        super().__init__(data)
        self.budget = budget

    def read(self, size: int | None = -1) -> bytes:
        self.budget -= 1
        if self.budget < 0:
            raise _ReadBudgetExceeded
        return super().read(size)


def _exif_from_exifread(data: bytes) -> dict[str, Any]:
    stream = _BudgetedStream(data, EXIFREAD_READ_BUDGET)
    tags = exifread.process_file(stream, details=False, extract_thumbnail=False)
    found: dict[str, Any] = {}
    for key, name, _, _ in EXIF_TEXT_FIELDS:
        tag = tags.get(name)
        if key not in found and tag is not None:
            value = tag.values if isinstance(tag.values, str | bytes) else tag.printable
            if text := _one_line(value):
                found[key] = text
    orientation = tags.get("Image Orientation")
    if orientation is not None and orientation.values and isinstance(orientation.values[0], int):
        found["orientation"] = int(orientation.values[0])
    if any(str(name).startswith("GPS ") for name in tags):
        found["gps"] = True
    return found


def _exif_from_pillow(image: Image.Image | None) -> dict[str, Any]:
    if image is None:
        return {}
    exif = image.getexif()
    found: dict[str, Any] = {}
    for key, _, ifd, tag in EXIF_TEXT_FIELDS:
        value = (exif if ifd is None else exif.get_ifd(ifd)).get(tag)
        if key not in found and isinstance(value, str | bytes) and (text := _one_line(value)):
            found[key] = text
    if isinstance(exif.get(ORIENTATION), int):
        found["orientation"] = int(exif[ORIENTATION])
    if exif.get_ifd(GPS_IFD):
        found["gps"] = True
    return found


def _user_comment(image: Image.Image | None) -> str:
    """EXIF UserComment in full (exifread drops values over 1000 bytes, and prompts are longer)."""
    if image is None:
        return ""
    raw = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    if isinstance(raw, str):
        return _clip(raw, MAX_SCAN_TEXT)
    if not isinstance(raw, bytes):
        return ""
    return _clip(_decode_user_comment(raw[: 2 * MAX_SCAN_TEXT]), MAX_SCAN_TEXT)


def _decode_user_comment(raw: bytes) -> str:
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace")
        # No BOM: A1111 (piexif) writes big-endian whatever the TIFF byte order; ASCII-heavy text tells which.
        sample = body[:512]
        big_endian = sample[0::2].count(0) >= sample[1::2].count(0)
        return body.decode("utf-16-be" if big_endian else "utf-16-le", "replace")
    if code.startswith(b"JIS"):
        return body.decode("shift_jis", "replace")
    if code.startswith(b"ASCII") or code == b"\x00" * 8:
        return body.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _has_a1111_parameters(text: str) -> bool:
    text = text[:MAX_SCAN_TEXT]
    return "Steps:" in text and "Sampler:" in text


# ------------------------------------------------------------------------------------ embedded text


def _read_text(data: bytes, image: Image.Image | None) -> dict[str, Any]:
    """PNG tEXt/iTXt/zTXt chunks, or a JPEG/GIF comment: generation parameters and descriptive keys."""
    entries = _text_entries(image)
    if not entries:
        return {}
    found: dict[str, Any] = {}
    others: list[str] = []
    for key, value in entries.items():
        if key.lower() in TEXT_KEYS:
            found[key] = _clip(value, MAX_TEXT)
        elif len(others) < MAX_OTHER_KEYS:
            others.append(_one_line(key)[:80])
    generative, generator = _generation_signal(entries)
    found["generation_parameters"] = generative
    if generator:
        found["generator"] = generator
    if others:
        found["other_keys"] = others
    return found


def _text_entries(image: Image.Image | None) -> dict[str, str]:
    if image is None:
        return {}
    text = getattr(image, "text", None)  # PngImageFile only; it holds chunks after the pixel data too
    if not isinstance(text, dict):
        comment = image.info.get("comment")
        text = {"comment": comment} if comment else {}
    entries: dict[str, str] = {}
    for key, value in list(text.items())[:MAX_TEXT_ENTRIES]:
        name = _clip(key, 80)
        if name and name != "XML:com.adobe.xmp":  # XMP is read (safely) by the XMP reader
            entries[name] = _clip(value, MAX_SCAN_TEXT)
    return entries


def _generation_signal(entries: dict[str, str]) -> tuple[bool, str | None]:
    """Whether the text holds image-generation parameters, and which front end wrote them if known."""
    lower = {key.lower(): value for key, value in entries.items()}
    if any(key in lower for key in ("invokeai_metadata", "invokeai_graph", "sd-metadata", "dream")):
        return True, "InvokeAI"
    prompt = lower.get("prompt", "")
    if "workflow" in lower or (prompt.lstrip().startswith("{") and '"class_type"' in prompt):
        return True, "ComfyUI"
    if "parameters" in lower:
        parameters = lower["parameters"]
        if "sui_image_params" in parameters:
            return True, "SwarmUI"
        if "fooocus_scheme" in lower:
            return True, "Fooocus"
        return True, "A1111" if _has_a1111_parameters(parameters) else None
    comment = lower.get("comment", "")
    if lower.get("software", "").startswith("NovelAI") or ('"steps"' in comment and '"sampler"' in comment):
        return True, "NovelAI" if lower.get("software", "").startswith("NovelAI") else None
    if "prompt" in lower:
        return True, None
    if any(_has_a1111_parameters(value) for value in entries.values()):
        return True, "A1111"
    return False, None


# ----------------------------------------------------------------------------------------------- XMP


def _read_xmp(data: bytes, image: Image.Image | None) -> dict[str, Any]:
    packet = _xmp_packet(data, image)
    if not packet:
        return {}
    if UNSAFE_XML.search(packet):  # entity expansion (billion laughs) or external entities (XXE): never parse
        return {"error": "XMP with DOCTYPE/ENTITY declarations rejected"}
    body = _xmp_body(packet)
    if len(body) > MAX_XMP:  # bloated packets (Photoshop history) are not parsed; a bounded regex still looks
        found: dict[str, Any] = {"error": f"XMP packet too large to parse ({len(body)} chars)"}
        if match := XMP_SOURCE_TYPE.search(body, 0, 4 * MAX_XMP):
            found.update(_source_type_fields(match.group(1)))
        return found
    return _xmp_fields(ET.fromstring(body))


def _xmp_packet(data: bytes, image: Image.Image | None) -> str:
    raw: Any = None
    if image is not None:
        raw = image.info.get("xmp")
        if raw is None and image.format == "PNG":
            raw = getattr(image, "text", {}).get("XML:com.adobe.xmp")
        if raw is None and image.format == "TIFF":
            raw = image.tag_v2.get(700)
    if raw is None and (image is None or image.format not in PILLOW_XMP_FORMATS):
        raw = _scan_xmp(data)
    if isinstance(raw, tuple):  # TIFF tags may come as a tuple of values
        raw = raw[0] if raw else None
    if isinstance(raw, bytes | bytearray):
        raw = _decode_xml(bytes(raw[: 2 * MAX_XMP + 4096]))
    return raw[: 2 * MAX_XMP + 4096] if isinstance(raw, str) else ""


def _scan_xmp(data: bytes) -> bytes | None:
    """The first XMP packet in the file's head, else its tail: bounded, never a scan of a whole large file."""
    windows = [(0, min(len(data), XMP_SCAN_HEAD))]
    if len(data) > XMP_SCAN_HEAD:
        windows.append((max(XMP_SCAN_HEAD, len(data) - XMP_SCAN_TAIL), len(data)))
    for start, stop in windows:
        for opener, closer in XMP_ROOTS[:2]:
            begin = data.find(opener, start, stop)
            if begin >= 0:
                end = data.find(closer, begin, begin + 2 * MAX_XMP)
                return data[begin : end + len(closer) if end >= 0 else begin + 2 * MAX_XMP]
    return None


def _decode_xml(raw: bytes) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16", "replace")
    return raw.decode("utf-8", "replace")


def _xmp_body(packet: str) -> str:
    """The x:xmpmeta (or bare rdf:RDF) element alone: no xpacket wrapper, padding or trailing bytes."""
    for opener, closer in XMP_ROOTS:
        begin = packet.find(opener.decode())
        if begin >= 0:
            end = packet.find(closer.decode(), begin)
            return packet[begin : end + len(closer)] if end >= 0 else packet[begin:]
    return packet.strip()


def _xmp_fields(root: ET.Element) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for count, element in enumerate(root.iter()):
        if count >= MAX_XMP_ELEMENTS:
            break
        for name, value in element.attrib.items():  # rdf:Description attribute form
            key = XMP_WANTED.get(_local(name))
            if key and key not in found and (text := _one_line(value)):
                found[key] = text
        local = _local(element.tag)
        key = "creator" if element.tag == DC_CREATOR else XMP_WANTED.get(local)
        if key and key not in found and (text := _one_line(_element_value(element))):
            found[key] = text
    if "digital_source_type" in found:
        found.update(_source_type_fields(found["digital_source_type"]))
    return found


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _element_value(element: ET.Element) -> str:
    """An element's value: rdf:resource, its text, or its first rdf:li (dc:creator is an rdf:Seq)."""
    if resource := element.get(RDF + "resource"):
        return resource
    if element.text and element.text.strip():
        return element.text
    for item in element.iter(RDF + "li"):
        return item.text or ""
    return ""


def _source_type_fields(value: str) -> dict[str, str]:
    """The full IPTC digital source type URI and its short name (trainedAlgorithmicMedia, ...)."""
    uri = _one_line(value)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return {"digital_source_type": uri, "digital_source_type_name": name} if uri else {}


# ---------------------------------------------------------------------------------------------- C2PA


def _read_c2pa(data: bytes, image: Image.Image | None, trust: str | None = None) -> dict[str, Any]:
    fmt = image.format if image is not None else None
    mime = MIME_TYPES.get(fmt or "") or MIME_TYPES.get(_sniff_format(data) or "")
    if not C2PA_AVAILABLE or mime is None:  # no library, or not an image format that can carry a manifest
        return {}
    # Every embedded manifest store is a JUMBF box labelled 'c2pa'; without one the native reader (up
    # to hundreds of ms on a large GIF) can only say 'no manifest'. The scan costs about one SHA-256 of data.
    if b"c2pa" not in data:
        return {"present": False}
    try:
        with c2pa.Reader(mime, io.BytesIO(data), context=_c2pa_context(os.getpid(), trust)) as reader:
            store = json.loads(reader.json())
    except (c2pa.C2paError.ManifestNotFound, c2pa.C2paError.NotSupported):
        return {"present": False}
    except Exception as e:  # a broken or tampered manifest store is itself worth reporting
        return {"present": False, "error": _one_line(str(e) or type(e).__name__)[:120]}
    return _c2pa_fields(store if isinstance(store, dict) else {})


def c2pa_trust_settings(trust: str | None) -> dict[str, Any]:
    """The c2pa settings a manifest is validated with: PEM trust anchors (the C2PA trust list, or a
    CA of your own), or a c2pa settings file's JSON (its ``trust`` and ``verify`` sections only);
    never a network request (no remote manifest, no OCSP). ValueError for text that is neither."""
    settings: dict[str, Any] = {}
    if trust is not None and trust.lstrip().startswith("{"):
        try:
            settings = json.loads(trust)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a c2pa settings file: {e}") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("trust"), dict):
            raise ValueError("a c2pa settings file needs a 'trust' section (trust_anchors, allowed_list, trust_config)")
    elif trust is not None:
        if "-----BEGIN CERTIFICATE-----" not in trust:
            raise ValueError("neither PEM certificates (-----BEGIN CERTIFICATE-----) nor a c2pa settings file (JSON)")
        settings = {"trust": {"trust_anchors": trust}}
    verify = settings.get("verify") if isinstance(settings.get("verify"), dict) else {}
    offline = {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}
    return {**({"trust": settings["trust"]} if "trust" in settings else {}), "verify": {**verify, **offline}}


def check_c2pa_trust(trust: str) -> None:
    """ValueError unless c2pa-python takes these trust settings (checked once, before a scan starts)."""
    if not C2PA_AVAILABLE:
        raise ValueError("C2PA trust needs c2pa-python: pip install 'forensix[provenance]'")
    try:
        c2pa.Context(c2pa.Settings.from_dict(c2pa_trust_settings(trust)))
    except c2pa.C2paError as e:
        raise ValueError(f"c2pa-python refuses these trust settings: {_one_line(str(e))[:200]}") from None


@functools.cache
def _c2pa_context(pid: int, trust: str | None) -> Any:
    """One reader context per process (DataLoader workers are forked) and trust setting."""
    return c2pa.Context(c2pa.Settings.from_dict(c2pa_trust_settings(trust)))


def _c2pa_fields(store: dict[str, Any]) -> dict[str, Any]:
    active = store.get("active_manifest")
    manifest = _as_dict(_as_dict(store.get("manifests")).get(active)) if isinstance(active, str) else {}
    found: dict[str, Any] = {"present": bool(manifest)}
    if isinstance(store.get("validation_state"), str):
        found["validation_state"] = _one_line(store["validation_state"])
    statuses = store.get("validation_status")
    statuses = statuses if isinstance(statuses, list) else []
    codes = [_one_line(s["code"]) for s in statuses[:100] if isinstance(s, dict) and isinstance(s.get("code"), str)]
    if codes:
        found["validation_status"] = codes[:MAX_C2PA_CODES]
    if generator := _claim_generator(manifest):
        found["claim_generator"] = generator
    if isinstance(manifest.get("title"), str):
        found["title"] = _one_line(manifest["title"])
    signature = _as_dict(manifest.get("signature_info"))
    if isinstance(issuer := signature.get("issuer"), str):
        found["issuer"] = _one_line(issuer)
    if isinstance(signer := signature.get("common_name"), str):
        found["signer"] = _one_line(signer)
    types = _c2pa_source_types(manifest)
    if types:
        found.update(_source_type_fields(types[0][1]))
    if any(created and _is_generative(t) for created, t in types):
        found["generated_by_ai"] = True  # the active manifest's c2pa.created action says so
    if any(not created and _is_generative(t) for created, t in types):
        found["edited_with_ai"] = True  # another action (c2pa.edited, c2pa.placed...) used a generative tool
    return found


def _is_generative(uri: str) -> bool:
    return uri.rstrip("/").rsplit("/", 1)[-1] in GENERATIVE_SOURCE_TYPES


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _claim_generator(manifest: dict[str, Any]) -> str:
    if isinstance(manifest.get("claim_generator"), str):  # claim v1
        return _one_line(manifest["claim_generator"])
    info = manifest.get("claim_generator_info")  # claim v2: [{"name": ..., "version": ...}]
    first = _as_dict(info[0]) if isinstance(info, list) and info else {}
    parts = [first.get("name"), first.get("version")]
    return _one_line(" ".join(str(p) for p in parts if isinstance(p, str | int | float) and str(p)))


def _c2pa_source_types(manifest: dict[str, Any]) -> list[tuple[bool, str]]:
    """(is the c2pa.created action, digitalSourceType) of the c2pa.actions assertions' actions: created first."""
    assertions = manifest.get("assertions")
    found: list[tuple[bool, str]] = []
    for assertion in assertions[:100] if isinstance(assertions, list) else []:
        assertion = _as_dict(assertion)
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        actions = _as_dict(assertion.get("data")).get("actions")
        for action in actions[:100] if isinstance(actions, list) else []:
            action = _as_dict(action)
            if isinstance(action.get("digitalSourceType"), str):
                found.append((action.get("action") == "c2pa.created", action["digitalSourceType"]))
    found.sort(key=lambda item: not item[0])  # stable: created first, then in manifest order
    return found


# --------------------------------------------------------------------------------------- JPEG quality


def _read_jpeg_quality(data: bytes, image: Image.Image | None) -> int | None:
    """The IJG quality factor whose luminance table is nearest (L1) the file's first quantization table."""
    if image is None or image.format not in ("JPEG", "MPO"):
        return None
    tables = getattr(image, "quantization", None)
    if not isinstance(tables, dict) or not tables:
        return None
    table = np.asarray(list(tables.get(0, tables[min(tables)]))[:65], dtype=np.int64)
    if table.shape != (64,):
        return None
    return int(np.abs(IJG_TABLES - table[None, :]).sum(axis=1).argmin()) + 1


READERS: tuple[tuple[str, Callable[[bytes, Image.Image | None], Any]], ...] = (
    ("exif", _read_exif),
    ("png_text", _read_text),
    ("xmp", _read_xmp),
    ("c2pa", _read_c2pa),
    ("jpeg_quality", _read_jpeg_quality),
)


# --------------------------------------------------------------------------------------------- notes


def _notes(fields: dict[str, Any], fmt: str | None) -> str:
    """One short sentence: generative signals first, then provenance, camera and file facts."""
    generative: list[str] = []
    other: list[str] = []
    text, exif = fields.get("png_text", {}), fields.get("exif", {})
    xmp, credentials = fields.get("xmp", {}), fields.get("c2pa", {})
    if text.get("generation_parameters"):
        generative.append(_generation_note(text.get("generator"), TEXT_PLACES.get(fmt or "", "embedded text")))
    if exif.get("generation_parameters"):
        generative.append(_generation_note(exif.get("generator"), "EXIF UserComment"))
    if credentials.get("present"):
        ai = credentials.get("digital_source_type_name") in GENERATIVE_SOURCE_TYPES or credentials.get("edited_with_ai")
        (generative if ai else other).append(_c2pa_note(credentials))
    elif credentials.get("error"):
        other.append("C2PA data unreadable")
    if name := xmp.get("digital_source_type_name"):
        (generative if name in GENERATIVE_SOURCE_TYPES else other).append(f"XMP DigitalSourceType: {name}")
    if found := fields.get("decoder_warnings"):
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        first = found[0] if len(found[0]) <= 100 else found[0][:99].rstrip() + "…"
        other.append(f"decoder warning: {first}{more}")
    if camera := _camera(exif.get("make", ""), exif.get("model", "")):
        other.append(f"Camera: {camera}")
    if exif.get("date_taken"):
        other.append(f"taken {exif['date_taken']}")
    elif exif.get("date_modified"):  # IFD0 DateTime: an editor rewrites it, a camera's is its capture time
        other.append(f"file written {exif['date_modified']}")
    if exif.get("gps"):
        other.append("GPS present")
    software = exif.get("software") or xmp.get("creator_tool") or _get_ci(text, "software")
    if software:
        other.append(f"Software: {_one_line(software)[:60]}")
    if fields.get("jpeg_quality"):
        other.append(f"JPEG quality ≈ {fields['jpeg_quality']}")
    return _join(generative + other, MAX_NOTES)


def _generation_note(generator: str | None, place: str) -> str:
    what = "Stable Diffusion parameters" if generator in SD_FRONT_ENDS else "Generation parameters"
    return f"{what} in {place}" + (f" ({generator})" if generator else "")


def _c2pa_note(credentials: dict[str, Any]) -> str:
    details = [credentials["validation_state"].lower()] if credentials.get("validation_state") else []
    if credentials.get("digital_source_type_name"):
        details.append(credentials["digital_source_type_name"])
    if credentials.get("edited_with_ai"):
        details.append("edited with an AI tool")
    note = "C2PA manifest" + (f" ({'; '.join(details)})" if details else "")
    if credentials.get("claim_generator"):
        note += f", generator: {credentials['claim_generator'][:60]}"
    return note


def _camera(make: str, model: str) -> str:
    """'Canon EOS 5D' rather than 'Canon Canon EOS 5D': most models repeat the make's first word."""
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(part for part in (make, model) if part)


def _get_ci(mapping: dict[str, Any], key: str) -> Any:
    return next((value for name, value in mapping.items() if name.lower() == key), None)


def _join(parts: list[str], limit: int) -> str:
    """Parts joined by '; ', dropping whole trailing parts past limit (the first is cut if it alone is)."""
    if parts and len(parts[0]) > limit:
        return parts[0][: limit - 1] + "…"
    kept: list[str] = []
    for part in parts:
        if len("; ".join(kept + [part])) > limit:
            break
        kept.append(part)
    return "; ".join(kept)
