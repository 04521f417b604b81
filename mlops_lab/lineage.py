"""Model and data lineage: join MLflow's registry to git and DVC, as a graph in SageMaker's vocabulary.

Chapter 05 asks two questions of a credit project built with :mod:`mlops_lab.dvc_project`:

- *backward* (SageMaker: ``Ascendants``): which data, code and parameters produced the model serving now?
- *forward* (``Descendants``): a batch of data turned out to be corrupt; which model versions did it reach,
  and does an alias serve one of them now?

Both only work if training recorded the links. :func:`record_training_run` does that for one run of the DVC
pipeline: an MLflow run tagged with the git commit and the DVC hashes from ``dvc.lock``, the clock of the
run (``as_of``, the label, the months prepare read), the environment (the md5 of the pinned lock file
``requirements.txt`` that ``dvc.lock`` lists as a dependency of the train stage, plus the Python, the
platform and the BLAS library: :func:`environment`), the parameters, the metrics, the training data as a
dataset input whose digest *is* the DVC hash, the lock file as an artifact, and the model, registered as a
new version (and the commit tagged ``model-v<version>`` in git).

:func:`build_lineage` then reads the registry, the runs, ``dvc.lock`` and ``metrics.json`` at each recorded
commit and DVC's directory manifests, and returns a ``networkx.DiGraph`` whose nodes are SageMaker ML
Lineage Tracking entities and whose edges are its association types:

==========================  ==========  ===============  ========================================
node                        kind        type             edge to the next node
==========================  ==========  ===============  ========================================
a monthly batch file that   artifact    DataSet          ContributedTo a data version (edge
prepare read (a version:                                 attribute ``role``: train, validation
its md5)                                                 or test)
a version of ``data/raw``   artifact    DataSet          ContributedTo a training run
the pipeline's code         artifact    Code             ContributedTo a training run
``params.yaml`` values      artifact    Parameters       ContributedTo a training run
the lock file (environment) artifact    Image            ContributedTo a training run
a training run              action      ModelBuild       Produced a model file
``models/model.joblib``     artifact    Model            DerivedFrom: a model version derives from it
a registered model version  artifact    ModelPackage     AssociatedWith the registered model;
                                                         ContributedTo each alias that points at it
the validation gate         action      ModelPackage-    AssociatedWith the version it judged
                                        Approval
the registered model        context     ModelPackage-
                                        Group
an alias (``champion``)     context     Endpoint         (what serves)
==========================  ==========  ===============  ========================================

Edges point from source to destination as in SageMaker's ``AddAssociation`` (``DerivedFrom``: "the
destination is a modification of the source"), so descendants are what a node flowed into.
:func:`query_lineage` walks either way; :func:`draw_lineage` draws the graph in layers.

**Which files count.** DVC tracks ``data/raw`` as one folder, so its hash changes whenever any month's
snapshot changes (outcomes arrive every month). But prepare reads only the months of its split, which the
pipeline records in ``metrics.json`` (``train_months``, ``validation_month``, ``test_month``): the graph links
only those files, each by its own md5, so a file still maturing that prepare skipped reaches no model. For a
project without that record, every file of the data version is linked (role ``unknown``).

**The environment.** SageMaker records a training job's container image as an artifact of type ``Image``;
here the environment is the lock file, ``requirements.txt``, whose md5 ``dvc.lock`` records, so a changed
pin reruns training and shows in the lineage as a new ``Image`` node.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import mlflow
import networkx as nx
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset

from . import registry
from .dvc_project import LOCK_FILE, numeric_metrics, read_lock, read_metrics
from .simulator import TARGET

ARTIFACT, ACTION, CONTEXT = "artifact", "action", "context"
CONTRIBUTED_TO, PRODUCED, DERIVED_FROM, ASSOCIATED_WITH = "ContributedTo", "Produced", "DerivedFrom", "AssociatedWith"
ASCENDANTS, DESCENDANTS = "Ascendants", "Descendants"
LAYER = {"batch": 0, "DataSet": 1, "Code": 1, "Parameters": 1, "Image": 1, "ModelBuild": 2, "Model": 3,
         "ModelPackageApproval": 3, "ModelPackage": 4, "ModelPackageGroup": 5, "Endpoint": 5}


# -- recording ------------------------------------------------------------------------------------------
def git(repo: str | Path, *args: str) -> str:
    """A git command's output in ``repo`` (plumbing: nothing is shown)."""
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def lock_hashes(lock: dict) -> dict[str, str | None]:
    """The hashes a lineage needs from a parsed ``dvc.lock``: the raw data, the code, the params, the
    environment (the md5 of the lock file the train stage depends on; ``None`` if it does not) and the model."""
    stages = lock["stages"]
    deps = {d["path"]: d["md5"] for stage in stages.values() for d in stage.get("deps", [])}
    outs = {o["path"]: o["md5"] for stage in stages.values() for o in stage.get("outs", [])}
    code = {path: md5 for path, md5 in sorted(deps.items()) if path.startswith("src/")}
    params = {name: stage.get("params", {}).get("params.yaml", {}) for name, stage in stages.items()}
    train_deps = {d["path"]: d["md5"] for d in stages.get("train", {}).get("deps", [])}
    return {"data": deps["data/raw"].removesuffix(".dir"), "code": _digest(code), "params": _digest(params),
            "environment": train_deps.get(LOCK_FILE), "model": outs["models/model.joblib"]}


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes: what DVC 3 records for a file in ``dvc.lock`` and ``.dvc`` files."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def environment(lock_file: str | Path) -> dict[str, str]:
    """What a bit-for-bit rebuild relies on besides data, code and parameters, as ``env.*`` tags.

    ``env.lock_md5``: the md5 of the pinned lock file (every package version); ``env.python``;
    ``env.platform`` (operating system and CPU architecture); ``env.blas``: the BLAS libraries NumPy and
    SciPy load, with the CPU kernel OpenBLAS chose for this processor (another kernel may round differently).
    """
    import numpy  # noqa: F401  (load the BLAS libraries this process trains with before listing them)
    import scipy.linalg  # noqa: F401
    import threadpoolctl

    blas = sorted({f"{i['internal_api']} {i['version']} {i.get('architecture') or ''}".strip()
                   for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
    return {"env.lock_md5": file_md5(lock_file), "env.python": platform.python_version(),
            "env.platform": f"{platform.system()} {platform.machine()}", "env.blas": "; ".join(blas) or "none"}


def installed_mismatches(lock_file: str | Path, packages=None) -> dict[str, tuple[str, str | None]]:
    """Pinned packages (``name==version`` lines of ``lock_file``) installed at another version, or not at all.

    ``packages`` limits the check to some names (e.g. the ones training imports); ``{}`` means this
    environment matches the lock file.
    """
    from importlib.metadata import PackageNotFoundError, version

    wanted = {name.strip().lower() for name in packages} if packages is not None else None
    found = {}
    for line in Path(lock_file).read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" not in line:
            continue
        name, pinned = (part.strip() for part in line.split("==", 1))
        if wanted is not None and name.lower() not in wanted:
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != pinned:
            found[name] = (pinned, have)
    return found


def _digest(value) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True).encode()).hexdigest()


def flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"C": 1.0}}`` -> ``{"train.C": "1.0"}``: params.yaml as MLflow parameters."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, type(None))) else str(value)
    return flat


@dataclass(frozen=True)
class TrainingRecord:
    """What :func:`record_training_run` wrote: the run, the registered version and the hashes it links."""

    run_id: str
    version: str
    commit: str
    data_md5: str
    model_md5: str
    metrics: dict
    environment_md5: str | None = None


CLOCK_KEYS = ("as_of", "label", "train_months", "validation_month", "test_month")


def record_training_run(repo: str | Path, model_name: str, run_name: str) -> TrainingRecord:
    """Record the DVC pipeline's current result in MLflow, with the links lineage needs, and register it.

    Call it after ``dvc repro`` and the commit that records its ``dvc.lock``. Tags: ``git.*``, ``dvc.*``
    (data, code, params, model and ``dvc.requirements.md5``), ``clock.*`` (from ``metrics.json``) and
    :func:`environment`'s ``env.*``, whose ``env.lock_md5`` must equal the md5 ``dvc.lock`` recorded (else
    the lock file changed after ``dvc repro``: a ``RuntimeError``). The lock file is logged as the
    artifact ``environment/requirements.txt``.
    """
    repo = Path(repo)
    commit = git(repo, "rev-parse", "HEAD")
    if git(repo, "status", "--porcelain"):
        raise RuntimeError("commit the pipeline's results first: lineage must point at a commit that has them")
    hashes = lock_hashes(read_lock(repo))
    env = environment(repo / LOCK_FILE) if (repo / LOCK_FILE).is_file() else {}
    if hashes["environment"] is not None and env.get("env.lock_md5") != hashes["environment"]:
        raise RuntimeError(f"{LOCK_FILE} does not match the md5 dvc.lock recorded for the train stage: run "
                           f"`dvc repro` (and commit) before recording")
    # A sample of the raw files: their columns for the dataset's schema, rows for the model's input example.
    # (MLflow's pandas dataset would infer the schema from every value of every file: seconds per run.)
    sample = pd.concat([pd.read_csv(path, nrows=100) for path in sorted((repo / "data" / "raw").glob("*.csv"))[-3:]],
                       ignore_index=True)
    everything = read_metrics(repo)
    clock = {f"clock.{key}": str(everything[key]) for key in CLOCK_KEYS if key in everything}
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"git.commit": commit, "git.subject": git(repo, "log", "-1", "--format=%s"),
                         "dvc.data_raw.md5": hashes["data"], "dvc.code.md5": hashes["code"],
                         "dvc.params.md5": hashes["params"], "dvc.model.md5": hashes["model"],
                         "dvc.requirements.md5": hashes["environment"] or "none", **clock, **env})
        mlflow.log_params(flat_params(yaml.safe_load((repo / "params.yaml").read_text())))
        metrics = numeric_metrics(everything)
        mlflow.log_metrics(metrics)
        if env:
            mlflow.log_artifact(str(repo / LOCK_FILE), artifact_path="environment")
        # The dataset's digest is DVC's hash of data/raw: the two tools name the same data the same way. It is
        # logged as metadata (source, name, digest, schema): the data itself stays in DVC.
        with warnings.catch_warnings():  # hints that do not apply: no missing values; a local source
            warnings.filterwarnings("ignore", message=".*integer column|The specified dataset source")
            described = mlflow.data.from_pandas(sample, source="data/raw", targets=TARGET)
            dataset = MetaDataset(described.source, name="data/raw", digest=hashes["data"], schema=described.schema)
            mlflow.log_input(dataset, context="training")
        info = registry.log_credit_model(joblib.load(repo / "models" / "model.joblib"), sample)
    version = registry.register(info.model_uri, model_name, tags={
        "git.commit": commit, "dvc.data_raw.md5": hashes["data"], "dvc.model.md5": hashes["model"],
        **({"env.lock_md5": env["env.lock_md5"]} if env else {})})
    git(repo, "tag", f"model-v{version.version}", commit)
    return TrainingRecord(run.info.run_id, str(version.version), commit, hashes["data"], hashes["model"], metrics,
                          hashes["environment"])


# -- reading DVC ------------------------------------------------------------------------------------------
def dir_manifest(repo: str | Path, dir_md5: str) -> list[dict]:
    """The files of a DVC-tracked directory version: ``[{"relpath": ..., "md5": ...}, ...]``.

    DVC stores a directory as a JSON manifest in its cache, named by the directory's hash (the same list
    ``dvc ls --json --rev <commit> data/raw`` prints, without starting a process).
    """
    md5 = dir_md5.removesuffix(".dir")
    path = Path(repo) / ".dvc" / "cache" / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest for data version {md5[:8]} in the DVC cache: run `dvc fetch` first")
    return json.loads(path.read_text())


def lock_at(repo: str | Path, commit: str) -> dict:
    """``dvc.lock`` as it was at ``commit``."""
    return yaml.safe_load(git(repo, "show", f"{commit}:dvc.lock"))


def metrics_at(repo: str | Path, commit: str) -> dict:
    """``metrics.json`` as it was at ``commit`` (``{}`` if the commit has none)."""
    try:
        return json.loads(git(repo, "show", f"{commit}:metrics.json"))
    except subprocess.CalledProcessError:
        return {}


def _months(span: str) -> list[str]:
    """``"2022-11..2023-01"`` -> ``["2022-11", "2022-12", "2023-01"]``."""
    first, _, last = span.partition("..")
    return [str(p) for p in pd.period_range(first, last or first, freq="M")]


def read_split(metrics: dict) -> dict[str, str]:
    """``{"2022-11.csv": "train", ..., "2023-03.csv": "test"}``: the files prepare read and what for, from the
    clock that ``metrics.json`` records; ``{}`` if it records none."""
    if not {"train_months", "validation_month", "test_month"} <= set(metrics):
        return {}
    roles = {f"{month}.csv": "train" for month in _months(metrics["train_months"])}
    roles[f"{metrics['validation_month']}.csv"] = "validation"
    roles[f"{metrics['test_month']}.csv"] = "test"
    return roles


# -- the graph ---------------------------------------------------------------------------------------------
def _add(graph: nx.DiGraph, node: str, kind: str, type_: str, label: str, **properties) -> str:
    if node not in graph:
        graph.add_node(node, kind=kind, type=type_, label=label, layer=LAYER.get(properties.pop("layer_key", type_)),
                       **properties)
    return node


def build_lineage(repo: str | Path, model_name: str, client: MlflowClient | None = None) -> nx.DiGraph:
    """The lineage of every version of ``model_name``: batches -> data -> training -> model -> versions -> aliases."""
    client = client or MlflowClient()
    graph = nx.DiGraph(model_name=model_name)
    group = _add(graph, f"group:{model_name}", CONTEXT, "ModelPackageGroup", "registered model")
    aliases = client.get_registered_model(model_name).aliases
    for mv in sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version)):
        run = client.get_run(mv.run_id)
        commit = run.data.tags["git.commit"]
        hashes = lock_hashes(lock_at(repo, commit))
        manifest = dir_manifest(repo, hashes["data"])
        roles = read_split(metrics_at(repo, commit))
        data = _add(graph, f"data:{hashes['data'][:8]}", ARTIFACT, "DataSet", f"data/raw {hashes['data'][:6]}",
                    md5=hashes["data"], files=len(manifest))
        for entry in manifest:
            if roles and entry["relpath"] not in roles:
                continue  # in data/raw, but prepare did not read it (a month still maturing, or too old)
            batch = _add(graph, f"batch:{entry['relpath']}@{entry['md5'][:8]}", ARTIFACT, "DataSet",
                         entry["relpath"].removesuffix(".csv"), layer_key="batch", md5=entry["md5"],
                         relpath=entry["relpath"])
            graph.add_edge(batch, data, association=CONTRIBUTED_TO, role=roles.get(entry["relpath"], "unknown"))
        missing = set(roles) - {entry["relpath"] for entry in manifest}
        if missing:
            raise ValueError(f"metrics.json at {commit[:8]} names {sorted(missing)}, which data/raw lacks there")
        code = _add(graph, f"code:{hashes['code'][:8]}", ARTIFACT, "Code", f"src/ {hashes['code'][:6]}")
        params = _add(graph, f"params:{hashes['params'][:8]}", ARTIFACT, "Parameters",
                      f"params {hashes['params'][:6]}", values=dict(run.data.params))
        training = _add(graph, f"training:v{mv.version}", ACTION, "ModelBuild", run.info.run_name or "training",
                        commit=commit, run_id=mv.run_id, metrics=dict(run.data.metrics),
                        clock={k.removeprefix("clock."): v for k, v in run.data.tags.items() if k.startswith("clock.")})
        sources = [data, code, params]
        if hashes["environment"] is not None:
            sources.append(_add(graph, f"env:{hashes['environment'][:8]}", ARTIFACT, "Image",
                                f"{LOCK_FILE} {hashes['environment'][:6]}", md5=hashes["environment"]))
        for source in sources:
            graph.add_edge(source, training, association=CONTRIBUTED_TO)
        model = _add(graph, f"model:{hashes['model'][:8]}", ARTIFACT, "Model", f"model {hashes['model'][:6]}",
                     md5=hashes["model"])
        graph.add_edge(training, model, association=PRODUCED)
        version = _add(graph, f"version:{mv.version}", ARTIFACT, "ModelPackage", f"v{mv.version}",
                       version=str(mv.version), tags=dict(mv.tags))
        graph.add_edge(model, version, association=DERIVED_FROM)
        graph.add_edge(version, group, association=ASSOCIATED_WITH)
        if "gate.decision" in mv.tags:
            gate = _add(graph, f"gate:{mv.version}", ACTION, "ModelPackageApproval",
                        f"gate v{mv.version}: {mv.tags['gate.decision']}", decision=mv.tags["gate.decision"])
            graph.add_edge(gate, version, association=ASSOCIATED_WITH)
    for alias, number in aliases.items():
        endpoint = _add(graph, f"alias:{alias}", CONTEXT, "Endpoint", f"@{alias}")
        graph.add_edge(f"version:{number}", endpoint, association=CONTRIBUTED_TO)
    return graph


def query_lineage(graph: nx.DiGraph, start: str, direction: str = DESCENDANTS, type_: str | None = None) -> list[str]:
    """Every node reachable from ``start`` (``Descendants``: downstream; ``Ascendants``: upstream), optionally
    only those of one entity type (``"ModelPackage"``, ``"DataSet"``, ...), sorted by layer then name."""
    if start not in graph:
        raise KeyError(f"{start!r} is not in the lineage graph; nodes look like {sorted(graph)[:3]}")
    if direction not in (ASCENDANTS, DESCENDANTS):
        raise ValueError(f"direction must be {ASCENDANTS!r} or {DESCENDANTS!r}, got {direction!r}")
    found = nx.descendants(graph, start) if direction == DESCENDANTS else nx.ancestors(graph, start)
    if type_ is not None:
        found = {n for n in found if graph.nodes[n]["type"] == type_}
    return sorted(found, key=lambda n: (graph.nodes[n]["layer"], n))


def batches(graph: nx.DiGraph) -> list[str]:
    """The batch-file nodes (``relpath`` set), in order."""
    return sorted(n for n, d in graph.nodes(data=True) if "relpath" in d)


def batch_node(graph: nx.DiGraph, relpath: str, md5: str | None = None) -> str:
    """The node of the batch file ``relpath`` (``"2024-04.csv"``): the one version of it in the lineage, or
    the version whose md5 starts with ``md5`` (a month's file changes as its outcomes arrive)."""
    found = [n for n, d in graph.nodes(data=True)
             if d.get("relpath") == relpath and (md5 is None or d["md5"].startswith(md5))]
    if len(found) != 1:
        versions = sorted(graph.nodes[n]["md5"][:8] for n in graph if graph.nodes[n].get("relpath") == relpath)
        raise KeyError(f"batch {relpath!r}{f' with md5 {md5}' if md5 else ''} appears {len(found)} times in the "
                       f"lineage (expected once); its versions there: {versions or 'none'}"
                       + ("; pass md5=... to pick one" if len(versions) > 1 and md5 is None else ""))
    return found[0]


def versions_reached(graph: nx.DiGraph, start: str) -> list[str]:
    """The registered versions downstream of ``start`` (as strings, in order)."""
    reached = query_lineage(graph, start, DESCENDANTS, "ModelPackage")
    return sorted((graph.nodes[n]["version"] for n in reached), key=int)


def table(graph: nx.DiGraph) -> pd.DataFrame:
    """One row per entity: its kind, type and label (what a lineage query returns, as a table)."""
    rows = [{"node": n, "kind": d["kind"], "type": d["type"], "label": d["label"]} for n, d in graph.nodes(data=True)]
    return pd.DataFrame(rows).assign(layer=lambda t: t["node"].map(lambda n: graph.nodes[n]["layer"])).sort_values(
        ["layer", "node"]).drop(columns="layer").reset_index(drop=True)


# -- drawing ------------------------------------------------------------------------------------------------
KIND_STYLE = {ARTIFACT: ("o", "#1f77b4"), ACTION: ("s", "#ff7f0e"), CONTEXT: ("D", "#2ca02c")}
EDGE_COLOR = {CONTRIBUTED_TO: "#7f7f7f", PRODUCED: "#ff7f0e", DERIVED_FROM: "#9467bd", ASSOCIATED_WITH: "#2ca02c"}


def layered_positions(graph: nx.DiGraph) -> dict:
    """x by layer; y so that each column lists its nodes from the oldest model version (top) to the newest."""
    versions = {n: int(d["version"]) for n, d in graph.nodes(data=True) if d["type"] == "ModelPackage"}

    def order(node):
        related = (nx.descendants(graph, node) | nx.ancestors(graph, node) | {node}) & versions.keys()
        return (min((versions[v] for v in related), default=0), graph.nodes[node]["label"])

    layers = {}
    for node, data in graph.nodes(data=True):
        layers.setdefault(data["layer"], []).append(node)
    tallest = max(len(nodes) for nodes in layers.values())
    positions = {}
    for layer, nodes in layers.items():
        for i, node in enumerate(sorted(nodes, key=order)):
            positions[node] = (float(layer), (len(nodes) - 1) / 2 - i if tallest == 1 else
                               ((len(nodes) - 1) / 2 - i) / ((tallest - 1) / 2))
    return positions


def draw_lineage(graph: nx.DiGraph, highlight=(), title: str = "Lineage", ax=None):
    """Draw the graph in layers (data on the left, what serves on the right); ``highlight`` nodes in red."""
    positions = layered_positions(graph)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 5.2))
    else:
        fig = ax.figure
    highlight = set(highlight)
    for association, color in EDGE_COLOR.items():
        edges = [(u, v) for u, v, d in graph.edges(data=True) if d["association"] == association]
        nx.draw_networkx_edges(graph, positions, edgelist=edges, edge_color=color, ax=ax, arrows=True,
                               arrowsize=10, width=1.2, node_size=500, alpha=0.8)
        ax.plot([], [], color=color, label=association)
    for kind, (marker, color) in KIND_STYLE.items():
        nodes = [n for n, d in graph.nodes(data=True) if d["kind"] == kind]
        colors = ["#d62728" if n in highlight else color for n in nodes]
        nx.draw_networkx_nodes(graph, positions, nodelist=nodes, node_shape=marker, node_color=colors,
                               node_size=500, ax=ax, edgecolors="white")
        ax.scatter([], [], marker=marker, color=color, label=f"{kind}")
    labels = {n: d["label"] for n, d in graph.nodes(data=True)}
    for node, (x, y) in positions.items():
        ax.annotate(labels[node], (x, y), xytext=(0, -16), textcoords="offset points", ha="center", fontsize=7.5,
                    color="#d62728" if node in highlight else "black")
    columns = ["batches read", "data / code / params / env", "training (run)", "model / gate",
               "registered versions", "model group / aliases"]
    xs = sorted({round(x, 3) for x, _ in positions.values()})
    for x, name in zip(xs, columns):
        ax.text(x, 1.0, name, ha="center", fontsize=8, color="#555555", transform=ax.get_xaxis_transform())
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=7, frameon=False)
    ax.set_title(title, pad=18)
    ax.axis("off")
    fig.tight_layout()
    return fig
