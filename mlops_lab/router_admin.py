"""The router's admin API values: every field is checked before anything changes.

A refusal raises :class:`InvalidField` naming the field; the router answers it with a 400
``{"error_code": "INVALID_PARAMETER_VALUE", "field", "message"}``. Weights and shares are finite numbers in
[0, 1], bake times finite and > 0, backends ``http://127.0.0.1:<port>`` or ``http://localhost:<port>``, and
unknown fields are refused.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, fields
from urllib.parse import urlsplit

from .rollout import STRATEGIES, Alarm, RolloutPlan

# ---- admin values: every field is checked before anything changes ---------------------------------------
PLAN_FIELDS = ("strategy", "canary_size", "step_size", "bake_s", "final_bake_s")
ALARM_FIELDS = ("metric", "threshold", "evaluation_periods", "datapoints_to_alarm", "min_requests")
ALARM_DEFAULTS = {f.name: f.default for f in fields(Alarm) if f.default is not MISSING}
LOCAL_HOSTS = ("127.0.0.1", "localhost")  # the router only ever fronts servers on this machine


class InvalidField(ValueError):
    """An admin value outside its domain; ``field`` names it (the admin API answers 400 with it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


def _number(field: str, value, low=-math.inf, high=math.inf, *, open_low=False, open_high=False) -> float:
    """A finite number in its interval. Strings and booleans are refused, not guessed: "0.5" or true is a
    client's bug. NaN is refused too: every comparison with it is False, so it would pass any range check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidField(field, f"must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise InvalidField(field, f"must be in {interval}, got {value!r}")
    return float(value)


def _fraction(field: str, value) -> float:
    return _number(field, value, 0.0, 1.0)


def _integer(field: str, value, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise InvalidField(field, f"must be a whole number in [{low}, {high:g}], got {value!r}")
    return int(value)


def typed(kind: type, name: str):
    def check(field: str, value):
        if not isinstance(value, kind):
            raise InvalidField(field, f"must be a {name}, got {value!r}")
        return value
    return check


def _choice(field: str, value, choices: tuple):
    if not isinstance(value, str) or value not in choices:
        raise InvalidField(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def known_fields(spec: dict, allowed, prefix: str = "") -> None:
    """Unknown fields are refused: a misspelt ``bake`` silently ignored would run the default bake."""
    for key in spec:
        if key not in allowed:
            raise InvalidField(prefix + key, f"is not a known field (known: {', '.join(allowed) or 'none'})")


TRAFFIC_FIELDS = {"green_weight": _fraction, "sticky": typed(bool, "boolean"), "salt": typed(str, "string"),
                  "shadow_fraction": _fraction, "capture_sample": _fraction}


def backend_url(field: str, value) -> str:
    """``http://127.0.0.1:<port>`` or ``http://localhost:<port>`` (a trailing slash is dropped)."""
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        valid = parts is not None and parts.scheme == "http" and parts.hostname in LOCAL_HOSTS and \
            bool(parts.port) and parts.path in ("", "/") and not (parts.query or parts.fragment or parts.username)
    except ValueError:  # a port out of range, a malformed host
        valid = False
    if not valid:
        raise InvalidField(field, f"must be http://127.0.0.1:<port> or http://localhost:<port>, got {value!r}")
    return value.rstrip("/")


def plan_from_dict(spec: dict) -> RolloutPlan:
    """A :class:`RolloutPlan` from the admin API's fields; bakes must be finite and > 0 (a NaN bake never ends)."""
    known_fields(spec, PLAN_FIELDS)
    checks = {"strategy": lambda f, v: _choice(f, v, STRATEGIES),
              "canary_size": lambda f, v: _number(f, v, 0, 1, open_low=True, open_high=True),
              "step_size": lambda f, v: _number(f, v, 0, 1, open_low=True),
              "bake_s": lambda f, v: _number(f, v, 0, open_low=True),
              "final_bake_s": lambda f, v: _number(f, v, 0, open_low=True)}
    return RolloutPlan(**{key: checks[key](key, value) for key, value in spec.items()})


def alarm_from_dict(spec, field: str = "alarm") -> Alarm:
    """An :class:`Alarm` from the admin API's fields; ``field`` prefixes the name of a refused one."""
    if not isinstance(spec, dict):
        raise InvalidField(field, f"must be an object with {', '.join(ALARM_FIELDS)}, got {spec!r}")
    known_fields(spec, ALARM_FIELDS, field + ".")
    for required in ("metric", "threshold"):
        if required not in spec:
            raise InvalidField(f"{field}.{required}", "is required")
    values = {**ALARM_DEFAULTS, **spec}
    periods = _integer(f"{field}.evaluation_periods", values["evaluation_periods"], 1)
    return Alarm(_choice(f"{field}.metric", values["metric"], ("error_rate", "p99_latency")),
                 _number(f"{field}.threshold", values["threshold"], 0),
                 evaluation_periods=periods,
                 datapoints_to_alarm=_integer(f"{field}.datapoints_to_alarm", values["datapoints_to_alarm"], 1,
                                              periods),
                 min_requests=_integer(f"{field}.min_requests", values["min_requests"], 1))


def alarms_from_list(value) -> tuple[Alarm, ...]:
    if not isinstance(value, list):
        raise InvalidField("alarms", f"must be a list of alarm objects, got {value!r}")
    return tuple(alarm_from_dict(spec, f"alarms[{i}]") for i, spec in enumerate(value))
