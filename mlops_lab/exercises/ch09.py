"""Checks for chapter 09: serving models."""
from __future__ import annotations

import numpy as np

from ..checks import check_mapping, check_number, not_attempted, verdict

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


def check_concurrency(answer, latency_ms: float, target_rps: float) -> None:
    expected = int(np.ceil(target_rps * latency_ms / 1e3))
    check_number("ex-09-4", answer, expected, tolerance=0,
                 why=f"Little's law: in flight = throughput x latency = {target_rps:g}/s x {latency_ms:.2f} ms "
                     f"= {target_rps * latency_ms / 1e3:.2f}, so {expected} clients at least.",
                 hint="L = lambda x W; round up to a whole client.")
