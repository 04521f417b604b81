"""Checks for chapter 09: serving models."""
from __future__ import annotations

import numpy as np

from ..checks import check_mapping, not_attempted, verdict

STATUS_CODES = {
    "a JSON body without one of the model's columns": 400,
    "a column value of the wrong type ('high' as a credit score)": 400,
    "a body that is not valid JSON": 400,
    "Content-Type: text/plain": 415,
    "the model's own code raises an exception": 500,
    "GET /ping on a server whose model is loaded": 200,
}
WHY_STATUS = {
    "a JSON body without one of the model's columns": "schema enforcement rejects the input: a client error.",
    "a column value of the wrong type ('high' as a credit score)": "the value cannot be cast to the "
                                                                   "signature's type: a client error.",
    "a body that is not valid JSON": "the request cannot even be parsed: a client error.",
    "Content-Type: text/plain": "415 Unsupported Media Type: the server speaks JSON and CSV only.",
    "the model's own code raises an exception": "the lean server answers 500: the fault is the server's, "
                                                 "so guardrails count it (MLflow's own server answers 400).",
    "GET /ping on a server whose model is loaded": "healthy: the load balancer may send it traffic.",
}


def check_p99(answer, latencies_ms) -> None:
    """Any of NumPy's usual percentile definitions counts as right."""
    if not_attempted(answer):
        return verdict("ex-09-1", None, "replace the ... with the p99 latency in milliseconds.")
    values = np.asarray(latencies_ms, dtype=float)
    candidates = [float(np.percentile(values, 99, method=m)) for m in ("linear", "lower", "higher", "nearest",
                                                                       "midpoint", "inverted_cdf")]
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return verdict("ex-09-1", False, f"expected a number of milliseconds, got {answer!r}.")
    low, high = min(candidates), max(candidates)
    if low - 1e-9 <= value <= high + 1e-9:
        return verdict("ex-09-1", True, f"p99 = {value:.2f} ms: 99 % of requests were answered at least this "
                                        f"fast; the median was {np.median(values):.2f} ms.")
    if abs(value - high / 1e3) < 1e-6 or abs(value - low / 1e3) < 1e-6:
        return verdict("ex-09-1", False, "that looks like seconds.", "multiply by 1000.")
    return verdict("ex-09-1", False, f"{value:.3f} is not the 99th percentile of the sample.",
                   "np.percentile(latencies_ms, 99)")


def check_status_codes(answer) -> None:
    check_mapping("ex-09-2", answer, STATUS_CODES, why=WHY_STATUS,
                  hint="4xx: the client must change its request; 5xx: the server failed; 415 is about the "
                       "Content-Type header.")


def check_scores(answer, applicants, pipeline) -> None:
    if not_attempted(answer):
        return verdict("ex-09-3", None, "replace the ... with the list of predictions the server returned.")
    expected = pipeline.predict_proba(applicants)[:, 1]
    try:
        values = np.asarray(answer, dtype=float).ravel()
    except (TypeError, ValueError):
        return verdict("ex-09-3", False, "expected a list of numbers (the 'predictions' of the answer).")
    if values.shape != expected.shape:
        return verdict("ex-09-3", False, f"expected {len(expected)} predictions, got {values.size}.",
                       "send every row of `applicants`, and take answer['predictions'].")
    if np.allclose(values, expected, atol=1e-6):
        return verdict("ex-09-3", True, "the server's scores are the registered model's P(default) for each "
                                        "applicant.")
    return verdict("ex-09-3", False, "those are not the model's scores for these applicants.",
                   "post {'dataframe_records': applicants.to_dict(orient='records')} to /invocations.")


PEAK_RPS = 2000  # applications per second at the peak of a campaign: the exercise's given
MAX_BUSY = 0.7  # each worker busy at most 70 % of the time: the rest is headroom for bursts


def workers_needed(latencies_ms, target_rps: float = PEAK_RPS, max_busy: float = MAX_BUSY) -> int:
    """Workers (one request at a time each) to serve ``target_rps`` with each busy at most ``max_busy``.

    Little's law: requests in service = arrival rate x *mean* time in service. It holds for averages, so
    it takes the mean latency; a percentile would size the fleet for a latency no average request has.
    """
    mean_s = float(np.mean(latencies_ms)) / 1e3
    return int(np.ceil(target_rps * mean_s / max_busy - 1e-9))


def check_concurrency(answer, latencies_ms, target_rps: float = PEAK_RPS, max_busy: float = MAX_BUSY) -> None:
    if not_attempted(answer):
        return verdict("ex-09-4", None, "replace the ... with a whole number of workers.")
    values = np.asarray(latencies_ms, dtype=float)
    expected = workers_needed(values, target_rps, max_busy)
    busy = target_rps * values.mean() / 1e3
    try:
        workers = int(answer)
    except (TypeError, ValueError):
        return verdict("ex-09-4", False, f"expected a whole number of workers, got {answer!r}.")
    if workers == expected:
        return verdict("ex-09-4", True, f"Little's law: {target_rps:g}/s x {values.mean():.2f} ms (the mean) = "
                                        f"{busy:.2f} workers busy on average; at most {max_busy:.0%} busy each: "
                                        f"{busy:.2f} / {max_busy:g} = {busy / max_busy:.2f}, so {expected}.")
    hint = f"workers = ceil(rate x mean latency / {max_busy:g})"
    if workers == int(np.ceil(busy - 1e-9)):
        return verdict("ex-09-4", False, f"{workers} workers would be busy all the time, with no headroom for "
                                         f"a burst.", hint)
    for name, q in (("median", 50), ("p95", 95), ("p99", 99)):
        if workers == workers_needed([np.percentile(values, q)], target_rps, max_busy):
            return verdict("ex-09-4", False, f"that uses the {name} latency; Little's law is about averages, so "
                                             f"it needs the mean time in service, not a percentile.", hint)
    return verdict("ex-09-4", False, f"{workers} is not the number of workers needed.", hint)
