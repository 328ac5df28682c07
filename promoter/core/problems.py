"""Turn a pydantic ValidationError into one message listing every wrong dotted path."""

from __future__ import annotations

from pydantic import ValidationError

from promoter.core.masking import masked_value

# pydantic's own wording for the errors people actually hit, made to say what to do.
_FRIENDLY = {
    "extra_forbidden": "is not a known field (check the spelling)",
    "missing": "is required",
}


def dotted(location: tuple[str | int, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


# A hostile document can hold thousands of wrong keys; the first ones say enough, and a bounded
# list keeps the error (which also becomes an MLflow tag and a job reason) small.
MAX_PROBLEMS = 20


def describe(exc: ValidationError, *, prefix: str = "", limit: int = MAX_PROBLEMS) -> list[str]:
    """One line per problem: ``spec.resources.gpu.count: must be <= 16 (got 10000)``."""
    lines: list[str] = []
    errors = exc.errors(include_url=False)
    for error in errors:
        if len(lines) >= limit:
            lines.append(f"… and {len(errors) - limit} more problem(s)")
            break
        location = tuple(part for part in error["loc"] if not _is_internal(part))
        path = dotted(location)
        if prefix:
            path = f"{prefix}.{path}" if location else prefix
        message = _FRIENDLY.get(error["type"], error["msg"])
        message = message.removeprefix("Value error, ")
        if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            value = error["input"]
            if isinstance(value, str):  # a mistyped URL or secret-named field may hold one
                value = masked_value(next((str(part) for part in reversed(location)
                                           if isinstance(part, str)), ""), value)
            shown = repr(value)
            if len(shown) <= 60 and not isinstance(error["input"], dict | list):
                message += f" (got {shown})"
        lines.append(f"{path}: {message}")
    return sorted(set(lines), key=lines.index)


def _is_internal(part: str | int) -> bool:
    # pydantic adds the tag of a union member or a function validator's name to locations.
    return isinstance(part, str) and (part.startswith("function-") or part in ("str", "int"))
