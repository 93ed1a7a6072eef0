"""Models in MLflow: the best model of a search as a LoggedModel, the Model Registry, and the data link.

- ``log_best_model`` logs a Keras model (signature, input example) as a LoggedModel whose source is the
  search's parent run, tagged with the model, the training run that made it and the sha256 of its
  weights; the UI's "Register model" works on it. Logging the same weights again finds it instead.
- ``log_ensemble`` does the same for the mean of a search's best few (or a fine-tuned final model), tagged
  with its members.
- ``register`` makes a LoggedModel a version of a registered model, points an alias at it and logs
  ``ModelRegistered``; registering the same weights again finds the version (its tag ``nas.weights_sha256``).
- ``link_data`` tags the parent run with the Git commit and the data it read, and logs the training data
  as the run's input dataset.

None of this touches an event run: event runs stay as their writer left them, and the audit checks them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from nas.architectures.weights import Weights
from nas.data import Splits
from nas.ledger.service import SearchService
from nas.ledger.state import ModelRecord
from nas.tracking.runs import SearchRuns

if TYPE_CHECKING:  # keras loads only where a model is built
    from nas.training.builder import Member

ALIAS = "champion"


def weights_digest(weights: Weights) -> str:
    """sha256 over every weight array (layer ids sorted, shapes and dtypes included): the model's identity."""
    digest = hashlib.sha256()
    for layer_id in sorted(weights):
        for i, array in enumerate(weights[layer_id]):
            a = np.ascontiguousarray(array)
            digest.update(f"{layer_id}/{i}:{a.dtype}:{a.shape}".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()


def ensemble_digest(members: Sequence[Weights]) -> str:
    """The identity of an ensemble's weights: ``weights_digest`` of a lone model, else sha256 over the members'
    digests in order."""
    if len(members) == 1:
        return weights_digest(members[0])
    return hashlib.sha256("\n".join(weights_digest(w) for w in members).encode()).hexdigest()


def git_commit(cwd: Path = Path(".")) -> str | None:
    """The checked-out Git commit of ``cwd``, or None outside a Git repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def dvc_md5(path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 DVC recorded for output ``path`` in ``dvc.lock``, or None if it has none."""
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return None
    for stage in stages.values():
        for out in stage.get("outs", []):
            if Path(out.get("path", "")) == path:
                return out.get("md5")
    return None


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for the duration, then put back (with the variable
    ``MLFLOW_TRACKING_URI``, which ``set_tracking_uri`` also sets). A SQLite registry looks the logged model of
    a ``models:/`` source up through the global URI, not its client's (a TODO in MLflow 3.17), so a process that
    talks to another store too (the DVC stages, the tests) would not find it."""
    import mlflow

    before, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _parent_id(runs: SearchRuns) -> str:
    parent_id = runs.parent_id
    if parent_id is None:
        raise ValueError(f"there is no search {runs.search_id!r} in {runs.client.tracking_uri}; see nas ls")
    return parent_id


def link_data(runs: SearchRuns, splits: Splits, source: str, extra_tags: dict[str, str] | None = None) -> None:
    """Log the training data as the parent run's input dataset (name, digest, source), once, and tag the parent
    with the data's fingerprint and any ``extra_tags`` (the pipeline adds the Git commit and DVC md5)."""
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.entities import DatasetInput, InputTag

    from nas.data import fingerprint

    parent = runs.client.get_run(_parent_id(runs))
    tags = {"nas.data_source": source, "nas.data_fingerprint": fingerprint(splits), **(extra_tags or {})}
    for key, value in tags.items():
        if parent.data.tags.get(key) != value:
            runs.client.set_tag(parent.info.run_id, key, value)
    if not parent.inputs or not parent.inputs.dataset_inputs:
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_numpy(
                splits.x_train,
                targets=splits.y_train,
                source=source,
                name=splits.name,
                digest=tags["nas.data_fingerprint"][:8],
            )
        context = InputTag(key="mlflow.data.context", value="training")
        runs.client.log_inputs(parent.info.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])


def pipeline_tags(source: Path) -> dict[str, str]:
    """What the DVC pipeline adds to the data link: the Git commit and the md5 DVC recorded for ``source``."""
    return {"nas.git_commit": git_commit() or "none", "nas.data_dvc_md5": dvc_md5(source) or "none"}


def find_logged_model(runs: SearchRuns, digest: str) -> str | None:
    """The id of this search's READY LoggedModel with weights ``digest``, if one was logged."""
    found = runs.client.search_logged_models(
        experiment_ids=[runs.experiment_id],
        filter_string=f"tags.`nas.search_id` = '{runs.search_id}' AND tags.`nas.weights_sha256` = '{digest}'",
    )
    ready = [m for m in found if str(m.status).endswith("READY")]
    return ready[0].model_id if ready else None


def log_keras_model(
    runs: SearchRuns,
    name: str,
    keras_model: Any,
    example: np.ndarray,
    tags: dict[str, str],
    metrics: dict[str, float],
    names: Mapping[str, list[str]] | None = None,
) -> str:
    """Log ``keras_model`` as a LoggedModel of the Keras flavour (signature, input example, and ``names``, the
    data's ``Splits.names``, as the MLmodel file's metadata: ``classes`` names the outputs 0, 1, ... and
    ``features`` the input columns, where the data named them) from the search's parent run, with ``tags`` and
    ``metrics``; returns its model id.
    (``mlflow.keras.log_model`` with an input example fails in MLflow 3.17, mlflow/mlflow#16183: the model is
    saved into a folder, then uploaded.)"""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model, infer_signature

    client, parent_id = runs.client, _parent_id(runs)
    signature = infer_signature(example, np.asarray(keras_model.predict(example, verbose=0)))
    logged = client.create_logged_model(
        runs.experiment_id, name=name, source_run_id=parent_id, tags=tags, model_type="keras"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            path.mkdir()
            meta = Model(artifact_path=logged.artifact_location, model_id=logged.model_id, run_id=parent_id)
            mlflow.keras.save_model(
                keras_model,
                str(path),
                mlflow_model=meta,
                signature=signature,
                input_example=example[:3],
                metadata=dict(names) if names else None,
            )
            client.log_model_artifacts(logged.model_id, str(path))
    except Exception:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    now = int(time.time() * 1000)
    client.log_batch(
        parent_id, metrics=[Metric(k, float(v), now, 0, model_id=logged.model_id) for k, v in metrics.items()]
    )
    client.log_outputs(parent_id, [LoggedModelOutput(logged.model_id, 0)])
    return str(logged.model_id)


def log_best_model(
    runs: SearchRuns,
    model: ModelRecord,
    keras_model: Any,
    example: np.ndarray,
    names: Mapping[str, list[str]] | None = None,
) -> str:
    """The LoggedModel of trained model ``model`` (logged now unless it already was, with ``names`` as
    ``log_keras_model`` logs them); returns its id."""
    model_id = model.model_id
    digest = model.weights_sha256 or "unknown"
    found = find_logged_model(runs, digest)
    if found is not None:
        return found
    trained = list(runs.search(f"tags.`nas.role` = 'event' and tags.`nas.seq` = '{model.completed_seq}'"))
    training_run = trained[0].info.run_id if trained else "unknown"
    tags = {
        "nas.search_id": runs.search_id,
        "nas.model_id": model_id,
        "nas.architecture_id": model.architecture_id,
        "nas.weights_sha256": digest,
        "nas.training_run_id": training_run,
        "nas.completed_seq": str(model.completed_seq),
        "mlflow.note.content": (
            f"{model_id} of search {runs.search_id}: {model.arch.param_count:,} parameters, validation accuracy "
            f"{model.val_accuracy:.4f}; trained by run {training_run} (event seq {model.completed_seq})"
        ),
    }
    return log_keras_model(
        runs,
        f"{runs.search_id}-{model_id}",
        keras_model,
        example,
        tags,
        {"val_accuracy": float(model.val_accuracy or 0)},
        names,
    )


def log_ensemble(
    runs: SearchRuns,
    name: str,
    members: Sequence[Member],
    example: np.ndarray,
    tags: dict[str, str],
    metrics: dict[str, float],
    names: Mapping[str, list[str]] | None = None,
) -> tuple[str, str]:
    """The LoggedModel of the mean of ``members`` ((model id, architecture, weights), best first; one member is
    the plain model), as ``nas.training.builder.build_ensemble`` builds it: logged now with ``tags`` (plus
    ``nas.search_id``, ``nas.model_id`` of the best, ``nas.members`` and ``nas.weights_sha256``) and ``metrics``
    unless these weights already were. Returns (its id, the weights' ``ensemble_digest``)."""
    from nas.training.builder import build_ensemble

    ids = [model_id for model_id, _, _ in members]
    digest = ensemble_digest([weights for _, _, weights in members])
    found = find_logged_model(runs, digest)
    if found is not None:
        return found, digest
    tags = {
        "nas.search_id": runs.search_id,
        "nas.model_id": ids[0],
        "nas.members": ",".join(ids),
        "nas.weights_sha256": digest,
        **tags,
    }
    return log_keras_model(runs, name, build_ensemble(list(members)), example, tags, metrics, names), digest


def register(
    runs: SearchRuns,
    service: SearchService,
    model_id: str,
    logged_model_id: str,
    digest: str,
    registered_name: str,
    alias: str | None = ALIAS,
    description: str = "",
    members: Sequence[str] = (),
) -> tuple[str, bool]:
    """Make LoggedModel ``logged_model_id`` (weights ``digest``) a version of ``registered_name``, linked to the
    parent run, with ``alias``; log ModelRegistered (the caller publishes the summary anew). ``members``: the
    models an ensemble averages (tag ``nas.members``; ``model_id`` is its best). Returns (version, created); the
    same weights again find their version (so an interrupted registration completes) instead of adding one."""
    from mlflow.exceptions import MlflowException

    client = runs.client
    try:
        client.create_registered_model(
            registered_name, description="Models found by nas searches (see the nas.* tags of each version)."
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = client.search_model_versions(f"name = '{registered_name}' and tags.`nas.weights_sha256` = '{digest}'")
    created = not found
    if found:
        version = str(min(int(v.version) for v in found))
    else:
        tags = {
            "nas.search_id": runs.search_id,
            "nas.model_id": model_id,
            "nas.architecture_id": service.state.models[model_id].architecture_id,
            "nas.weights_sha256": digest,
        }
        if members:
            tags["nas.members"] = ",".join(members)
        with _global_tracking_uri(client.tracking_uri):
            version = str(
                client.create_model_version(
                    registered_name,
                    source=f"models:/{logged_model_id}",
                    run_id=_parent_id(runs),
                    model_id=logged_model_id,
                    tags=tags,
                    description=description or None,
                ).version
            )
    if alias:
        client.set_registered_model_alias(registered_name, alias, version)
    service.model_registered(model_id, registered_name, version)
    return version, created
