"""The lean model server: MLflow's contract, schema enforcement, errors, metrics, with real processes."""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import temporary_tracking
from mlops_lab import CreditStream
from mlops_lab.loadgen import faster_in_pairs, get_text, interleaved, payloads, post, run_load, summarize
from mlops_lab.models import train
from mlops_lab.servers import BackgroundServer
from mlops_lab.serving import CreditScorer, ModelService, request_frame


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A fresh MLflow store with credit@champion (healthy) and credit@buggy (raises on 60-month loans)."""
    with temporary_tracking(tmp_path_factory.mktemp("mlflow"), "test_serving") as uri:
        yield log_models(uri)


def log_models(uri):
    import mlflow
    from mlflow import MlflowClient

    from mlops_lab.serving import log_credit_scorer

    stream = CreditStream(seed=5, rows_per_month=2000)
    training = stream.training_window("2024-01-01", months=1)
    pipeline = train(training, as_of="2024-01-01")
    with mlflow.start_run():
        healthy = log_credit_scorer(pipeline, training.head(100), "credit", name="healthy")
        buggy = log_credit_scorer(pipeline, training.head(100), "credit", name="buggy",
                                  fail_when=("loan_term", 60))
    client = MlflowClient()
    client.set_registered_model_alias("credit", "champion", healthy.version)
    client.set_registered_model_alias("credit", "buggy", buggy.version)
    return {"uri": uri, "pipeline": pipeline, "stream": stream}


def lean(registry, alias="champion"):
    return BackgroundServer([sys.executable, "-m", "mlops_lab.serving", "--model-uri", f"models:/credit@{alias}",
                             "--port", "{port}"], name=f"lean-{alias}", health_path="/ping",
                            env={"MLFLOW_TRACKING_URI": registry["uri"]})


@pytest.fixture(scope="module")
def server(registry):
    with lean(registry) as srv:
        yield srv


@pytest.fixture(scope="module")
def rows(registry):
    return request_frame(registry["stream"].month(3, rows=50))


def test_request_frame_types_survive_json(rows):
    assert rows.dtypes[["age", "credit_score", "loan_term"]].eq("int64").all()
    assert rows.dtypes[["income", "debt_to_income"]].eq("float64").all()
    assert rows["purpose"].map(type).eq(str).all()


def test_compiled_scorer_matches_the_pipeline(registry, rows):
    scorer = CreditScorer(registry["pipeline"])
    expected = registry["pipeline"].predict_proba(rows)[:, 1]
    assert np.allclose(scorer.predict(None, rows), expected, atol=1e-12)
    unknown = rows.assign(purpose="wedding")  # an unseen category adds nothing, like handle_unknown="ignore"
    assert np.allclose(scorer.predict(None, unknown), registry["pipeline"].predict_proba(unknown)[:, 1])


def test_buggy_and_slow_scorers(registry, rows):
    buggy = CreditScorer(registry["pipeline"], fail_when=("loan_term", 60))
    with pytest.raises(RuntimeError, match="loan_term"):
        buggy.predict(None, rows.assign(loan_term=60))
    assert len(buggy.predict(None, rows.assign(loan_term=36))) == len(rows)


def test_every_payload_form_gives_the_models_scores(server, registry, rows):
    expected = registry["pipeline"].predict_proba(rows)[:, 1]
    for form in ("dataframe_split", "dataframe_records", "inputs"):
        body = payloads(rows, rows_per_request=len(rows), form=form)[0]
        status, answer, headers = post(server.url + "/invocations", body)
        assert status == 200, answer
        assert np.allclose(answer["predictions"], expected), form
        assert headers["X-Model-Version"] == "1"
    status, answer, _ = post(server.url + "/invocations", rows.to_csv(index=False), "text/csv")
    assert status == 200 and np.allclose(answer["predictions"], expected)


BAD = {
    "missing column": (lambda r: json.dumps({"dataframe_records": r.drop(columns="income").to_dict("records")}),
                       "application/json", 400, "income"),
    "wrong type": (lambda r: json.dumps({"dataframe_records": r.assign(credit_score="high").to_dict("records")}),
                   "application/json", 400, "credit_score"),
    "malformed JSON": (lambda r: '{"dataframe_split": [', "application/json", 400, "JSON"),
    "unknown key": (lambda r: json.dumps({"rows": []}), "application/json", 400, "dataframe_split"),
    "a JSON list": (lambda r: "[1, 2]", "application/json", 400, "list"),
    "wrong content type": (lambda r: "x", "text/plain", 415, "text/plain"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, rows, case):
    make, content_type, expected, mentions = BAD[case]
    status, answer, _ = post(server.url + "/invocations", make(rows.head(3)), content_type)
    assert status == expected
    assert mentions.lower() in answer["message"].lower()
    status, _, _ = post(server.url + "/invocations", payloads(rows.head(1))[0])
    assert status == 200


def test_unknown_routes_are_404(server):
    assert post(server.url + "/predict", "{}")[0] == 404
    assert get_text(server.url + "/ping").strip() == ""


def test_a_crash_in_the_model_is_a_500_not_a_client_error(registry, rows):
    with lean(registry, "buggy") as buggy:
        status, answer, _ = post(buggy.url + "/invocations", payloads(rows.assign(loan_term=60).head(2), 2)[0])
        assert status == 500 and "RuntimeError" in answer["message"]
        status, _, _ = post(buggy.url + "/invocations", payloads(rows.assign(loan_term=36).head(2), 2)[0])
        assert status == 200


def test_metrics_count_what_was_served(registry, rows):
    with lean(registry) as fresh:
        bodies = payloads(rows, rows_per_request=5)
        log = run_load(fresh.url, bodies, rate=None, requests=20, concurrency=2)
        assert summarize(log)["errors"] == 0
        post(fresh.url + "/invocations", "x", "text/plain")
        families = {f.name: f for f in text_string_to_metric_families(get_text(fresh.url + "/metrics"))}
    codes = {s.labels["code"]: s.value for s in families["serving_requests"].samples if s.name.endswith("_total")}
    assert codes == {"200": 20.0, "415": 1.0}
    rows_total = [s.value for s in families["serving_rows"].samples if s.name.endswith("_total")][0]
    assert rows_total == 100
    count = [s.value for s in families["serving_prediction"].samples if s.name == "serving_prediction_count"][0]
    assert count == 100
    latency = [s.value for s in families["serving_request_duration_seconds"].samples
               if s.name.endswith("_count")][0]
    assert latency == 21
    info = families["serving_model_info"].samples[0]
    assert info.labels == {"model_uri": "models:/credit@champion", "model_version": "1"}


def test_model_service_in_process(registry, rows):
    service = ModelService("models:/credit@champion")
    status, body, _ = service.invoke(payloads(rows.head(2), 2)[0], "application/json; charset=utf-8")
    assert status == 200 and len(json.loads(body)["predictions"]) == 2
    assert service.invoke(b"{}", None)[0] == 415
    assert service.version == "1"


def test_interleaved_requests_pair_up_the_servers(server, rows):
    """Every server answers request i; the order rotates so neither always goes first."""
    bodies = payloads(rows, rows_per_request=1)
    logs = interleaved({"first": server.url, "second": server.url}, bodies, requests=20, warmup=2)
    assert [len(log) for log in logs.values()] == [20, 20]
    assert (logs["first"]["status"] == 200).all() and (logs["second"]["status"] == 200).all()
    assert logs["first"]["index"].tolist() == logs["second"]["index"].tolist() == list(range(20))
    went_first = (logs["first"]["t"] < logs["second"]["t"]).to_numpy()
    assert went_first[::2].all() and not went_first[1::2].any(), "the order alternates"


def test_the_sign_test_separates_faster_from_equal():
    n = 60
    fast = pd.DataFrame({"index": range(n), "latency_s": 0.001 + 0.0001 * np.arange(n) % 3 * 1e-3})
    slow = fast.assign(latency_s=fast["latency_s"] * 2)
    verdict = faster_in_pairs(fast, slow)
    assert verdict["wins"] == n and verdict["p_value"] == pytest.approx(0.5 ** n)
    assert verdict["median_ratio"] == pytest.approx(2.0)
    assert faster_in_pairs(slow, fast)["p_value"] == 1.0
    coin = fast.assign(latency_s=np.where(np.arange(n) % 2 == 0, 0.0005, 0.0030))
    assert faster_in_pairs(coin, fast)["wins"] == n // 2
    assert faster_in_pairs(coin, fast)["p_value"] > 0.4, "half the pairs won is what a fair coin does"
