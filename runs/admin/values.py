"""How the run pages show JSON values: a collapsible tree, with documents (base64) as "PDF, 37 KB — download".

A document is a base64 string (bare, as the document extractor's `pdf_base64`, or a data URL); its kind comes
from the decoded bytes' first bytes (or the data URL's media type), its size is that of the decoded bytes. The
tree is nested <details> rendered by admin/runs/includes/json_tree.html from a flat list of nodes built here;
long texts are cut, with the whole text a click (or a download) away. Places in a value are JSON pointers
(RFC 6901: "/document/pdf_base64"), which is how the download view and the start forms name them.

Everything here could move to the admin kit if another app shows JSON of the same kind.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

# A bare base64 string shorter than this is shown as text: ids, hashes and tokens look like base64 too.
DOCUMENT_MIN_CHARS = 256
# Under a key that says it holds base64 ("pdf_base64", "content_b64"), any length counts.
BASE64_KEY = re.compile(r"base64|b64", re.IGNORECASE)
BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64,", re.IGNORECASE)
# Base64 characters decoded to tell the kind: 1,024 bytes, where a PDF's header may start anywhere.
SNIFF_CHARS = 1368

# (first bytes, label, media type, file extension), checked in order.
SIGNATURES = (
    (b"%PDF-", "PDF", "application/pdf", ".pdf"),
    (b"\x89PNG\r\n\x1a\n", "PNG image", "image/png", ".png"),
    (b"\xff\xd8\xff", "JPEG image", "image/jpeg", ".jpg"),
    (b"GIF87a", "GIF image", "image/gif", ".gif"),
    (b"GIF89a", "GIF image", "image/gif", ".gif"),
    (b"II*\x00", "TIFF image", "image/tiff", ".tif"),
    (b"MM\x00*", "TIFF image", "image/tiff", ".tif"),
    (b"PK\x03\x04", "ZIP file (or Office document)", "application/zip", ".zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Office document", "application/octet-stream", ".doc"),
    (b"\x1f\x8b", "GZIP file", "application/gzip", ".gz"),
    (b"{\\rtf", "RTF document", "application/rtf", ".rtf"),
)
MEDIA_TYPE_LABELS = {
    "application/pdf": ("PDF", ".pdf"),
    "image/png": ("PNG image", ".png"),
    "image/jpeg": ("JPEG image", ".jpg"),
    "image/gif": ("GIF image", ".gif"),
    "image/webp": ("WebP image", ".webp"),
    "text/plain": ("Text", ".txt"),
    "text/csv": ("CSV file", ".csv"),
    "application/json": ("JSON file", ".json"),
}

# The tree: texts longer than this are cut; up to TEXT_INLINE_MAX_CHARS the whole text opens in place, beyond
# it is a download. A value with more nodes than TREE_MAX_NODES shows its first ones and a download.
TEXT_PREVIEW_CHARS = 160
TEXT_INLINE_MAX_CHARS = 20_000
TREE_MAX_NODES = 1500
TREE_MAX_DEPTH = 40
# Every branch starts open in a tree this small; in a larger one only the top level and short lists do.
TREE_ALL_OPEN_NODES = 80
TREE_OPEN_ITEMS = 20


@dataclass(frozen=True)
class Document:
    label: str  # "PDF"
    media_type: str
    extension: str
    size: int  # bytes, decoded
    payload: str  # the base64 text, without a data URL's header or whitespace

    @property
    def description(self) -> str:
        """ "PDF, 37 KB" """
        return f"{self.label}, {file_size(self.size)}"

    def content(self) -> bytes:
        return base64.b64decode(self.payload)


def file_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes" if size != 1 else "1 byte"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _sniff(head: bytes) -> tuple[str, str, str] | None:
    for magic, label, media_type, extension in SIGNATURES:
        if head.startswith(magic):
            return label, media_type, extension
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP image", "image/webp", ".webp"
    if b"%PDF-" in head:  # the PDF specification lets the header start anywhere in the first 1024 bytes
        return "PDF", "application/pdf", ".pdf"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def as_document(value, *, key: str | None = None) -> Document | None:
    """The document a JSON string holds (base64, or a base64 data URL), or None if it is ordinary text."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    declared = None
    match = DATA_URL.match(value)
    if match:
        declared = (match.group("type") or "application/octet-stream").lower()
        payload = value[match.end() :]
    elif len(value) >= DOCUMENT_MIN_CHARS or (key is not None and BASE64_KEY.search(key)):
        payload = value
    else:
        return None
    if "\n" in payload:  # base64 wrapped every 76 characters; a space is not base64
        payload = payload.replace("\r\n", "").replace("\n", "")
    if len(payload) % 4 or not BASE64_TEXT.fullmatch(payload):
        return None
    try:
        head = base64.b64decode(payload[:SNIFF_CHARS], validate=True)
    except (binascii.Error, ValueError):
        return None
    size = len(payload) // 4 * 3 - payload[-2:].count("=")
    sniffed = _sniff(head)
    if sniffed is None and declared in MEDIA_TYPE_LABELS:
        sniffed = (*MEDIA_TYPE_LABELS[declared][:1], declared, MEDIA_TYPE_LABELS[declared][1])
    if sniffed is None:
        # A declared type we do not know (text/html, say) is not repeated: the download stays a plain file.
        text = _looks_like_text(head)
        sniffed = ("Text", "text/plain", ".txt") if text else ("File", "application/octet-stream", ".bin")
    label, media_type, extension = sniffed
    return Document(label=label, media_type=media_type, extension=extension, size=size, payload=payload)


# --- places in a value (JSON pointers) ---------------------------------------------------------------


def pointer(parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _parts(at: str) -> list[str]:
    if at == "":
        return []
    if not at.startswith("/"):
        raise KeyError(at)
    return [p.replace("~1", "/").replace("~0", "~") for p in at[1:].split("/")]


def _step(container, part: str):
    if isinstance(container, dict):
        return container[part]
    if isinstance(container, list) and part.isdigit() and int(part) < len(container):
        return container[int(part)]
    raise KeyError(part)


def value_at(value, at: str):
    """The part of `value` at the JSON pointer `at`; KeyError if there is none."""
    for part in _parts(at):
        value = _step(value, part)
    return value


def parent_at(value, at: str):
    """The object or list holding the part at `at` (None for the whole value)."""
    parts = _parts(at)
    return value_at(value, pointer(parts[:-1])) if parts else None


def put_at(value: dict, at: str, new) -> None:
    """Put `new` at `at` in `value`, making the objects on the way that are missing; KeyError if a list or
    something else than an object is in the way."""
    parts = _parts(at)
    if not parts:
        raise KeyError(at)
    container = value
    for part in parts[:-1]:
        container = container.setdefault(part, {}) if isinstance(container, dict) else _step(container, part)
    last = parts[-1]
    if isinstance(container, dict):
        container[last] = new
    elif isinstance(container, list) and last.isdigit() and int(last) < len(container):
        container[int(last)] = new
    else:
        raise KeyError(last)


def documents_in(value, _parts_so_far=()) -> list[tuple[str, Document]]:
    """Every document in `value`, with its place, in document order."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        parts = (*_parts_so_far, key)
        if isinstance(item, dict | list):
            found += documents_in(item, parts)
            continue
        document = as_document(item, key=str(key))
        if document is not None:
            found.append((pointer(parts), document))
    return found


def without_documents(value: dict) -> tuple[dict, list[tuple[str, Document]]]:
    """A copy of `value` without its documents (an object's key is left out, a list's item becomes null),
    and the documents taken out, with their places."""
    found = documents_in(value)
    if not found:
        return value, []
    rest = copy.deepcopy(value)
    for at, _ in reversed(found):
        parent, last = parent_at(rest, at), _parts(at)[-1]
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent[int(last)] = None
    return rest, found


def place_label(at: str) -> str:
    """ "document → pdf_base64" for "/document/pdf_base64": a place as people read it."""
    return " → ".join(_parts(at)) or "the whole input"


# --- the tree ----------------------------------------------------------------------------------------


def value_url(base: str, *, of: str, at: str = "") -> str:
    """The download view's address of the value at `at` in `of` (see RunAdmin.value_view)."""
    return f"{base}?{urlencode({'of': of, 'at': at})}"


def _summary(value) -> str:
    count = len(value)
    if isinstance(value, dict):
        return f"{count} field{'s' if count != 1 else ''}"
    return f"{count} item{'s' if count != 1 else ''}"


def tree_nodes(value, *, url: str | None = None, of: str = "") -> tuple[list[dict], bool]:
    """The nodes admin/runs/includes/json_tree.html draws for `value` (an "open" and a "close" node around each
    object or list but the whole value, a "leaf" or "document" node for everything else), and whether the
    tree was cut at TREE_MAX_NODES. `url` (the download view) links documents and long texts."""
    nodes: list[dict] = []
    cut = False

    def link(parts) -> str | None:
        return value_url(url, of=of, at=pointer(parts)) if url else None

    def walk(item, parts: tuple, depth: int) -> None:
        nonlocal cut
        if len(nodes) >= TREE_MAX_NODES:
            cut = True
            return
        key = parts[-1] if parts else None
        label = {"key": key, "index": isinstance(key, int)}
        if isinstance(item, dict | list) and item:
            if depth >= TREE_MAX_DEPTH:
                nodes.append({**label, "kind": "leaf", "type": "meta", "text": "(nested too deep to show here)"})
                return
            if parts:
                nodes.append({**label, "kind": "open", "summary": _summary(item), "depth": depth, "items": len(item)})
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for child_key, child in children:
                walk(child, (*parts, child_key), depth + 1)
            if parts:
                nodes.append({"kind": "close"})
            return
        document = as_document(item, key=str(key) if key is not None else None)
        if document is not None:
            nodes.append({**label, "kind": "document", "text": document.description, "url": link(parts)})
        elif isinstance(item, str):
            node = {**label, "kind": "leaf", "type": "str", "text": item}
            if len(item) > TEXT_PREVIEW_CHARS:
                node["text"] = item[:TEXT_PREVIEW_CHARS].rstrip() + "…"
                node["length"] = f"{len(item):,}"
                node["full"] = item if len(item) <= TEXT_INLINE_MAX_CHARS else None
                node["url"] = link(parts)
            nodes.append(node)
        elif isinstance(item, bool) or item is None:
            nodes.append({**label, "kind": "leaf", "type": "lit", "text": json.dumps(item)})
        elif isinstance(item, int | float):
            nodes.append({**label, "kind": "leaf", "type": "num", "text": json.dumps(item)})
        else:  # an empty object or list
            empty = "no fields" if isinstance(item, dict) else "no items"
            nodes.append({**label, "kind": "leaf", "type": "meta", "text": f"(empty: {empty})"})

    walk(value, (), 0)
    all_open = len(nodes) <= TREE_ALL_OPEN_NODES
    for node in nodes:
        if node["kind"] == "open":
            node["expanded"] = all_open or (node["depth"] == 1 and node["items"] <= TREE_OPEN_ITEMS)
    return nodes, cut


def json_tree(value, *, url: str | None = None, of: str = "", empty: str = "—") -> SafeString | str:
    """`value` as a collapsible tree; `url` is the download view of the run (None: no download links)."""
    if value is None:
        return empty
    nodes, cut = tree_nodes(value, url=url, of=of)
    context = {
        "nodes": nodes,
        "cut": cut,
        "download": value_url(url, of=of) if url else None,
        "max_nodes": f"{TREE_MAX_NODES:,}",
    }
    return render_to_string("admin/runs/includes/json_tree.html", context)
