"""Raw registry webhook payloads → ``PromotionEvent`` (pure: no I/O, no clock, no settings read).

Two sources arrive here, already signature-checked and JSON-decoded:

* MLflow OSS 3.x: ``{"entity", "action", "timestamp": ISO-8601, "data": {...}}``. An alias
  created on a version promotes it into every environment triggered by that alias; an alias
  deleted decommissions (the payload names no version: the job resolves it later).
* Databricks workspace registry: flat ``{"event", "event_timestamp" (ms), "model_name",
  "version", "to_stage", "from_stage", ...}``. A transition into a stage promotes into the
  environments triggered by that stage; leaving a stage (including to Archived) decommissions
  there.

Everything else becomes an ``ignore`` event carrying the reason, so it can be logged. Payloads
that do not have the documented shape raise ``PayloadError`` (the service answers 400).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from promoter.core.naming import DISPLAY_CONTROLS
from promoter.errors import UserError

Action = Literal["promote", "decommission", "ignore"]
Source = Literal["mlflow", "databricks", "reconcile"]
MAX_NAME = 256
MAX_VERSION = 10
MAX_JSON_DEPTH = 64  # registry and GitLab payloads nest a handful of levels
JSON_INT_RANGE = (-(2**63), 2**63 - 1)  # what SQLite (and every consumer) can hold
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class PayloadError(UserError):
    """The body is JSON but not a registry event of the documented shape."""

    kind = "invalid_payload"


def load_json(body: bytes) -> Any:
    """A webhook body (every source: MLflow, Databricks, GitLab) → its JSON value.

    Stricter than ``json.loads`` so that nothing downstream can fail on what a sender put in:
    the body must be UTF-8; no string (key or value) may hold a lone surrogate (``"\\ud800"``
    decodes to text that UTF-8 cannot encode, and SQLite, logs and git would fail on it);
    nesting is at most ``MAX_JSON_DEPTH`` deep; integers fit in 64 bits; no NaN or infinity.
    Anything else raises ``PayloadError`` (HTTP 400).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise PayloadError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise PayloadError(f"the body is not valid JSON: {str(exc)[:120]}") from None
    _check_json(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_json(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise PayloadError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            _check_text(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not JSON_INT_RANGE[0] <= item <= JSON_INT_RANGE[1]:
                raise PayloadError("an integer in the JSON does not fit in 64 bits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise PayloadError("a number in the JSON is too large")


def _check_text(text: str) -> None:
    found = _SURROGATE.search(text)
    if found:
        raise PayloadError(f"a string holds the lone surrogate \\u{ord(found.group()):04x}, "
                           "which is not valid Unicode text")


class TriggerLike(Protocol):
    """What the core needs of ``settings.environments[env].trigger``."""

    @property
    def alias(self) -> str | None: ...

    @property
    def stage(self) -> str | None: ...


Triggers = Mapping[str, TriggerLike]


@dataclass(frozen=True)
class PromotionEvent:
    action: Action
    source: Source
    reason: str
    model: str | None = None
    version: str | None = None  # None for decommissions whose version the job resolves
    env: str | None = None
    event_time: float | None = None  # seconds since the epoch, as the sender stated it
    trigger: str = ""  # the sender's event name, e.g. "model_version_alias.created"

    def describe(self) -> dict[str, Any]:
        return {"action": self.action, "source": self.source, "reason": self.reason,
                "model": self.model, "version": self.version, "env": self.env,
                "event_time": self.event_time, "trigger": self.trigger}


# ----------------------------------------------------------------------------- MLflow OSS

MLFLOW_IGNORED = {
    "model_version.created": "a new version is not a promotion; set an environment alias on it",
    "registered_model.created": "a new registered model is not a promotion",
    "model_version_tag.set": "tag changes do not promote; set the environment alias again",
    "model_version_tag.deleted": "tag changes do not promote; set the environment alias again",
}


def from_mlflow(payload: Any, triggers: Triggers) -> list[PromotionEvent]:
    """One MLflow OSS webhook body → one event per affected environment (or one ignore)."""
    body = _mapping(payload, "body")
    entity = _text(body, "entity", limit=64)
    action = _text(body, "action", limit=64)
    name = f"{entity}.{action}"
    when = _iso_time(body.get("timestamp"))
    data = _mapping(body.get("data"), "data")
    if entity.startswith("prompt"):
        return [_ignore("mlflow", name, "prompt events are not model promotions", when)]
    if name in MLFLOW_IGNORED:
        _text(data, "name", limit=MAX_NAME)  # still reject a malformed body
        return [_ignore("mlflow", name, MLFLOW_IGNORED[name], when, _text(data, "name"))]
    if name == "model_version_alias.created":
        model, alias = _text(data, "name", limit=MAX_NAME), _text(data, "alias", limit=MAX_NAME)
        version = _version(data.get("version"))
        return _for_envs("promote", "mlflow", name, model, version, when,
                         _envs_by_alias(triggers, alias), f"alias {alias!r} set to {version}",
                         f"alias {alias!r} triggers no environment")
    if name == "model_version_alias.deleted":
        model, alias = _text(data, "name", limit=MAX_NAME), _text(data, "alias", limit=MAX_NAME)
        return _for_envs("decommission", "mlflow", name, model, None, when,
                         _envs_by_alias(triggers, alias), f"alias {alias!r} deleted",
                         f"alias {alias!r} triggers no environment")
    if name == "registered_model.deleted":  # not sent by MLflow 3.17; handled if it appears
        model = _text(data, "name", limit=MAX_NAME)
        return _for_envs("decommission", "mlflow", name, model, None, when, sorted(triggers),
                         "registered model deleted", "no environments configured")
    return [_ignore("mlflow", name, f"event {name!r} does not affect deployments", when)]


# ----------------------------------------------------------------------------- Databricks

_DATABRICKS_STAGE_EVENTS = {
    "MODEL_VERSION_TRANSITIONED_STAGE": None,  # the stage is in the body's to_stage
    "MODEL_VERSION_TRANSITIONED_TO_STAGING": "Staging",
    "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION": "Production",
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED": "Archived",
}
_NO_STAGE = {"", "none"}


def from_databricks(payload: Any, triggers: Triggers) -> list[PromotionEvent]:
    """One Databricks registry webhook body → events for the stages it enters and leaves."""
    body = _mapping(payload, "body")
    event = _text(body, "event", limit=128)
    when = _millis_time(body.get("event_timestamp"))
    if event not in _DATABRICKS_STAGE_EVENTS:
        model = body.get("model_name") if isinstance(body.get("model_name"), str) else None
        why = ("a transition request is not a transition" if event.startswith("TRANSITION_REQ")
               else f"event {event!r} does not affect deployments")
        return [_ignore("databricks", event, why, when, model)]
    model = _text(body, "model_name", limit=MAX_NAME)
    version = _version(body.get("version"))
    named = _DATABRICKS_STAGE_EVENTS[event]
    if named is None and body.get("to_stage") is None:
        return [_ignore("databricks", event, "to_stage is missing", when, model)]
    # None: moved to stage "None", out of every stage (as archiving, but not archived).
    to_stage = named or _optional_stage(body, "to_stage")
    from_stage = _optional_stage(body, "from_stage")
    leaving = to_stage is None or to_stage.lower() == "archived"
    events: list[PromotionEvent] = []
    if to_stage is not None and not leaving:
        events += _for_envs("promote", "databricks", event, model, version, when,
                            _envs_by_stage(triggers, to_stage), f"version {version} → {to_stage}",
                            None)
    # from_stage "None" means it was in no stage; absent means unknown, so on leaving the
    # stages every stage-triggered environment is checked (the job resolves what each one
    # points at now).
    unknown_origin = "from_stage" not in body and leaving
    left = (_envs_by_stage(triggers, from_stage) if from_stage
            else _envs_by_stage(triggers, None) if unknown_origin else [])
    events += _for_envs("decommission", "databricks", event, model, version, when,
                        [env for env in left if not any(e.env == env for e in events)],
                        f"version {version} left {from_stage or 'its stage'} for "
                        f"{to_stage or 'None'}", None)
    return events or [_ignore("databricks", event,
                              f"stages {from_stage or 'None'} → {to_stage or 'None'} trigger "
                              "no environment", when, model)]


def dedupe_key_databricks(payload: Mapping[str, Any]) -> str:
    """Databricks sends no delivery id: a stable key from what identifies the transition."""
    parts = [payload.get(k) for k in ("event", "model_name", "version", "to_stage",
                                      "event_timestamp")]
    return "|".join("" if p is None else str(p) for p in parts)


# ----------------------------------------------------------------------------- helpers

def _envs_by_alias(triggers: Triggers, alias: str) -> list[str]:
    return sorted(env for env, trigger in triggers.items() if trigger.alias == alias)


def _envs_by_stage(triggers: Triggers, stage: str | None) -> list[str]:
    """Environments triggered by ``stage`` (case-insensitive); None → every stage-triggered one."""
    return sorted(env for env, trigger in triggers.items() if trigger.stage and (
        stage is None or trigger.stage.lower() == stage.lower()))


def _for_envs(action: Action, source: Source, trigger: str, model: str, version: str | None,
              when: float | None, envs: list[str], reason: str,
              none_reason: str | None) -> list[PromotionEvent]:
    if not envs:
        return [_ignore(source, trigger, none_reason, when, model)] if none_reason else []
    return [PromotionEvent(action=action, source=source, reason=reason, model=model,
                           version=version, env=env, event_time=when, trigger=trigger)
            for env in envs]


def _ignore(source: Source, trigger: str, reason: str, when: float | None,
            model: str | None = None) -> PromotionEvent:
    return PromotionEvent(action="ignore", source=source, reason=reason, model=model,
                          event_time=when, trigger=trigger)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where} must be a JSON object, got {_json_type(value)}")
    return value


def _text(body: Mapping[str, Any], key: str, *, limit: int = MAX_NAME) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"field {key!r} must be a non-empty string, got {_json_type(value)}")
    if len(value) > limit:
        raise PayloadError(f"field {key!r} is {len(value)} characters long; at most {limit}")
    if DISPLAY_CONTROLS.search(value):
        raise PayloadError(f"field {key!r} contains control or text-direction characters")
    return value


def _version(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() \
            or len(text) > MAX_VERSION or text.startswith("0"):
        raise PayloadError(f"field 'version' must be a positive integer, got {value!r:.40}")
    return text


def _optional_stage(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise PayloadError(f"field {key!r} must be a stage name, got {_json_type(value)}")
    return None if value.strip().lower() in _NO_STAGE else value.strip()


def _iso_time(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise PayloadError("field 'timestamp' must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(f"field 'timestamp' is not ISO-8601: {value!r:.40}") from None
    if moment.tzinfo is None:
        raise PayloadError("field 'timestamp' must carry a UTC offset")
    return moment.timestamp()


def _millis_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**15:
        raise PayloadError("field 'event_timestamp' must be Unix milliseconds")
    return value / 1000.0


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
