"""Pure translation of client JSON items into canonical event records, driven by the Avro schemas.

No clock, no I/O, stdlib only: the caller passes the schemas (plain dicts), `now` and the client.

Decisions of the wire contract (ARCHITECTURE.md §4) made here:
- A `long` accepts a JSON integer, or a float with an integral value (`3.0`, as JavaScript and many
  gateways print numbers); `3.5` is refused. Booleans are never numbers; NaN and infinities are
  refused. A `double` accepts any finite number.
- Timestamps (`timestamp-micros`) are RFC 3339 strings in UTC (`Z` or `+00:00`), with an optional
  fraction of up to 9 digits truncated to microseconds; they become epoch microseconds.
- A field is required when it has no default and is not a union with null; a field with a default
  may be left out (its default applies); `null` is allowed only for unions with null.
- Fields the schema does not have are refused (`unknown_field`), `recorded_at` included: ingest sets it.
- Every error of an item is reported, each as {field, rule, message} with a JSON path field.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

ENVELOPE_FIELDS = ("event_id", "occurred_at", "recorded_at", "source", "correlation_id")
TYPE_FIELD = "type"
MAX_EVENT_ID_LENGTH = 200
MAX_SOURCE_LENGTH = 200
MAX_CORRELATION_ID_LENGTH = 200
MAX_STRING_LENGTH = 1024  # default longest body string (MOM_INGEST_MAX_STRING_LENGTH)
OLDEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_RFC3339_UTC = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)\Z")
_MIDNIGHTS: dict[str, int] = {}  # "2026-11-02" -> its epoch micros: a batch's events share a few days
_FORMATS: dict[str, re.Pattern[str]] = {
    "equipment_id": re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*\Z"),
    # The IANA database's own naming rules; an exact list can be passed in (see Translator).
    "iana_time_zone": re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*\Z"),
}
_FORMAT_HINTS = {
    "equipment_id": "a dotted ISA-95 equipment id like acme.berlin.assembly.line1.press07",
    "iana_time_zone": "an IANA time zone name like Europe/Berlin",
}

Error = dict[str, str]  # {"field": JSON path, "rule": rule name, "message": explanation}
_INVALID = object()     # a checker's result when it reported an error
Checker = Callable[[Any, str, list[Error]], Any]


def _error(field: str, rule: str, message: str) -> Error:
    return {"field": field, "rule": rule, "message": message}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def to_micros(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND


def parse_timestamp(text: str) -> int | None:
    """Epoch microseconds of an RFC 3339 UTC timestamp, or None when the text is not one."""
    match = _RFC3339_UTC.match(text)
    if match is None:
        return None
    day, hour, minute, second, fraction = match.groups()
    midnight = _MIDNIGHTS.get(day)
    if midnight is None:
        try:
            midnight = to_micros(datetime(int(day[:4]), int(day[5:7]), int(day[8:10]), tzinfo=UTC))
        except ValueError:  # 2026-02-30, year 0
            return None
        if len(_MIDNIGHTS) < 100_000:
            _MIDNIGHTS[day] = midnight
    hours, minutes, seconds = int(hour), int(minute), int(second)
    if hours > 23 or minutes > 59 or seconds > 59:  # 24:00 and leap seconds are refused
        return None
    micros = midnight + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000
    if fraction:
        micros += int(fraction[:6].ljust(6, "0"))
    return micros


def _format_micros(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------
# Compiling schemas into checkers: each checker takes (value, path, errors) and returns the
# record value, or _INVALID after appending its errors.


def _is_timestamp(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-micros"


@dataclass(frozen=True)
class _Options:
    """What every checker of one Translator shares."""

    time_zones: frozenset[str] | None   # the exact IANA names accepted, else their syntax is checked
    max_string_length: int              # longest string a body field may hold, in characters


def _compile_type(avro_type: Any, attributes: Mapping[str, Any], named: dict[str, Checker],
                  options: _Options) -> Checker:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1 or len(avro_type) != 2:
            raise ValueError(f"unsupported union {avro_type!r}: only [null, T] unions are translated")
        inner = _compile_type(branches[0], attributes, named, options)

        def check_nullable(value: Any, path: str, errors: list[Error]) -> Any:
            return None if value is None else inner(value, path, errors)
        return check_nullable
    if _is_timestamp(avro_type):
        return _timestamp_checker()
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "array":
            return _array_checker(avro_type, attributes, named, options)
        if kind == "record":
            checker = _record_checker(avro_type.get("fields", ()), named, options)
            named[avro_type["name"]] = checker
            return checker
        if kind in ("string", "long", "int", "double", "float", "boolean"):
            return _compile_type(kind, attributes, named, options)
        raise ValueError(f"unsupported Avro type {avro_type!r}")
    if avro_type in ("string",):
        return _string_checker(attributes, options)
    if avro_type in ("long", "int"):
        return _long_checker(attributes)
    if avro_type in ("double", "float"):
        return _double_checker(attributes)
    if avro_type == "boolean":
        return _boolean_checker()
    if isinstance(avro_type, str) and avro_type.rsplit(".", 1)[-1] in named:
        return named[avro_type.rsplit(".", 1)[-1]]
    raise ValueError(f"unsupported Avro type {avro_type!r}")


NUL = "\x00"  # PostgreSQL's text cannot hold it, and no identifier or reason needs it


def _nul_error(path: str) -> Error:
    return _error(path, "noNul", f"{path} must not contain the NUL character (U+0000)")


def _string_checker(attributes: Mapping[str, Any], options: _Options) -> Checker:
    allowed = attributes.get("allowed")
    allowed_set = frozenset(allowed) if allowed else None
    format_name = attributes.get("format")
    pattern = _FORMATS.get(format_name) if format_name else None
    if format_name and pattern is None:
        raise ValueError(f"unknown format {format_name!r}")
    zones = options.time_zones if format_name == "iana_time_zone" else None
    max_length = options.max_string_length

    def check_string(value: Any, path: str, errors: list[Error]) -> Any:
        if type(value) is not str:
            errors.append(_error(path, "type", f"{path} must be a string, got {_describe(value)}"))
            return _INVALID
        if len(value) > max_length:
            errors.append(_error(path, "maxLength",
                                 f"{path} must be at most {max_length} characters, got {len(value)}"))
            return _INVALID
        if NUL in value:
            errors.append(_nul_error(path))
            return _INVALID
        if allowed_set is not None and value not in allowed_set:
            errors.append(_error(path, "allowed", f"{path} must be one of {', '.join(allowed)}, got {value!r}"))
            return _INVALID
        if pattern is not None and (pattern.match(value) is None or (zones and value not in zones)):
            errors.append(_error(path, "format", f"{path} must be {_FORMAT_HINTS[format_name]}, got {value!r}"))
            return _INVALID
        return value
    return check_string


def _bounds(attributes: Mapping[str, Any]) -> tuple[float | None, float | None]:
    return attributes.get("minimum"), attributes.get("exclusiveMinimum")


def _check_bounds(value: float, path: str, errors: list[Error],
                  minimum: float | None, exclusive_minimum: float | None) -> bool:
    if minimum is not None and value < minimum:
        errors.append(_error(path, "minimum", f"{path} must be at least {minimum}, got {value}"))
        return False
    if exclusive_minimum is not None and value <= exclusive_minimum:
        errors.append(_error(path, "exclusiveMinimum", f"{path} must be greater than {exclusive_minimum}, got {value}"))
        return False
    return True


def _long_checker(attributes: Mapping[str, Any]) -> Checker:
    minimum, exclusive_minimum = _bounds(attributes)

    def check_long(value: Any, path: str, errors: list[Error]) -> Any:
        kind = type(value)
        if kind is float and value.is_integer():  # 3.0 from a JavaScript client; is_integer() is False for nan/inf
            value = int(value)
        elif kind is not int:
            what = "a number with a fraction" if kind is float else _describe(value)
            errors.append(_error(path, "type", f"{path} must be an integer, got {what}"))
            return _INVALID
        if not _LONG_MIN <= value <= _LONG_MAX:
            errors.append(_error(path, "type", f"{path} must fit in a signed 64-bit integer, got {value}"))
            return _INVALID
        if not _check_bounds(value, path, errors, minimum, exclusive_minimum):
            return _INVALID
        return value
    return check_long


def _double_checker(attributes: Mapping[str, Any]) -> Checker:
    minimum, exclusive_minimum = _bounds(attributes)

    def check_double(value: Any, path: str, errors: list[Error]) -> Any:
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                errors.append(_error(path, "type", f"{path} is too large for a double"))
                return _INVALID
        elif kind is not float:
            errors.append(_error(path, "type", f"{path} must be a number, got {_describe(value)}"))
            return _INVALID
        if not math.isfinite(value):
            errors.append(_error(path, "type", f"{path} must be a finite number, got {value}"))
            return _INVALID
        if not _check_bounds(value, path, errors, minimum, exclusive_minimum):
            return _INVALID
        return value
    return check_double


def _boolean_checker() -> Checker:
    def check_boolean(value: Any, path: str, errors: list[Error]) -> Any:
        if type(value) is not bool:
            errors.append(_error(path, "type", f"{path} must be true or false, got {_describe(value)}"))
            return _INVALID
        return value
    return check_boolean


def _timestamp_checker() -> Checker:
    def check_timestamp(value: Any, path: str, errors: list[Error]) -> Any:
        if type(value) is not str:
            errors.append(_error(path, "type", f"{path} must be an RFC 3339 UTC timestamp string, got {_describe(value)}"))
            return _INVALID
        micros = parse_timestamp(value)
        if micros is None:
            errors.append(_error(path, "format",
                                 f"{path} must be an RFC 3339 UTC timestamp like 2026-11-02T06:00:00.000Z, got {value!r}"))
            return _INVALID
        return micros
    return check_timestamp


def _array_checker(avro_type: Mapping[str, Any], attributes: Mapping[str, Any], named: dict[str, Checker],
                   options: _Options) -> Checker:
    item_checker = _compile_type(avro_type["items"], {}, named, options)
    min_items = attributes.get("minItems")

    def check_array(value: Any, path: str, errors: list[Error]) -> Any:
        if type(value) is not list:
            errors.append(_error(path, "type", f"{path} must be an array, got {_describe(value)}"))
            return _INVALID
        valid = True
        if min_items is not None and len(value) < min_items:
            errors.append(_error(path, "minItems", f"{path} must have at least {min_items} item(s), got {len(value)}"))
            valid = False
        items = []
        for index, item in enumerate(value):
            checked = item_checker(item, f"{path}[{index}]", errors)
            if checked is _INVALID:
                valid = False
            items.append(checked)
        return items if valid else _INVALID
    return check_array


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    checker: Checker
    required: bool
    default: Any


def _compile_fields(fields: Iterable[Mapping[str, Any]], named: dict[str, Checker],
                    options: _Options) -> tuple[_Field, ...]:
    compiled = []
    for spec in fields:
        avro_type = spec["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        has_default = "default" in spec
        compiled.append(_Field(
            name=spec["name"],
            checker=_compile_type(avro_type, spec, named, options),
            required=not has_default and not nullable,
            default=spec.get("default"),
        ))
    return tuple(compiled)


def _check_fields(fields: tuple[_Field, ...], value: Mapping[str, Any], path: str,
                  errors: list[Error], out: dict[str, Any]) -> bool:
    valid = True
    for field in fields:
        field_path = f"{path}.{field.name}" if path else field.name
        if field.name in value:
            checked = field.checker(value[field.name], field_path, errors)
            if checked is _INVALID:
                valid = False
            else:
                out[field.name] = checked
        elif field.required:
            errors.append(_error(field_path, "required", f"{field_path} is required"))
            valid = False
        else:  # a copy, so that no two records share a mutable default
            default = field.default
            out[field.name] = list(default) if isinstance(default, list) else default
    return valid


def _check_unknown(value: Mapping[str, Any], known: frozenset[str], path: str, errors: list[Error],
                   hint: str = "") -> bool:
    if len(value) <= len(known) and known.issuperset(value):
        return True
    for name in value:
        if name not in known:
            field_path = _join(path, str(name))
            if field_path == "recorded_at":
                message = "recorded_at is set by ingest, not by the sender"
            else:
                message = f"{field_path} is not a field of {hint or 'this record'}"
            errors.append(_error(field_path, "unknown_field", message))
    return False


def _record_checker(fields: Iterable[Mapping[str, Any]], named: dict[str, Checker],
                    options: _Options) -> Checker:
    compiled = _compile_fields(fields, named, options)
    known = frozenset(f.name for f in compiled)

    def check_record(value: Any, path: str, errors: list[Error]) -> Any:
        if type(value) is not dict:
            errors.append(_error(path, "type", f"{path} must be an object, got {_describe(value)}"))
            return _INVALID
        out: dict[str, Any] = {}
        valid = _check_fields(compiled, value, path, errors, out)
        valid = _check_unknown(value, known, path, errors) and valid
        return out if valid else _INVALID
    return check_record


# --------------------------------------------------------------------------------------------
# The translator


class Accepted(NamedTuple):  # NamedTuples, not frozen dataclasses: built once per event on the hot path
    """An item that became a canonical event record, ready for the codec."""
    index: int
    event_type: str
    event_id: str
    record: dict[str, Any]


class Refused(NamedTuple):
    """An item that broke at least one rule; `event_type` is its `type` when it was a string."""
    index: int
    event_type: str | None
    event_id: str | None
    errors: tuple[Error, ...]


@dataclass(frozen=True, slots=True)
class _EventType:
    name: str
    body: tuple[_Field, ...]
    known: frozenset[str]


class Translator:
    """Validates and translates items for the given input event types; built once per process.

    `schemas` maps event type -> Avro schema JSON (each starting with the five envelope fields);
    `time_zones`, when given, is the exact set of IANA names accepted (else the names' syntax is checked).
    """

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]], input_types: Iterable[str], *,
                 max_future_s: float = 300.0, time_zones: Iterable[str] | None = None,
                 max_string_length: int = MAX_STRING_LENGTH) -> None:
        options = _Options(frozenset(time_zones) if time_zones else None, max_string_length)
        self._max_future_micros = int(max_future_s * 1_000_000)
        self._oldest_micros = to_micros(OLDEST_OCCURRED_AT)
        self._types: dict[str, _EventType] = {}
        for name in input_types:
            schema = schemas[name]
            names = tuple(f["name"] for f in schema["fields"][: len(ENVELOPE_FIELDS)])
            if names != ENVELOPE_FIELDS:
                raise ValueError(f"{name}: the first fields must be the envelope {ENVELOPE_FIELDS}, got {names}")
            body = _compile_fields(schema["fields"][len(ENVELOPE_FIELDS):], {}, options)
            known = frozenset((TYPE_FIELD, "event_id", "occurred_at", "source", "correlation_id",
                               *(f.name for f in body)))
            self._types[name] = _EventType(name, body, known)
        self._checkers = {"occurred_at": _timestamp_checker()}

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self._types)

    def translate(self, index: int, item: Any, *, now: datetime, client: str) -> Accepted | Refused:
        """One item of a request; `now` (aware, UTC) becomes recorded_at, `client` the default source."""
        return self.translate_at(index, item, now_micros=to_micros(now), client=client)

    def translate_all(self, items: Iterable[Any], *, now: datetime, client: str) -> list[Accepted | Refused]:
        now_micros = to_micros(now)
        return [self.translate_at(i, item, now_micros=now_micros, client=client) for i, item in enumerate(items)]

    def translate_at(self, index: int, item: Any, *, now_micros: int, client: str) -> Accepted | Refused:
        if type(item) is not dict:
            return Refused(index, None, None, (_error("", "type", f"an event must be a JSON object, got {_describe(item)}"),))
        errors: list[Error] = []
        event_type = self._event_type(item, errors)
        claimed_type = item.get(TYPE_FIELD) if type(item.get(TYPE_FIELD)) is str else None
        record: dict[str, Any] = {}
        # Items of one request are stamped a microsecond apart, in the client's order: services that
        # fold facts from several topics in acceptance order then see them in the order they were sent.
        event_id = self._envelope(item, errors, record, now_micros + index, client)
        if event_type is not None:
            _check_fields(event_type.body, item, "", errors, record)
            _check_unknown(item, event_type.known, "", errors, event_type.name)
        if errors:
            return Refused(index, claimed_type, event_id, tuple(errors))
        return Accepted(index, event_type.name, event_id, record)  # type: ignore[union-attr]

    def _event_type(self, item: Mapping[str, Any], errors: list[Error]) -> _EventType | None:
        if TYPE_FIELD not in item:
            errors.append(_error(TYPE_FIELD, "required", "type is required: the name of the event, e.g. MachineStateChanged"))
            return None
        name = item[TYPE_FIELD]
        if type(name) is not str:
            errors.append(_error(TYPE_FIELD, "type", f"type must be a string, got {_describe(name)}"))
            return None
        event_type = self._types.get(name)
        if event_type is None:
            errors.append(_error(TYPE_FIELD, "unknown_type",
                                 f"type {name!r} is not an input event; expected one of {', '.join(sorted(self._types))}"))
        return event_type

    def _envelope(self, item: Mapping[str, Any], errors: list[Error], record: dict[str, Any],
                  now_micros: int, client: str) -> str | None:
        event_id = item.get("event_id")
        if "event_id" not in item:
            errors.append(_error("event_id", "required", "event_id is required"))
            event_id = None
        elif type(event_id) is not str:
            errors.append(_error("event_id", "type", f"event_id must be a string, got {_describe(event_id)}"))
            event_id = None
        elif not event_id:
            errors.append(_error("event_id", "minLength", "event_id must not be empty"))
        elif len(event_id) > MAX_EVENT_ID_LENGTH:
            errors.append(_error("event_id", "maxLength",
                                 f"event_id must be at most {MAX_EVENT_ID_LENGTH} characters, got {len(event_id)}"))
        elif NUL in event_id:
            errors.append(_nul_error("event_id"))
        record["event_id"] = event_id

        if "occurred_at" not in item:
            errors.append(_error("occurred_at", "required", "occurred_at is required"))
        else:
            occurred_at = self._checkers["occurred_at"](item["occurred_at"], "occurred_at", errors)
            if occurred_at is not _INVALID:
                if occurred_at > now_micros + self._max_future_micros:
                    errors.append(_error("occurred_at", "future_timestamp",
                                         f"occurred_at {_format_micros(occurred_at)} is more than "
                                         f"{self._max_future_micros // 1_000_000} s after the time of arrival "
                                         f"{_format_micros(now_micros)}; check the sender's clock"))
                elif occurred_at < self._oldest_micros:
                    errors.append(_error("occurred_at", "too_old",
                                         f"occurred_at {_format_micros(occurred_at)} is before 2000-01-01T00:00:00Z"))
                record["occurred_at"] = occurred_at
        record["recorded_at"] = now_micros

        source = item.get("source")
        if source is None:
            record["source"] = client
        elif type(source) is not str:
            errors.append(_error("source", "type", f"source must be a string, got {_describe(source)}"))
        elif not source or len(source) > MAX_SOURCE_LENGTH:
            errors.append(_error("source", "format", f"source must have 1 to {MAX_SOURCE_LENGTH} characters"))
        elif NUL in source:
            errors.append(_nul_error("source"))
        else:
            record["source"] = source

        correlation_id = item.get("correlation_id")
        if correlation_id is not None and type(correlation_id) is not str:
            errors.append(_error("correlation_id", "type",
                                 f"correlation_id must be a string or null, got {_describe(correlation_id)}"))
        elif correlation_id is not None and len(correlation_id) > MAX_CORRELATION_ID_LENGTH:
            errors.append(_error("correlation_id", "maxLength",
                                 f"correlation_id must be at most {MAX_CORRELATION_ID_LENGTH} characters, "
                                 f"got {len(correlation_id)}"))
        elif correlation_id is not None and NUL in correlation_id:
            errors.append(_nul_error("correlation_id"))
        record["correlation_id"] = correlation_id
        return event_id if event_id else None
