"""The one YAML reader for deployment intents, wherever they come from (a file given to
``promoter render``, a ``modeldeployment.yaml`` logged with a model).

An intent is written by a model owner, so it is untrusted: a few hundred bytes of nested
anchors and aliases expand to gigabytes ("billion laughs"), and a multi-megabyte document with
hundreds of thousands of keys keeps a worker busy for minutes. So, before anything is built:
the text is capped at ``MAX_INTENT_BYTES``, anchors and aliases are refused (an intent has no
use for them), and the parser's event stream is cut off after ``MAX_INTENT_NODES`` nodes. A
hostile intent costs milliseconds and ends as a named user error.

Scalars are resolved by the YAML 1.2 core schema only (promoter.yaml_read), as the manifests
rendered from the intent are read back: a plain ``._`` or ``+_`` is the string it looks like,
not a number ruamel fails to build, and whatever loading still cannot build (an explicitly
tagged ``!!float x``, an int longer than Python converts) is the same user error as a syntax
error. A logged ``modeldeployment.yaml`` is then tagged invalid instead of a job failing as
unexpected.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

from promoter.errors import UserError
from promoter.yaml_read import READ_ERRORS, core_schema_yaml, one_line

MAX_INTENT_BYTES = 64 * 1024
MAX_INTENT_NODES = 4000
MAX_INTENT_DEPTH = 16   # the deepest field of a ModelDeployment is 5 levels down


def load_intent_yaml(text: str | bytes, *, origin: str) -> Any:
    """The parsed document; UserError for oversize, anchors, aliases, too many nodes or bad
    YAML. The caller checks that it is a ModelDeployment (core.intent.check_document)."""
    size = len(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    if size > MAX_INTENT_BYTES:
        raise UserError(f"{origin} is {size} bytes; an intent may be at most "
                        f"{MAX_INTENT_BYTES} bytes", hint="an intent needs a few dozen lines")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{origin} is not UTF-8 text: {exc.reason}") from None
    # The YAML scanner slows down on deeply nested flow collections before the event check
    # below can stop it; no intent needs hundreds of brackets, so count them first (cheap).
    if text.count("[") + text.count("{") > MAX_INTENT_NODES // 8:
        raise UserError(f"{origin} has too many flow collections ([...] or {{...}})",
                        hint="an intent needs a few dozen fields")
    try:
        _check_events(text, origin)
        return core_schema_yaml().load(text)
    except READ_ERRORS as exc:
        raise UserError(f"{origin} is not valid YAML: {one_line(exc)}",
                        hint="an intent file is a YAML ModelDeployment; see examples/") from None


def _check_events(text: str, origin: str) -> None:
    nodes = depth = 0
    for event in YAML(typ="safe", pure=True).parse(text):
        if isinstance(event, CollectionEndEvent):
            depth -= 1
        elif isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_INTENT_DEPTH:
                raise UserError(f"{origin} nests deeper than {MAX_INTENT_DEPTH} levels",
                                hint="an intent is a few levels of mappings")
        if isinstance(event, AliasEvent) or (
                isinstance(event, NodeEvent | CollectionStartEvent) and event.anchor):
            raise UserError(f"{origin} uses YAML anchors or aliases, which an intent may not",
                            hint="write each value out where it is used")
        if isinstance(event, NodeEvent):
            nodes += 1
            if nodes > MAX_INTENT_NODES:
                raise UserError(f"{origin} has more than {MAX_INTENT_NODES} YAML nodes",
                                hint="an intent needs a few dozen fields")
