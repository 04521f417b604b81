"""The lean model server: MLflow's pyfunc model and REST contract on the standard library's HTTP server.

    python -m mlops_lab.serving --model-uri models:/credit@champion --port 8080

Why it exists. ``mlflow models serve`` runs FastAPI under uvicorn in a separate worker process: about
500 MB and several milliseconds per request. Binder has 2 GB for the kernel, two model servers and a router.
This server keeps everything that matters about MLflow serving and drops the rest:

- the model is loaded with ``mlflow.pyfunc.load_model`` (so ``models:/name@alias`` URIs, the model's
  flavour and its signature all work as in MLflow; the model's pinned requirements and Python version are
  compared with the environment by :func:`environment_mismatches`, as MLflow's slower check would), and
  every request goes through ``PyFuncModel.predict``,
  which enforces the signature's input schema;
- requests are parsed as MLflow's scoring server parses them (well-formed ``dataframe_split`` and
  ``dataframe_records`` bodies by a direct fast path that casts columns to the signature's types as MLflow
  does, e.g. a JSON integer into a double column; everything else by MLflow's own parser,
  ``infer_and_parse_data``, so the error messages are MLflow's), and the contract is MLflow's:
  ``GET /ping`` (and ``/health``), ``GET /version``, ``POST /invocations`` with ``application/json``
  (``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``) or ``text/csv``; the answer is
  ``{"predictions": [...]}``;
- a bad request gets a 4xx with MLflow's JSON error (``{"error_code": ..., "message": ...}``): malformed
  JSON, an unknown payload key, a missing column or a wrong type (400); an unsupported content type (415).

Deliberate differences, all so that a 5xx always means the model failed and every answer is JSON:

- when the *model's own code* raises (not the schema check), MLflow answers 400 ("unexpected error while
  evaluating the model"); this server answers **500**, because a crash in a model is the server's fault,
  not the client's, and a deployment guardrail must be able to tell the two apart;
- a missing value (``null``, ``NaN``, ``Infinity``) in any column is a 400 that names the columns; MLflow
  lets it through a float column and answers 200 with ``NaN``, which is not JSON. Answers are serialized
  with ``allow_nan=False``, and a model that returns a non-finite score gets a 500;
- a body no parser can take (nested too deeply, not UTF-8...) is a 400, never a 500;
- a value the signature's type cannot hold exactly (an age of 35.5 for an integer column, an integer beyond
  2**53 for a double) is a 400; MLflow's parser casts it with ``astype`` and silently truncates or rounds it;
- a wrong method on a known route is a 405 with an ``Allow`` header (``HEAD`` works wherever ``GET`` does);
- a body is read only with a plain ``Content-Length`` (else 400, or 411 for a chunked body), of at most
  ``--max-body-bytes`` (1 MiB; else 413), arriving within ``--body-timeout`` seconds (10; else 408); these
  answers close the connection and are not counted in the metrics below (the body was never read);
- the listen backlog is the kernel's limit (``somaxconn``), not the standard library's 5, so a burst of
  new connections is queued instead of dropped.

``GET /metrics`` serves Prometheus' text format (prometheus_client, a private registry):

==================================  =========  =========================================================
metric                              type       labels / meaning
==================================  =========  =========================================================
``serving_requests_total``          counter    ``code``: HTTP status of each ``/invocations`` request
``serving_request_duration_seconds`` histogram time to answer one ``/invocations`` request
``serving_rows_total``              counter    rows scored
``serving_prediction``              histogram  each score returned (buckets 0.1 ... 1.0)
``serving_model_info``              gauge      1, labelled with ``model_uri`` and ``model_version``
==================================  =========  =========================================================

:class:`CreditScorer` is the pyfunc model the serving chapters register: the course's credit pipeline
returning P(default) per row, optionally made *buggy* (it raises on a slice of inputs) or *slow* (it sleeps)
so that chapter 10's guardrails have something to catch.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from http.server import ThreadingHTTPServer
from unittest import mock

import mlflow.pyfunc
import numpy as np
import pandas as pd
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .httpkit import (BODY_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_BODY_BYTES, MAX_THREADS, BoundedServer,
                      LimitedBodyHandler)
from .simulator import CATEGORICAL, FEATURES, NUMERIC

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


# ---- the model ------------------------------------------------------------------------------------------
def request_frame(batch: pd.DataFrame) -> pd.DataFrame:
    """The model's input as a client sends it: the features, integers as int64, categories as strings.

    JSON has one integer type; a signature inferred from int16 columns would reject every JSON integer.
    """
    frame = batch[FEATURES].copy()
    for column in NUMERIC:
        kind = frame[column].dtype.kind
        frame[column] = frame[column].astype("int64" if kind in "iu" else "float64")
    for column in CATEGORICAL:
        frame[column] = frame[column].astype(str)
    return frame


# MLflow warns, when a PythonModel subclass is defined, that its predict() has no type hints; this model's
# input schema comes from its logged signature instead, so the warning is noise in a chapter's output.
# (MLflow resets the warning filters around that check, so only silencing its helper works.)
from mlflow.pyfunc.utils import data_validation as _data_validation  # noqa: E402

with mock.patch.object(_data_validation, "color_warning", lambda *args, **kwargs: None):

    class CreditScorer(mlflow.pyfunc.PythonModel):
        """P(default) for each row from a fitted credit pipeline; optionally buggy or slow, for chapter 10.

        The fitted pipeline (scaler, one-hot encoder, logistic regression) is *compiled* to its arithmetic:
        ``sigmoid((x - mean) / scale @ w + w[category] + b)`` in NumPy. The answers are those of
        ``pipeline.predict_proba`` (checked when it is logged), at about 50 microseconds a row instead of the
        few milliseconds scikit-learn's per-call validation costs a one-row request.
        ``fail_when=("purpose", "small_business")`` raises on any request holding such a row (a bug on a slice
        of inputs); ``delay_s=0.05`` sleeps that long per request (a slow release).
        """

        def __init__(self, pipeline, fail_when: tuple[str, str] | None = None, delay_s: float = 0.0):
            self.fail_when, self.delay_s = fail_when, float(delay_s)
            features, classifier = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
            scaler, encoder = features.named_transformers_["numeric"], features.named_transformers_["categorical"]
            weights = classifier.coef_[0]
            self.numeric = list(NUMERIC)
            self.mean, self.scale = scaler.mean_, scaler.scale_
            self.numeric_weights = weights[:len(NUMERIC)]
            self.category_weights, start = {}, len(NUMERIC)
            for column, categories in zip(CATEGORICAL, encoder.categories_):
                self.category_weights[column] = dict(zip(categories, weights[start:start + len(categories)]))
                start += len(categories)
            self.intercept = float(classifier.intercept_[0])

        def predict(self, context, model_input, params=None):
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.fail_when is not None:
                column, value = self.fail_when
                if (model_input[column] == value).any():
                    raise RuntimeError(f"cannot score {column}={value!r}: lookup table has no entry")
            # Column by column: selecting a list of columns would copy the frame first (slow for one row).
            x = np.column_stack([model_input[column].to_numpy(dtype=float) for column in self.numeric])
            z = ((x - self.mean) / self.scale) @ self.numeric_weights + self.intercept
            for column, weights in self.category_weights.items():  # an unknown category adds 0, like the encoder
                z = z + np.array([weights.get(value, 0.0) for value in model_input[column].tolist()])
            return 1.0 / (1.0 + np.exp(-z))


def log_credit_scorer(pipeline, example: pd.DataFrame, registered_model_name: str, *, name: str = "model",
                      fail_when: tuple[str, str] | None = None, delay_s: float = 0.0):
    """Log a :class:`CreditScorer` with a signature and explicit pip requirements; register it.

    Returns the new ``ModelVersion``. Explicit requirements make logging ~1 s instead of ~4 s (MLflow would
    otherwise infer them in a subprocess). Call inside ``mlflow.start_run()``.
    """
    import sklearn
    from mlflow.models import infer_signature

    frame = request_frame(example)
    scorer = CreditScorer(pipeline, fail_when=fail_when, delay_s=delay_s)
    expected = pipeline.predict_proba(frame)[:, 1]
    if fail_when is None and not np.allclose(scorer.predict(None, frame), expected, atol=1e-9):
        raise ValueError("the compiled scorer disagrees with the pipeline: is it scaler + one-hot + logistic?")
    with warnings.catch_warnings():  # a hint about integer columns and missing values: ours have none
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(frame, expected)
    requirements = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
                    f"pandas=={pd.__version__}", f"numpy=={np.__version__}"]
    # Quiet: MLflow's note on pickled Python models and its "Successfully registered" lines on stderr
    # would repeat for every model a chapter logs; the returned ModelVersion says what was registered.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(name=name, python_model=scorer, signature=signature,
                                           pip_requirements=requirements,
                                           registered_model_name=registered_model_name)
    finally:
        pyfunc_logger.setLevel(level)
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(registered_model_name, info.registered_model_version)


# ---- the server -----------------------------------------------------------------------------------------
def load_pyfunc(model_uri: str):
    """``mlflow.pyfunc.load_model``, with its check of the environment made directly.

    MLflow warns when the environment does not satisfy the model's ``requirements.txt`` or Python version,
    but to map requirement names to modules it reads the metadata of every installed distribution: 0.5 s of
    each server's start on one core, a model server's largest cost after its imports. The models here pin
    exact versions (``name==version``), which one metadata lookup per line checks; every mismatch is logged
    as a warning, as MLflow does.
    """
    local_path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    for mismatch in environment_mismatches(local_path):
        logging.getLogger(__name__).warning("%s does not match this environment: %s", model_uri, mismatch)
    return mlflow.pyfunc.load_model(local_path, suppress_warnings=True)


def environment_mismatches(model_path: str | os.PathLike) -> list[str]:
    """Where this environment differs from the model's pinned requirements and its Python version."""
    from importlib import metadata
    from pathlib import Path

    from mlflow.models import Model
    from packaging.requirements import InvalidRequirement, Requirement

    mismatches = []
    requirements = Path(model_path, "requirements.txt")
    for line in requirements.read_text().splitlines() if requirements.exists() else []:
        try:
            requirement = Requirement(line.strip())
        except InvalidRequirement:     # a comment, a blank line, a path or an option: MLflow skips them too
            continue
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            mismatches.append(f"{requirement} is required, {requirement.name} is not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            mismatches.append(f"{requirement} is required, {requirement.name} {installed} is installed")
    logged_python = Model.load(Path(model_path, "MLmodel")).flavors.get("python_function", {}).get("python_version")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if logged_python and ".".join(logged_python.split(".")[:2]) != running:
        mismatches.append(f"the model was logged with Python {logged_python}, this is Python {running}")
    return mismatches


class ModelService:
    """The model, its input schema and its metrics; :meth:`invoke` answers one ``/invocations`` body."""

    def __init__(self, model_uri: str):
        self.model_uri = model_uri
        self.model = load_pyfunc(model_uri)
        self.input_schema = self.model.metadata.get_input_schema()
        self.version = _registered_version(model_uri)
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "Requests to /invocations by HTTP status", ["code"],
                                registry=self.registry)
        self.latency = Histogram("serving_request_duration_seconds", "Time to answer one /invocations request",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rows = Counter("serving_rows", "Rows scored", registry=self.registry)
        self.scores = Histogram("serving_prediction", "Scores returned", buckets=SCORE_BUCKETS,
                                registry=self.registry)
        Gauge("serving_model_info", "The model this server loaded", ["model_uri", "model_version"],
              registry=self.registry).labels(model_uri, self.version).set(1)

    def invoke(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request, following MLflow's scoring server.

        A request the client got wrong is a 4xx; only a failure of the model itself is a 5xx, so that a
        guardrail counting 5xx never blames the model for a client's bad body.
        """
        try:
            data = self._parse(body, content_type)
            _reject_missing_values(data)
            scores = self._predict(data)
        except _Answer as answer:
            return answer.status, answer.body, JSON
        self.rows.inc(len(scores))
        for score in scores:
            self.scores.observe(score)
        # allow_nan=False: NaN and Infinity are not JSON; _predict has already turned them into a 500.
        return 200, json.dumps({"predictions": scores.tolist()}, allow_nan=False).encode(), JSON

    def _parse(self, body: bytes, content_type: str | None):
        """The model input from a request body; raises :class:`_Answer` with a 4xx for a bad body."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server as mlflow_server

        mime = (content_type or "").split(";")[0].strip().lower()
        if mime not in (mlflow_server.CONTENT_TYPE_JSON, mlflow_server.CONTENT_TYPE_CSV):
            message = (f"This predictor only supports the following content types: "
                       f"['{mlflow_server.CONTENT_TYPE_JSON}', '{mlflow_server.CONTENT_TYPE_CSV}']. "
                       f"Got '{content_type or ''}'.")
            raise _Answer(415, _error("UNSUPPORTED_MEDIA_TYPE", message))
        try:
            if mime == mlflow_server.CONTENT_TYPE_CSV:
                return mlflow_server.parse_csv_input(io.StringIO(body.decode("utf-8", "replace")),
                                                     schema=self.input_schema)
            data = _fast_frame(body)  # a well-formed split/records body; None for anything else
            if data is not None:
                data = _cast_to_schema(data, self.input_schema)  # None if only MLflow's parser can say why
            if data is None:  # MLflow's own parser, and its error messages
                data = mlflow_server.infer_and_parse_data(_json_object(body), self.input_schema)
            return data
        except _Answer:
            raise
        except MlflowException as error:
            raise _Answer(error.get_http_status_code(), error.serialize_as_json().encode()) from error
        except RecursionError as error:  # "[[[[..." deeper than the parser can go: the client's body
            raise _Answer(400, _error("BAD_REQUEST", "Invalid input. The JSON is nested too deeply to parse.")) \
                from error
        except Exception as error:  # any other body the parsers choke on is the client's, not the model's
            raise _Answer(400, _error("BAD_REQUEST", f"Invalid input. The body could not be parsed: "
                                                     f"{type(error).__name__}: {error}")) from error

    def _predict(self, data) -> np.ndarray:
        """The model's scores; a schema violation is MLflow's 4xx, a failure of the model a 500."""
        from mlflow.exceptions import MlflowException

        try:
            predictions = self.model.predict(data)  # enforces the signature's input schema
        except MlflowException as error:
            raise _Answer(error.get_http_status_code(), error.serialize_as_json().encode()) from error
        except Exception as error:  # the model's own code failed: a server error, not the client's
            raise _Answer(500, _error("INTERNAL_ERROR", f"the model raised {type(error).__name__}: {error}")) \
                from error
        scores = np.asarray(predictions, dtype=float).ravel()
        if not np.isfinite(scores).all():  # the input had no missing value, so this is the model's fault
            raise _Answer(500, _error("INTERNAL_ERROR", "the model returned a non-finite score (NaN or infinity)"))
        return scores

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


def _fast_frame(body: bytes) -> pd.DataFrame | None:
    """A DataFrame from a well-formed ``dataframe_split`` or ``dataframe_records`` body, else None.

    Building the frame directly (then :func:`_cast_to_schema`) instead of through MLflow's parser saves
    about a millisecond a request.
    Anything unusual (other keys, params, malformed JSON) returns None and goes through MLflow's parser,
    so every error message is MLflow's own.
    """
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict) or len(payload) != 1:
            return None
        if isinstance(payload.get("dataframe_split"), dict):
            split = payload["dataframe_split"]
            columns, rows = split.get("columns"), split.get("data")
            if set(split) <= {"columns", "data", "index"} and isinstance(columns, list) and \
                    isinstance(rows, list) and rows and all(isinstance(r, list) and len(r) == len(columns)
                                                             for r in rows):
                return pd.DataFrame({c: [r[j] for r in rows] for j, c in enumerate(columns)})
        elif isinstance(payload.get("dataframe_records"), list):
            records = payload["dataframe_records"]
            if records and all(isinstance(r, dict) for r in records):
                columns = list(records[0])
                if all(len(r) == len(columns) and all(c in r for c in columns) for r in records):
                    return pd.DataFrame({c: [r[c] for r in records] for c in columns})
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    return None


def _cast_to_schema(frame: pd.DataFrame, schema) -> pd.DataFrame | None:
    """The fast path's frame cast to the signature's numeric types as MLflow's server casts it, losing nothing.

    ``mlflow models serve`` casts each column with ``astype`` while parsing (``cast_df_types_according_to_schema``)
    before ``PyFuncModel.predict`` enforces the schema, which alone would refuse a JSON integer in a double
    column ("Can not safely convert int64 to float64"). The same casts are made here when they are exact
    (checked by casting back): an integer into a double column (up to 2**53), an integral float into an integer
    column. ``astype`` would silently round or truncate the rest (35.5 years as 35): a 400 here, a deliberate
    difference. A non-numeric value for a numeric column returns None, so MLflow's parser gives its own error;
    a missing value is left for :func:`_reject_missing_values` to name.
    """
    from mlflow.types import DataType

    if schema is None or not schema.has_input_names():
        return frame
    for name, kind in zip(schema.input_names(), schema.input_types()):
        if name not in frame.columns or not isinstance(kind, DataType) or _has_missing(frame[name]):
            continue
        values, target = frame[name], kind.to_numpy()
        if values.dtype == target or target.kind not in "iuf":
            continue
        if values.dtype.kind not in "iuf":
            return None
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cast = values.astype(target)
            exact = bool((cast.astype(values.dtype) == values).all())
        if not exact:
            raise _Answer(400, _error("BAD_REQUEST", f"Invalid input. Column {name!r} holds values that {target} "
                                                     f"cannot represent exactly; this server does not round them."))
        frame[name] = cast
    return frame


def _json_object(body: bytes) -> dict:
    """The body as a JSON object, or MLflow's 400 (BAD_REQUEST) with its scoring server's wording.

    MLflow's own function for this step (``scoring_server._parse_json_data``) is private; what it does for a
    model without a params schema or a chat signature is this plus the public ``infer_and_parse_data``.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST
    from mlflow.pyfunc.scoring_server import REQUIRED_INPUT_FORMAT

    try:
        payload = json.loads(body)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise MlflowException(f"Invalid input. Ensure that input is a valid JSON formatted string. "
                              f"Error: '{error!r}'", error_code=BAD_REQUEST) from error
    if not isinstance(payload, dict):
        raise MlflowException(f"Invalid input. {REQUIRED_INPUT_FORMAT}. Received a {type(payload).__name__}.",
                              error_code=BAD_REQUEST)
    return payload


JSON = "application/json"


class _Answer(Exception):
    """An error answer (status and JSON body) that ends the handling of a request."""

    def __init__(self, status: int, body: bytes):
        super().__init__(status)
        self.status, self.body = status, body


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


def _reject_missing_values(data) -> None:
    """A 400 naming the columns that hold null, NaN or an infinity, as MLflow's contract requires.

    The signature marks every column *required*: a missing value cannot be scored, and a NaN score would
    make the answer invalid JSON. Integer and string columns hold only null as missing; float columns also
    NaN and +-infinity (JSON's ``NaN``, ``Infinity`` and ``1e999`` all parse to those).
    """
    try:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    except (ValueError, TypeError):
        return  # not a table: the schema check says what is wrong with it
    missing = [str(column) for column in frame.columns if _has_missing(frame[column])]
    if missing:
        raise _Answer(400, _error("BAD_REQUEST", f"Invalid input. Missing values (null, NaN or infinity) in "
                                                 f"column(s) {missing}: the model's signature requires a value "
                                                 f"in every column of every row."))


def _has_missing(values: pd.Series) -> bool:
    if values.dtype.kind in "fc":
        return not np.isfinite(values.to_numpy()).all()
    return bool(values.isna().any())


def _registered_version(model_uri: str) -> str:
    """The registry version behind ``models:/name@alias`` (or ``models:/name/3``); '' for other URIs."""
    if not model_uri.startswith("models:/"):
        return ""
    try:
        from mlflow import MlflowClient

        name, _, ref = model_uri[len("models:/"):].partition("@")
        if ref:
            return str(MlflowClient().get_model_version_by_alias(name, ref).version)
        return model_uri.rstrip("/").rsplit("/", 1)[-1]
    except Exception:
        return ""


# The methods each route answers; any other method on a known route is a 405 naming these (RFC 9110 15.5.6).
ALLOWED = {"/ping": "GET, HEAD", "/health": "GET, HEAD", "/version": "GET, HEAD", "/metrics": "GET, HEAD",
           "/info": "GET, HEAD", "/invocations": "POST"}


class _Handler(LimitedBodyHandler):
    """Bounded bodies, idle connections closed, TCP_NODELAY: :class:`mlops_lab.httpkit.LimitedBodyHandler`."""

    service: ModelService  # set on the subclass by make_server

    def log_message(self, format, *args):  # quiet: metrics, not access logs
        pass

    @property
    def route(self) -> str:
        return self.path.split("?")[0]

    def _send(self, status: int, body: bytes, content_type: str = JSON, headers: dict = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has GET's headers and no body
            self.wfile.write(body)

    def _wrong_method(self):
        """405 with the route's methods for a known route, 404 for an unknown one; the body is drained first
        so that the kept-alive connection stays in step."""
        if self.read_body() is None:
            return
        allowed = ALLOWED.get(self.route)
        if allowed is None:
            self._send(404, _error("ENDPOINT_NOT_FOUND", f"no route {self.command} {self.route}"))
        else:
            self._send(405, _error("METHOD_NOT_ALLOWED", f"{self.command} is not allowed on {self.route}; "
                                                         f"use {allowed}"), headers={"Allow": allowed})

    def do_GET(self):
        path = self.route
        if path in ("/ping", "/health"):
            self._send(200, b"\n")
        elif path == "/version":
            self._send(200, mlflow.__version__.encode())
        elif path == "/metrics":
            self._send(200, self.service.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/info":
            self._send(200, json.dumps({"model_uri": self.service.model_uri,
                                        "model_version": self.service.version}).encode())
        else:
            self._wrong_method()

    do_HEAD = do_GET  # _send leaves the body out

    def do_OPTIONS(self):  # which methods a route answers: the Allow header of an empty 200
        if self.read_body() is None:
            return
        allowed = ALLOWED.get(self.route)
        if allowed is None:
            self._send(404, _error("ENDPOINT_NOT_FOUND", f"no route OPTIONS {self.route}"))
        else:
            self._send(200, b"", headers={"Allow": allowed})

    def do_POST(self):
        if self.route != "/invocations":
            self._wrong_method()
            return
        body = self.read_body()
        if body is None:
            return
        start = time.perf_counter()
        status, payload, content_type = self.service.invoke(body, self.headers.get("Content-Type"))
        self.service.latency.observe(time.perf_counter() - start)
        self.service.requests.labels(str(status)).inc()
        self._send(status, payload, content_type, {"X-Model-Version": self.service.version})

    do_PUT = do_DELETE = do_PATCH = _wrong_method


def make_server(service: ModelService, port: int, host: str = "127.0.0.1", *, max_body_bytes: int = MAX_BODY_BYTES,
                body_timeout_s: float = BODY_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S,
                max_threads: int = MAX_THREADS) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"service": service, "max_body_bytes": max_body_bytes,
                                            "body_timeout_s": body_timeout_s})
    handler.timeout = idle_timeout_s
    return BoundedServer((host, port), handler, max_threads=max_threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an MLflow pyfunc model over MLflow's REST contract.")
    parser.add_argument("--model-uri", required=True, help="e.g. models:/credit@champion or runs:/<id>/model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                        help="a larger request body gets a 413 (default: 1 MiB)")
    parser.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S,
                        help="seconds a request body may take to arrive before a 408 (default: %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    service = ModelService(args.model_uri)
    server = make_server(service, args.port, args.host, max_body_bytes=args.max_body_bytes,
                         body_timeout_s=args.body_timeout)
    print(f"serving {args.model_uri} (version {service.version or '-'}) on http://{args.host}:{args.port}",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
