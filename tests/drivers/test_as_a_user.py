"""The command line as users run it: the installed `nas` in a folder of their own, with their own settings
file and their own data, against the Prefect API and an MLflow store of their own."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).parents[2]
NAS = str(Path(sys.executable).parent / "nas")
TINY = {"search": {"max_models": 2, "initial_width": 8}, "train": {"epochs": 1, "min_steps": 0}}


def _settings(path: Path, dataset: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    params["data"]["dataset"] = dataset
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _image_folder(folder: Path) -> None:
    """Three classes of 8x8 grey PNGs (digits 0-2 of scikit-learn), one sub-folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(3):
        (folder / f"class-{label}").mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][:25]):
            Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(folder / f"class-{label}" / f"{i}.png")


def _nas(cwd: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env.pop("NAS_WITNESS", None)
    return subprocess.run([NAS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_own_settings_file_and_own_data_in_a_folder_without_params_yaml(tmp_path: Path) -> None:
    """`nas search --config other.yaml` where no params.yaml lies; a dataset named "2024" (a folder) given with
    --set as a YAML string: both used to fail in the flow, which re-read ./params.yaml and re-parsed the string."""
    work = tmp_path / "my-project"
    work.mkdir()
    _image_folder(work / "2024")
    _settings(work / "other.yaml", "unused")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    done = _nas(work, uri, "search", "--config", "other.yaml", "--set", 'data.dataset="2024"', "--name", "mine")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "search mine: best model" in done.stdout and "head of mine: " in done.stdout
    assert not (work / "params.yaml").exists()
    assert (work / "nas-witness.jsonl").is_file()  # the head, kept beside the user's project
    listed = _nas(work, uri, "ls")
    assert listed.returncode == 0 and "mine" in listed.stdout and "finished" in listed.stdout
    audit = _nas(work, uri, "audit", "mine")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "anchor(s) held" in audit.stdout  # the witness file beside the project was checked


@pytest.mark.slow
def test_a_table_of_raw_features_with_an_older_settings_file_gives_a_model_that_takes_raw_features(
    tmp_path: Path,
) -> None:
    """A user's own table (scikit-learn's breast cancer: 30 features from 0.001 to 4,000, unscaled, labels given
    by name) as a .csv with a header, a patient number first and the diagnosis second, and a settings file written
    before train.min_steps, search.initial_units and data.label existed, the columns picked with --set: the search
    standardises inside the model, and the registered model, loaded back through MLflow, classifies raw rows, its
    outputs and inputs named in its metadata."""
    import mlflow
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    from nas.data import load_splits

    work = tmp_path / "tabular"
    work.mkdir()
    table = load_breast_cancer()
    names = table.target_names[table.target]  # "malignant" (0 in scikit-learn) and "benign" (1)
    with (work / "cells.csv").open("w", newline="") as f:  # as a records system exports it: an id, the label
        writer = csv.writer(f)
        writer.writerow(["patient", "diagnosis", *table.feature_names])
        writer.writerows(
            [9000 + i, name, *row] for i, (row, name) in enumerate(zip(table.data.tolist(), names, strict=True))
        )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["data"]["label"], params["data"]["ignore_columns"]  # a file from before them
    params["train"].update(augment="none", weight_decay=0.0)  # removed since, at what the code now does: ignored
    params["search"].update(max_models=2, strategy="random")
    params["data"]["dataset"] = "cells.csv"
    (work / "old.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    columns = ["--set", "data.label=diagnosis", "--set", "data.ignore_columns=patient"]
    done = _nas(work, uri, "search", "--local", "--config", "old.yaml", *columns, "--name", "cells")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # registered from another folder: the search logged where its data is, not the relative name it was given
    registered = _nas(tmp_path, uri, "register", "cells", "--model-name", "cells-model")
    assert registered.returncode == 0, registered.stdout[-2000:] + registered.stderr[-2000:]

    splits = load_splits(str(work / "cells.csv"), label="diagnosis", ignore=["patient"])
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/cells-model/1")
    probabilities = np.asarray(model.predict(splits.x_test))
    classes = model.metadata.metadata["classes"]
    assert classes == ["benign", "malignant"] == list(splits.classes)  # numbered in sorted order, names kept
    predicted = np.array(classes)[probabilities.argmax(1)]
    accuracy = float(np.mean(predicted == np.array(classes)[splits.y_test]))
    assert accuracy >= 0.9, accuracy  # the raw features, unscaled, are what the model was given
    features = model.metadata.metadata["features"]
    assert features == list(table.feature_names) == list(splits.features)  # not the patient, not the diagnosis
    frame = pd.read_csv(work / "cells.csv")  # as a user reads new rows: the model's columns, in its order
    predicted = np.array(classes)[np.asarray(model.predict(frame[features].to_numpy("float32"))).argmax(1)]
    assert float(np.mean(predicted == frame["diagnosis"].to_numpy())) >= 0.9
    layer = model.get_raw_model().get_layer("normalization_1")
    mean, variance, count = layer.get_weights()
    np.testing.assert_allclose(mean, splits.x_train.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(variance, splits.x_train.var(axis=0), rtol=1e-3)
    assert int(count) == len(splits.x_train)
