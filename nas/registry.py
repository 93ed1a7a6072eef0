"""MLflow Model Registry and run links for the DVC pipeline (one of the modules that import MLflow).

``register_final`` puts the final model in the registry as a Keras model with a signature and
an input example, links the version to the search's parent run, points the alias ``champion`` at
it, and logs ``ModelRegistered`` in the search's event log. It is idempotent: the version carries
the sha256 of the model's weights, and registering the same weights again finds that version
instead of creating another.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nas.data import Splits
from nas.event_log.mlflow import MlflowEventLog
from nas.search import SearchService
from nas.weights import Weights

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


def link_data(log: MlflowEventLog, splits: Splits, source: Path) -> dict[str, str]:
    """Tag the search's parent run with the Git commit and the data it read (DVC md5 and our fingerprint),
    and log the training data as the run's input dataset (once). Returns the tags."""
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.entities import DatasetInput, InputTag

    from nas.data import fingerprint

    parent = log.parent_run()
    if parent is None:
        raise ValueError(f"search {log.search_id!r} has no parent run to link the data to")
    tags = {
        "nas.git_commit": git_commit() or "none",
        "nas.data_source": str(source),
        "nas.data_dvc_md5": dvc_md5(source) or "none",
        "nas.data_fingerprint": fingerprint(splits),
    }
    run_id = parent.info.run_id
    for key, value in tags.items():
        if parent.data.tags.get(key) != value:
            log.client.set_tag(run_id, key, value)
    if not parent.inputs or not parent.inputs.dataset_inputs:
        digest = tags["nas.data_fingerprint"][:8]
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_numpy(
                splits.x_train, targets=splits.y_train, source=str(source), name=splits.name, digest=digest
            )
        context = InputTag(key="mlflow.data.context", value="training")
        log.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
    return tags


def _log_keras_model(
    log: MlflowEventLog, parent_run_id: str, model: Any, example: np.ndarray, tags: dict[str, str]
) -> str:
    """Log ``model`` as an MLflow LoggedModel of the Keras flavour (signature, input example) from the
    parent run; returns its model id. (``mlflow.keras.log_model`` with an input example fails in
    MLflow 3.17, mlflow/mlflow#16183, so the model is saved into a folder first and then uploaded.)"""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    logged = mlflow.initialize_logged_model(
        name="final-model", source_run_id=parent_run_id, model_type="keras", experiment_id=log.experiment_id, tags=tags
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            path.mkdir()
            meta = Model(artifact_path=logged.artifact_location, model_id=logged.model_id, run_id=parent_run_id)
            mlflow.keras.save_model(model, str(path), mlflow_model=meta, signature=signature, input_example=example[:3])
            log.client.log_model_artifacts(logged.model_id, str(path))
    except Exception:
        mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    log.client.log_outputs(parent_run_id, [LoggedModelOutput(logged.model_id, 0)])
    return logged.model_id


def register_final(
    log: MlflowEventLog,
    model_id: str,
    keras_model: Any,
    weights: Weights,
    example: np.ndarray,
    registered_name: str,
    description: str = "",
) -> tuple[str, bool]:
    """Register ``keras_model`` (the final model of ``model_id``) as a version of ``registered_name``,
    linked to the search's parent run, alias ``champion``; log ModelRegistered. Returns (version, created).

    Registering the same weights again creates nothing: it finds the version, points the alias at
    it and logs the event only if the log lacks it (so an interrupted registration completes).
    """
    from mlflow.exceptions import MlflowException

    service = SearchService(log)
    if not service.state.started:
        raise ValueError(f"there is no search {log.search_id!r} in {log.uri}; run the search stage first")
    parent = log.parent_run()
    assert parent is not None
    client = log.client
    digest = weights_digest(weights)
    try:
        client.create_registered_model(
            registered_name, description="Final models of nas searches (see the nas.* tags of each version)."
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
            "nas.search_id": log.search_id,
            "nas.model_id": model_id,
            "nas.architecture_id": service.state.models[model_id].architecture_id,
            "nas.weights_sha256": digest,
        }
        logged_id = _log_keras_model(log, parent.info.run_id, keras_model, example, tags)
        version = str(
            client.create_model_version(
                registered_name,
                source=f"models:/{logged_id}",
                run_id=parent.info.run_id,
                model_id=logged_id,
                tags=tags,
                description=description or None,
            ).version
        )
    client.set_registered_model_alias(registered_name, ALIAS, version)
    service.model_registered(model_id, registered_name, version)
    return version, created
