"""An accepted KEDA ScaledObject in an overlay, and what the overlay needs around it. Pure.

`promoter forecast --propose` adds ``scaledobject.yaml`` to an overlay. Once that merge request
is merged, the overlay's scaling belongs to KEDA: the next promotion re-renders the overlay, so
the renderer must carry the ScaledObject forward and keep handing the workload to KEDA, or a
new model version would silently drop the accepted schedule and bring promoter's HPA back.

Both writers (the forecast and the renderer) take the files below from here, so a promotion
after a merged scale MR renders exactly the overlay that MR left, apart from the version.
"""

from __future__ import annotations

import re

from promoter.core.yamltext import scalar
from promoter.errors import UserError

SCALED_OBJECT_FILE = "scaledobject.yaml"
HPA_PATCH_FILE = "patch-horizontalpodautoscaler.yaml"
HPA_DELETE_FILE = "patch-delete-horizontalpodautoscaler.yaml"
KSERVE_EXTERNAL_FILE = "patch-inferenceservice-autoscaler.yaml"
EXTERNAL_AUTOSCALER = {"serving.kserve.io/autoscalerClass": "external"}

# One field per line, as promoter's forecast writes it (and as a reviewer would edit it),
# perhaps with a trailing comment, which is kept. YAML starts a comment only after a blank:
# in "40# x" the "#" belongs to the value, which these patterns then do not match.
_COMMENT = r"(?P<comment>[ \t]+#.*?)?[ \t]*$"
_BOUND = re.compile(
    r"^(?P<lead>[ \t]*(?P<key>minReplicaCount|maxReplicaCount):[ \t]*)(?P<n>\d+)" + _COMMENT,
    re.MULTILINE)
_DESIRED = re.compile(
    r"^(?P<lead>[ \t]*desiredReplicas:[ \t]*)(?P<q>['\"]?)(?P<n>\d+)(?P=q)" + _COMMENT,
    re.MULTILINE)
_BOUND_FIELDS = {"minReplicaCount": _BOUND, "maxReplicaCount": _BOUND, "desiredReplicas": _DESIRED}
# KEDA scales the target to idleReplicaCount whenever no trigger is active (it must be below
# minReplicaCount, and KEDA supports only 0): scale-to-zero, which no intent allows. The line
# is dropped, whole (with the newline), so the workload never goes below minReplicaCount.
IDLE_FIELD = "idleReplicaCount"
_IDLE = re.compile(
    r"^[ \t]*idleReplicaCount:[ \t]*(?P<q>['\"]?)\d+(?P=q)" + _COMMENT + r"\n?", re.MULTILINE)


_SPEC_BLOCK = re.compile(r"^spec:[ \t]*(?:#.*)?$")
_TARGET_BLOCK = re.compile(r"^(?P<indent>[ \t]*)scaleTargetRef:[ \t]*$")
_TARGET_FLOW = re.compile(
    r"^(?P<lead>[ \t]*scaleTargetRef:[ \t]*\{[ \t]*name:[ \t]*)(?P<name>[^,}\s]+)", re.MULTILINE)
_NAME = re.compile(r"^(?P<lead>[ \t]*name:[ \t]*)\S.*?[ \t]*$")


def scale_target(platform: str, name: str) -> str:
    """The workload KEDA scales: promoter's Deployment, or the Deployment KServe makes for
    the InferenceService's predictor (``<name>-predictor``)."""
    return name if platform == "kubernetes" else f"{name}-predictor"


def handover_patches(platform: str, name: str) -> dict[str, str]:
    """The overlay patches that hand ``name``'s replica count to KEDA, by file name.

    KEDA creates and owns an HPA for its scale target, so on the ``kubernetes`` platform
    promoter's own HPA is deleted; on KServe the predictor is told an external autoscaler
    scales it (serving.kserve.io/autoscalerClass: external), so KServe makes no HPA.
    """
    if platform == "kubernetes":
        return {HPA_DELETE_FILE: (
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"
            f"metadata:\n  name: {scalar(name)}\n$patch: delete\n")}
    annotations = "".join(f"    {scalar(k)}: {scalar(v)}\n" for k, v in EXTERNAL_AUTOSCALER.items())
    return {KSERVE_EXTERNAL_FILE: (
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
        f"metadata:\n  name: {scalar(name)}\n  annotations:\n{annotations}")}


def patches_after_handover(patches: list[str], platform: str, name: str) -> list[str]:
    """The overlay's patch list once KEDA scales: promoter's HPA patch gives way to the
    hand-over patch (an HPA that is deleted cannot also be patched)."""
    kept = [p for p in patches if p not in (HPA_PATCH_FILE, HPA_DELETE_FILE, KSERVE_EXTERNAL_FILE)]
    return [*kept, *handover_patches(platform, name)]


def bounded(scaled_object: str, min_replicas: int, max_replicas: int) -> str:
    """The accepted ScaledObject with its replica bounds set to the intent's current ones.

    The schedule was accepted for the intent of its day; a later version may lower
    ``maxReplicas`` (or the team's quota may have shrunk it), and a pre-warm window must never
    ask for more than the intent allows. Text in, text out: only the three numeric fields are
    touched (their comments kept), so a reviewer's edits elsewhere in the file survive. A
    missing ``maxReplicaCount`` is added (KEDA's default is 100, not the intent's bound), and
    so is a missing ``minReplicaCount`` (KEDA's default is 0: scale-to-zero outside the cron
    windows, which no intent allows). An ``idleReplicaCount`` line is dropped: KEDA would
    scale to it (below minReplicaCount) whenever no trigger is active.
    """
    def bound(match: re.Match[str]) -> str:
        value = min_replicas if match["key"] == "minReplicaCount" else max_replicas
        return f"{match['lead']}{value}{match['comment'] or ''}"

    def desired(match: re.Match[str]) -> str:
        value = max(min_replicas, min(max_replicas, int(match["n"])))
        return f"{match['lead']}{match['q']}{value}{match['q']}{match['comment'] or ''}"

    # The field patterns end at "\n": a "\r" before it would leave a bound unrewritten.
    text = scaled_object.replace("\r\n", "\n")
    _refuse_several_documents(text)
    _refuse_unremovable_idle(text)
    _refuse_unboundable_fields(text)
    text = _with_bound(text, "maxReplicaCount", max_replicas, "KEDA would scale to 100 replicas")
    text = _with_bound(text, "minReplicaCount", min_replicas,
                       "KEDA would scale to zero outside the cron windows")
    # Dropped after the bounds are added: a `spec:` holding only the idle line stays a block.
    text = _IDLE.sub("", text)
    return _DESIRED.sub(desired, _BOUND.sub(bound, text))


def _refuse_unboundable_fields(text: str) -> None:
    """A bound named in a form its pattern cannot rewrite (quoted where KEDA wants a number,
    in a flow mapping, followed by more than a comment) would be carried forward as the old
    intent left it: a minReplicaCount or a pre-warm window above today's maxReplicas, which
    KEDA rejects or the team quota does not allow. Refused, for each of the three alike."""
    for line in text.splitlines():
        for field, pattern in _BOUND_FIELDS.items():
            if _names(field, line) and pattern.fullmatch(line) is None:
                raise UserError(
                    f"the overlay's {SCALED_OBJECT_FILE} names {field} in a form promoter "
                    "cannot bound to the intent's minReplicas..maxReplicas",
                    hint=f"write it as one `{field}: <n>` line (a trailing comment may "
                         "follow), as `promoter forecast` does")


def _refuse_unremovable_idle(text: str) -> None:
    """An ``idleReplicaCount`` in a form ``_IDLE`` cannot drop whole (in a flow mapping, not a
    number) would be carried forward, and KEDA would scale the model to zero between trigger
    activity: refused, as a bound promoter cannot set is."""
    for line in text.splitlines():
        if _names(IDLE_FIELD, line) and _IDLE.fullmatch(line) is None:
            raise UserError(
                f"the overlay's {SCALED_OBJECT_FILE} names {IDLE_FIELD} in a form promoter "
                "cannot remove; KEDA would scale the model below the intent's minReplicas "
                "(to zero) whenever no trigger is active",
                hint=f"delete {IDLE_FIELD}: no intent allows scale-to-zero")


_DOCUMENT_START = re.compile(r"^---", re.MULTILINE)


def _refuse_several_documents(text: str) -> None:
    """A file of several YAML documents is refused: the bound would be set, or added, in
    whichever comes first, not necessarily the ScaledObject. (A leading ``---`` opens the one
    document.)"""
    body = text.lstrip()
    if _DOCUMENT_START.search(body[3:] if body.startswith("---") else body):
        raise UserError(f"the overlay's {SCALED_OBJECT_FILE} holds several YAML documents; "
                        "promoter bounds the ScaledObject only in a file of its own",
                        hint="move other objects (a TriggerAuthentication) to a file of "
                             "their own in the overlay")


def _with_bound(scaled_object: str, field: str, value: int, unbounded: str) -> str:
    """The ScaledObject with a ``field`` line ``_BOUND`` can set.

    Left out, KEDA falls back to its defaults (maxReplicaCount 100, minReplicaCount 0)
    whatever the intent says, so the bound is added under ``spec:`` (one named in a form
    ``_BOUND`` misses is refused before this); ``unbounded`` says what KEDA would do without
    it, should there be no ``spec:`` block to add it to."""
    if any(_names(field, line) for line in scaled_object.splitlines()):
        return scaled_object
    return _insert_under_spec(scaled_object, field, f"{field}: {value}", unbounded)


def _names(field: str, line: str) -> bool:
    # A comment may mention the field; only YAML that sets it matters.
    return field in line.split("#", 1)[0]


def _insert_under_spec(scaled_object: str, field: str, field_line: str,
                       unbounded: str) -> str:
    """``field_line`` as the first field of the top-level block ``spec:`` mapping (indented
    like the fields already there); refused when there is no such block to put it in."""
    lines = scaled_object.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if _SPEC_BLOCK.match(line.rstrip("\n")) is None:
            continue
        indent = _child_indent(lines[index + 1:])
        if indent:
            return "".join([*lines[:index + 1], f"{indent}{field_line}\n",
                            *lines[index + 1:]])
        break
    raise UserError(f"the overlay's {SCALED_OBJECT_FILE} has no {field}, and no `spec:` "
                    f"block promoter can add it to ({unbounded})",
                    hint=f"add `{field}: <n>` under `spec:`, as `promoter forecast` does")


def _child_indent(lines: list[str]) -> str:
    """The indentation of the first field below a block key ("" when the block is empty)."""
    for line in lines:
        text = line.rstrip("\n")
        if text.strip() and not text.lstrip().startswith("#"):
            return text[:len(text) - len(text.lstrip())]
    return ""


def retargeted(scaled_object: str, target: str) -> str:
    """The accepted ScaledObject scaling ``target`` (see ``scale_target``).

    The schedule may have been accepted while the model ran on the other platform: after a
    switch between kubernetes and kserve the old target (``name`` vs ``name-predictor``) no
    longer exists, and KEDA would scale nothing. Only ``scaleTargetRef.name`` is touched."""
    flow, count = _TARGET_FLOW.subn(lambda m: f"{m['lead']}{scalar(target)}", scaled_object)
    if count:
        return flow
    lines = scaled_object.splitlines(keepends=True)
    for index, line in enumerate(lines):
        block = _TARGET_BLOCK.match(line.rstrip("\n"))
        if block is None:
            continue
        depth = len(block["indent"])
        for inner in range(index + 1, len(lines)):
            text = lines[inner].rstrip("\n")
            if text.strip() and len(text) - len(text.lstrip()) <= depth:
                break   # the block ended without a name
            named = _NAME.match(text)
            if named:
                ending = lines[inner][len(text):]
                lines[inner] = f"{named['lead']}{scalar(target)}{ending}"
                return "".join(lines)
    raise UserError(f"the overlay's {SCALED_OBJECT_FILE} has no spec.scaleTargetRef.name promoter "
                    "can set", hint="write it as `scaleTargetRef:` followed by an indented "
                                    "`name: <workload>` line, as `promoter forecast` does")
