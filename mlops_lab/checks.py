"""Exercise auto-checks: tell the student right or wrong, and why, without ever raising on them.

Every check prints one verdict and returns ``None`` (a returned value would show as an extra output):

- not attempted (the answer is ``...`` or ``None``): says so, never raises;
- right: says so, and why it is right;
- wrong: says what is off, and a hint.

The test suite runs the instructor notebooks with ``MLOPS_LAB_STRICT_CHECKS=1``: then a *wrong* answer
raises :class:`WrongAnswer`, so a broken solution fails CI. Student notebooks never set it.

The class grader (:mod:`mlops_lab.grading`) reads verdicts as data, not as printed text: inside
``with recording() as verdicts:`` every verdict is also appended to ``verdicts`` as a dict
``{"exercise", "verdict": "correct" | "not quite" | "not attempted", "message", "hint"}``.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Mapping

STRICT_ENV = "MLOPS_LAB_STRICT_CHECKS"


class WrongAnswer(AssertionError):
    """Raised for a wrong answer only under MLOPS_LAB_STRICT_CHECKS=1 (the instructor notebooks in CI)."""


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "False")


def not_attempted(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def normalise(value: Any) -> Any:
    """An answer as the checks compare it: text without case or surrounding spaces, and a number however it
    was written (``"1"``, ``1``, ``1.0`` and ``True``'s ``1`` are one answer; ``"Canary"`` is ``"canary"``)."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) or hasattr(value, "__float__") and not isinstance(value, complex):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    return value


_recorders: list[list[dict]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect every verdict given inside the block (they are still printed) as a list of dicts."""
    verdicts: list[dict] = []
    _recorders.append(verdicts)
    try:
        yield verdicts
    finally:
        _recorders.remove(verdicts)


def _record(exercise: str, correct: bool | None, message: str, hint: str) -> None:
    label = "not attempted" if correct is None else "correct" if correct else "not quite"
    for verdicts in _recorders:
        verdicts.append({"exercise": exercise, "verdict": label, "message": message,
                         "hint": "" if correct else hint})


def verdict(exercise: str, correct: bool | None, message: str, hint: str = "") -> None:
    """Print the verdict for ``exercise``; ``correct=None`` means not attempted yet."""
    _record(exercise, correct, message, hint)
    if correct is None:
        print(f"[{exercise}] not attempted yet: {message}")
        return
    if correct:
        print(f"[{exercise}] correct: {message}")
        return
    text = f"[{exercise}] not quite: {message}" + (f"\n  hint: {hint}" if hint else "")
    print(text)
    if strict():
        raise WrongAnswer(text)


def check_number(exercise: str, answer: Any, expected: float, *, tolerance: float = 0.0, relative: bool = False,
                 why: str = "", hint: str = "") -> None:
    """A numeric answer within ``tolerance`` of ``expected`` (relative to it if ``relative``)."""
    if not_attempted(answer):
        return verdict(exercise, None, "replace the ... with your answer and run the cell again.")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return verdict(exercise, False, f"expected a number, got {type(answer).__name__} {answer!r}.", hint)
    allowed = tolerance * abs(expected) if relative else tolerance
    if math.isfinite(value) and abs(value - expected) <= allowed + 1e-12:
        return verdict(exercise, True, why or f"{value:g} matches {expected:g}.")
    direction = "not a finite number" if not math.isfinite(value) else "too high" if value > expected else "too low"
    return verdict(exercise, False, f"your answer {value:g} is {direction}: the check accepts answers within "
                                    f"{allowed:g} of the expected value.", hint)


def check_choice(exercise: str, answer: Any, expected: Any, *, why: str = "", hint: str = "",
                 choices: list | None = None) -> None:
    """One answer out of ``choices`` (compared case-insensitively for strings)."""
    if not_attempted(answer):
        return verdict(exercise, None, "replace the ... with your answer and run the cell again.")
    if choices is not None and normalise(answer) not in [normalise(c) for c in choices]:
        return verdict(exercise, False, f"{answer!r} is not one of the options {choices}.", hint)
    if normalise(answer) == normalise(expected):
        return verdict(exercise, True, why or f"{answer!r} is right.")
    options = f" (one of {choices})" if choices is not None else ""
    return verdict(exercise, False, f"{answer!r} is a valid option{options}, but not the right one here.", hint)


def check_mapping(exercise: str, answer: Any, expected: Mapping, *, why: Mapping | None = None,
                  hint: str = "") -> None:
    """A dict answer: every key of ``expected`` present with the expected value; names each wrong key."""
    if not_attempted(answer) or (isinstance(answer, Mapping) and all(map(not_attempted, answer.values()))):
        return verdict(exercise, None, "fill in a value for every key and run the cell again.")
    if not isinstance(answer, Mapping):
        return verdict(exercise, False, f"expected a dict, got {type(answer).__name__}.", hint)
    missing = [k for k in expected if k not in answer]
    wrong = [k for k in expected if k in answer and normalise(answer[k]) != normalise(expected[k])]
    if not missing and not wrong:
        return verdict(exercise, True, "every entry is right." + "".join(
            f"\n  - {k}: {why[k]}" for k in expected if why and k in why))
    problems = ([f"missing: {', '.join(map(str, missing))}"] if missing else []) + (
        [f"{len(wrong)} of {len(expected)} not right: {', '.join(map(str, wrong))}"] if wrong else [])
    return verdict(exercise, False, "; ".join(problems) + ".", hint)
