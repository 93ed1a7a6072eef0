"""Datasets: built-in, Fashion-MNIST's IDX files, user .npz, .csv and image folders; bad data is refused
with one sentence before anything is logged."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import nas.data.builtin
from nas.cli import main
from nas.data import check, fingerprint, load, load_splits, split
from tests.conftest import mlflow_has_no_runs

ROOT = Path(__file__).parents[2]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_splits_are_stratified_fixed_by_seed_and_disjoint() -> None:
    a = load_splits("digits", seed=3)
    b = load_splits("digits", seed=3)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(load_splits("digits", seed=4)) != fingerprint(a)
    for part in (a.y_train, a.y_val, a.y_test):
        shares = np.bincount(part, minlength=10) / len(part)
        assert np.all(np.abs(shares - 0.1) < 0.03)  # every class in every split, in proportion
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert a.input_shape == (8, 8, 1) and a.num_classes == 10


def test_fashion_mnist_reads_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setattr(nas.data.builtin, "FASHION_MNIST_DIR", tmp_path)
    x, y, _ = load("fashion_mnist")
    assert x.shape == (40, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [i % 10 for i in range(30)] + list(range(10))


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nas.data.builtin, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        load("fashion_mnist")


def test_user_npz_and_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mine.npz", x=rng.integers(0, 256, (30, 6, 6), dtype=np.uint8), y=np.arange(30) % 3)
    x, y, _ = load(str(tmp_path / "mine.npz"))
    assert x.shape == (30, 6, 6, 1) and x.max() <= 1.0 and y.tolist()[:4] == [0, 1, 2, 0]
    table, labels = rng.normal(size=(30, 4)), np.arange(30) % 3
    np.savez(tmp_path / "sklearn.npz", X=table, y=labels)  # scikit-learn's names
    np.savez(tmp_path / "plain.npz", table, labels)  # no names: arr_0, arr_1
    for name in ("sklearn.npz", "plain.npz"):
        x, y, _ = load(str(tmp_path / name))
        assert np.array_equal(x, table) and np.array_equal(y, labels), name
    np.savez(tmp_path / "three.npz", table, labels, labels)  # which two? refused, naming what it holds
    with pytest.raises(ValueError, match=r"holds arrays \['arr_0', 'arr_1', 'arr_2'\]; it needs one named 'x'"):
        load(str(tmp_path / "three.npz"))
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / "pets" / name / f"{i}.png")
    x, y, _ = load(str(tmp_path / "pets"))
    assert x.shape == (8, 5, 7, 3) and y.tolist() == ["cat"] * 4 + ["dog"] * 4  # the sub-folders' names
    pets = load_splits(str(tmp_path / "pets"), val_fraction=0.25, test_fraction=0.25)
    assert pets.classes == ("cat", "dog") and sorted(pets.y_train.tolist()) == [0, 0, 1, 1]


def test_class_names_are_numbered_in_sorted_order_and_kept(tmp_path: Path) -> None:
    """String (or bytes) labels, as a scikit-learn user gives them: numbered like LabelEncoder, names kept, and
    kept through a prepared folder; numbered labels have no names."""
    from nas.data import load_prepared, save_prepared

    names = np.array(["zebra", "ant", "mole"])[np.arange(30) % 3]
    x = np.arange(60, dtype=np.float32).reshape(30, 2)
    for y in (names, names.astype("S")):
        splits = split("named", x, y, seed=0)
        assert splits.classes == ("ant", "mole", "zebra") and splits.num_classes == 3
        for xs, ys in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val), (splits.x_test, splits.y_test)):
            index = (xs[:, 0] // 2).astype(int)  # the row each example came from
            assert [splits.classes[i] for i in ys] == names[index].tolist()
    np.savez(tmp_path / "named.npz", x=x, y=names)
    splits = load_splits(str(tmp_path / "named.npz"))
    assert splits.classes == ("ant", "mole", "zebra")
    info = save_prepared(splits, tmp_path / "prepared")
    assert info["classes"] == ["ant", "mole", "zebra"]
    assert load_prepared(tmp_path / "prepared").classes == splits.classes
    assert split("numbered", x, np.arange(30) % 3).classes == ()
    assert split("flags", x, np.arange(30) % 2 == 1).classes == ("False", "True")
    assert "classes" not in save_prepared(load_splits("digits"), tmp_path / "digits")


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((30, 3, 3, 1, 1)), np.arange(30) % 3, "x has shape"),
        (np.zeros((30, 4)), np.arange(29) % 3, "y has shape"),
        (np.full((30, 4), np.nan), np.arange(30) % 3, "NaN, infinite"),
        (np.zeros((30, 4)), (np.arange(30) % 3) + 0.5, "they must be integers"),
        (np.zeros((30, 4)), np.zeros(30, int), "one class only"),
        (np.zeros((30, 4)), np.r_[np.zeros(28, int), 1, 1], "class 1 has 2 examples"),
        (np.zeros((30, 4)), np.r_[np.full(28, 5), 9, 9], "class '9' has 2 examples"),  # codes name their class
        (np.zeros((12, 4)), np.arange(12) % 4, "validation split of 2 for 4 classes"),
    ],
)
def test_bad_arrays_are_refused(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split("bad", x, y)
    if "'" not in message:  # check() reads labels numbered 0 to K-1, and names them by number
        with pytest.raises(ValueError, match=message):
            check(x, y, val_fraction=0.2, test_fraction=0.2)


def test_check_wants_labels_numbered_from_0() -> None:
    with pytest.raises(ValueError, match="the integers 0 to K-1"):
        check(np.zeros((30, 4)), (np.arange(30) % 3) + 1, val_fraction=0.2, test_fraction=0.2)


def test_integer_codes_are_numbered_in_order_and_named(tmp_path: Path) -> None:
    """Labels 1..3 (a UCI table's), -1 and 1, or 10 and 2 are numbered in numeric order like LabelEncoder, their
    codes kept as names; labels already 0 to K-1 (also as floats 0.0, 1.0) keep their numbers and have no names."""
    x = np.arange(60, dtype=np.float32).reshape(30, 2)
    for y, classes in (
        ((np.arange(30) % 3) + 1, ("1", "2", "3")),
        (np.where(np.arange(30) % 2 == 0, -1, 1), ("-1", "1")),
        (np.where(np.arange(30) % 2 == 0, 10, 2), ("2", "10")),
        ((np.arange(30) % 3 + 1).astype(float), ("1", "2", "3")),
    ):
        splits = split("codes", x, y, seed=0)
        assert splits.classes == classes
        index = (splits.x_train[:, 0] // 2).astype(int)
        assert [splits.classes[i] for i in splits.y_train] == [str(int(v)) for v in y[index]]
    assert split("numbered", x, (np.arange(30) % 3).astype(float)).classes == ()
    (tmp_path / "uci.csv").write_text("".join(f"{i},{i % 3 + 1}\n" for i in range(30)))
    assert load_splits(str(tmp_path / "uci.csv")).classes == ("1", "2", "3")


def _write(name: str, content: str | bytes):
    """A maker of file ``name`` holding ``content``."""
    if isinstance(content, bytes):
        return lambda p: (p / name).write_bytes(content)
    return lambda p: (p / name).write_text(content)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.savez(p / "d.npz", x=np.full((30, 4), np.inf), y=np.arange(30) % 3), "NaN, infinite"),
        (lambda p: np.savez(p / "d.npz", x=np.zeros((30, 4)), y=np.zeros(30, int)), "one class only"),
        (
            lambda p: np.savez(p / "d.npz", x=np.zeros((30, 4)), y=np.r_[np.zeros(14, int), np.ones(14, int), 2, 2]),
            "class 2 has 2 examples; each class needs at least 3",
        ),
        (
            lambda p: np.savez(p / "d.npz", features=np.zeros((30, 4))),
            "needs one named 'x' (or 'X') and one named 'y', or exactly two unnamed ones",
        ),
        (_write("d.npz", b"not a zip"), "cannot be read as a .npz file"),
        (  # text labels as pandas' to_numpy() gives them: objects, which only a pickle holds
            lambda p: np.savez(p / "d.npz", x=np.zeros((30, 4)), y=np.array(["a", "b", "c"] * 10, dtype=object)),
            "d.npz holds an array of Python objects (as pandas gives for text), which is not loaded; save labels as",
        ),
        (_write("d.csv", "a,b,label\n1,2,x\n3,,y\n"), "d.csv line 3, column 'b' is empty; fill in or impute"),
        (_write("d.csv", "1,2,0\n1,red,1\n"), "d.csv line 2, column 2 is 'red', not a number; encode text"),
        (_write("d.csv", ",2,0\n1,2,1\n"), "d.csv line 1, column 1 is empty; fill in"),  # data, not a header
        (_write("d.csv", "1,2,0\n\n1,2\n"), "d.csv line 3 has 2 fields where the first row has 3"),
        (_write("d.csv", "a;b;label\n1,5;2;x\n"), "d.csv line 2, column 'a' is '1,5', a decimal comma; write"),
        (_write("d.csv", "a,b,label\n"), "d.csv holds no rows of data"),
        (_write("d.csv", "0\n1\n"), "d.csv has one column; it needs feature columns, then the label"),
        (_write("d.csv", b"\xff\xfe\x00x"), "d.csv cannot be read as a CSV file"),
        (_write("d.csv", "".join(f"{i},{-1 if i == 5 else i % 3}\n" for i in range(30))), "class '-1' has 1 example;"),
        (_write("d.csv", "a,label\n1,x\n2,\n"), "d.csv line 3: the label (last column) is missing; drop unlabelled"),
        (_write("d.csv", "a,label\n1,0\n2,NaN\n"), "d.csv line 3: the label (last column) is missing"),
        (_write("d.csv", "a,b,label\n1,2,0\n3,nan,1\n"), "d.csv line 3, column 'b' is 'nan', not a finite number"),
        (_write("d.csv", "1,2,0\n-inf,2,1\n"), "d.csv line 2, column 1 is '-inf', not a finite number; fill in"),
        (
            lambda p: np.savez(p / "d.npz", x=np.zeros((30, 4)), y=np.r_[np.zeros(29), 0.5]),
            "labels are float64 values such as 0.5; they must be integers",  # not np.float64(0.5)
        ),
        (  # a regression target: a measurement, not a class
            _write("d.csv", "x,price\n" + "".join(f"{i},{10 + i * 0.37:.2f}\n" for i in range(30))),
            "d.csv line 3: the label (last column) is '10.37', a number that is not a class; nas search classifies",
        ),
        (  # a count or a measurement in whole numbers: most "classes" are seen once or twice
            _write("d.csv", "x,days\n" + "".join(f"{i},{25 + (i * 7) % 23}\n" for i in range(40))),
            "class '27' has 1 example; each class needs at least 3 (train, validation, test); 23 of the 23 classes "
            "have fewer than 3, so the label looks like a measurement or an identifier, not a class (nas search "
            "classifies)",
        ),
    ],
)
def test_bad_data_through_the_command_line_logs_nothing(
    make, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    make(tmp_path)
    (data,) = [f for f in tmp_path.iterdir() if f.name.startswith("d.")]
    assert main(["search", "--set", f"data.dataset={data}", "--local"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert mlflow_has_no_runs(uri)


def test_user_csv_with_or_without_a_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .csv as a spreadsheet exports it: a header (a byte-order mark, quoted names, a blank line at the end)
    and labels by name; or no header and numbered labels; or separated by semicolons, tabs or bars. Features are
    read as numbers, labels as given."""
    rows = [(i * 0.5, -i, ["setosa", "versicolor", "virginica"][i % 3]) for i in range(30)]
    text = '\ufeff"sepal, length",width,species\n' + "".join(f"{a},{b},{c}\n" for a, b, c in rows) + "\n"
    (tmp_path / "named.csv").write_text(text, encoding="utf-8")
    x, y, _ = load(str(tmp_path / "named.csv"))
    assert x.dtype == np.float32 and x.shape == (30, 2) and x[3].tolist() == [1.5, -3.0]
    assert y.tolist() == [c for _, _, c in rows]
    splits = load_splits(str(tmp_path / "named.csv"))
    assert splits.classes == ("setosa", "versicolor", "virginica") and splits.input_shape == (2,)
    (tmp_path / "plain.csv").write_text("".join(f"{a},{b},{i % 3}\n" for i, (a, b, _) in enumerate(rows)))
    x, y, _ = load(str(tmp_path / "plain.csv"))
    assert x.shape == (30, 2) and y.dtype == np.int64 and y.tolist()[:4] == [0, 1, 2, 0]
    assert load_splits(str(tmp_path / "plain.csv")).classes == ()
    # pandas' header for unnamed features (0, 1) over a named label; labels written as floats are numbers
    (tmp_path / "frame.csv").write_text("0,1,y\n" + "".join(f"{a},{b},{i % 3}.0\n" for i, (a, b, _) in enumerate(rows)))
    x, y, _ = load(str(tmp_path / "frame.csv"))
    assert x.shape == (30, 2) and x[3].tolist() == [1.5, -3.0]
    assert y.dtype == np.int64 and y.tolist()[:4] == [0, 1, 2, 0]
    for sep, suffix in ((";", "csv"), ("\t", "tsv"), ("|", "csv")):  # as other locales and tools export tables
        body = "".join(f"{a}{sep}{b}{sep}{c}\n" for a, b, c in rows)
        (tmp_path / f"other.{suffix}").write_text(f"a{sep}b{sep}label\n{body}")
        x, y, _ = load(str(tmp_path / f"other.{suffix}"))
        assert x.shape == (30, 2) and x[3].tolist() == [1.5, -3.0] and y.tolist() == [c for _, _, c in rows]
    with pytest.raises(ValueError, match="does not exist"):
        load(str(tmp_path / "missing.csv"))
    monkeypatch.setenv("HOME", str(tmp_path))  # a path from the home folder, as a settings file may write it
    assert load_splits("~/plain.csv").x_train.shape[1] == 2


def test_a_frame_written_by_pandas_or_r_reads_as_it_was(tmp_path: Path) -> None:
    """``DataFrame.to_csv`` writes the index as an unnamed first column (0, 1, 2, ..., or whatever a shuffle or a
    concatenation left), R's ``write.csv`` its row names under ""; neither is read as a feature (on data sorted by
    class it would give the class away). A boolean column (True, False; R's TRUE, FALSE) is read as 1 and 0."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "a": np.arange(30) * 0.5,
            "flag": np.arange(30) % 4 == 0,
            "b": -np.arange(30.0),
            "species": ["x", "y", "z"] * 10,
        }
    )
    frame.to_csv(tmp_path / "indexed.csv")  # pandas' default: index=True
    frame.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv")
    pd.concat([frame[:15], frame[15:].reset_index(drop=True)]).to_csv(tmp_path / "joined.csv")  # index 0..14 twice
    rows = "".join(
        f'"{i + 1}",{a},{str(f).upper()},{b},"{c}"\n' for i, (a, f, b, c) in enumerate(frame.itertuples(index=False))
    )
    (tmp_path / "r.csv").write_text('"","a","flag","b","species"\n' + rows)
    expected = frame[["a", "flag", "b"]].to_numpy(np.float32).tolist()
    for name in ("indexed.csv", "shuffled.csv", "joined.csv", "r.csv"):
        x, y, _ = load(str(tmp_path / name))
        assert x.shape == (30, 3), name
        order = np.argsort(x[:, 0])  # the shuffled file's rows in the frame's order
        assert x[order].tolist() == expected, name
        assert y[order].tolist() == frame["species"].tolist(), name
    (tmp_path / "named.csv").write_text("id,a,label\n" + "".join(f"{i},{i * 2},{i % 3}\n" for i in range(30)))
    assert load(str(tmp_path / "named.csv"))[0].shape == (30, 2)  # a named column is a feature, index or not


def test_prepared_folder_round_trips_byte_for_byte(tmp_path) -> None:
    from nas.data import fingerprint, load_prepared, load_splits, save_prepared

    splits = load_splits("digits", seed=3)
    info = save_prepared(splits, tmp_path / "a")
    save_prepared(splits, tmp_path / "b")
    for part in ("train", "val", "test"):  # repeatable bytes: DVC sees unchanged data as unchanged
        assert (tmp_path / "a" / f"{part}.npz").read_bytes() == (tmp_path / "b" / f"{part}.npz").read_bytes()
    again = load_prepared(tmp_path / "a")
    assert fingerprint(again) == fingerprint(splits) == info["fingerprint"]
    assert again.name == "digits" and load_splits(str(tmp_path / "a")).x_val.shape == splits.x_val.shape


def _table(path: Path) -> list[tuple[int, str, float, float, str]]:
    """A table as exports often lay it out: an identifier first, the label second, features after it, a date last."""
    rows = [(1000 + i, ["ant", "bee", "cat"][i % 3], i * 0.5, -i, f"2026-01-{i % 28 + 1:02d}") for i in range(30)]
    path.write_text("id,kind,a,b,seen\n" + "".join(f"{i},{k},{a},{b},{d}\n" for i, k, a, b, d in rows))
    return rows


def test_a_label_column_named_anywhere_and_columns_left_out(tmp_path: Path) -> None:
    """``data.label`` names the label's column, wherever the header has it; ``data.ignore_columns`` names columns not
    to read (an identifier would be a feature that gives away nothing but noise, a date is not a number). The feature
    columns' names go with the splits, the prepared folder and every logged model's metadata."""
    from nas.data import load_prepared, save_prepared

    rows = _table(tmp_path / "t.csv")
    x, y, features = load(str(tmp_path / "t.csv"), label="kind", ignore=["id", "seen"])
    assert features == ("a", "b") and x.shape == (30, 2) and x[3].tolist() == [1.5, -3.0]
    assert y.tolist() == [k for _, k, _, _, _ in rows]
    x, y, features = load(str(tmp_path / "t.csv"), label="b", ignore=["seen", "kind"])  # any column, numbers too
    assert features == ("id", "a") and y.dtype == np.int64 and y.tolist()[:3] == [0, -1, -2]
    splits = load_splits(str(tmp_path / "t.csv"), label="kind", ignore=["id", "seen"])
    assert splits.features == ("a", "b") and splits.classes == ("ant", "bee", "cat")
    assert splits.names == {"classes": ["ant", "bee", "cat"], "features": ["a", "b"]}
    info = save_prepared(splits, tmp_path / "prepared")
    assert info["features"] == ["a", "b"] and load_prepared(tmp_path / "prepared").features == ("a", "b")
    assert load_splits(str(tmp_path / "prepared"), label="kind").features == ("a", "b")  # applied when prepared
    # pandas' index column is still left out, and without a label the last column is the label, as before
    import pandas as pd

    pd.read_csv(tmp_path / "t.csv").to_csv(tmp_path / "framed.csv")
    assert load(str(tmp_path / "framed.csv"), label="kind", ignore=["seen"]).features == ("id", "a", "b")
    assert load_splits("digits").names == {}


@pytest.mark.parametrize(
    ("label", "ignore", "message"),
    [
        ("species", (), "data.label='species' is not a column of {t}; its header names 'id', 'kind', 'a', 'b', 'seen'"),
        ("kind", ("ID",), "data.ignore_columns='ID' is not a column of {t}; its header names 'id', 'kind'"),
        ("kind", ("kind", "seen"), "data.ignore_columns names the label 'kind'; leave it out of the list"),
        ("kind", ("id", "a", "b", "seen"), "{t} has no feature column left once the label and data.ignore_columns"),
        ("", ("seen",), "data.ignore_columns names the label 'seen' (the last column, as data.label is empty); "),
    ],
)
def test_columns_picked_by_a_name_the_header_lacks_are_refused(
    label: str, ignore: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    _table(tmp_path / "t.csv")
    with pytest.raises(ValueError) as raised:
        load(str(tmp_path / "t.csv"), label=label, ignore=ignore)
    assert message.format(t=tmp_path / "t.csv") in str(raised.value)


def test_a_label_named_for_data_without_a_header_or_not_a_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("".join(f"{i * 0.5},{-i},{i % 3}\n" for i in range(30)))
    with pytest.raises(ValueError, match=r"plain\.csv has no header row naming its columns; data\.label and data\.ig"):
        load(str(tmp_path / "plain.csv"), label="kind")
    (tmp_path / "twice.csv").write_text("a,a,kind\n" + "".join(f"{i},{i},{i % 3}\n" for i in range(30)))
    with pytest.raises(
        ValueError, match=r"data\.ignore_columns='a' names 2 columns of .*twice\.csv; rename them apart"
    ):
        load(str(tmp_path / "twice.csv"), ignore=["a"])
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 2)), y=np.arange(30) % 3)
    for name in (str(tmp_path / "d.npz"), "digits"):
        with pytest.raises(ValueError, match=f"data.label='y' picks columns of a .csv or .tsv table, and '{name}'"):
            load_splits(name, label="y")
    with pytest.raises(ValueError, match=r"data.ignore_columns=\['id'\] picks columns of a .csv or .tsv table"):
        load("digits", ignore=["id"])


def test_column_settings_through_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``--set data.label=... --set data.ignore_columns=a,b`` (or a YAML list) reach the data; a name the table
    lacks, or a list of something else, is refused in one sentence with nothing logged."""
    from nas.drivers.config import load as load_settings

    monkeypatch.chdir(tmp_path)
    _table(tmp_path / "t.csv")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for given in ("id,seen", "[id, seen]", "[ id , seen ]"):
        settings = load_settings(None, ["data.label=kind", f"data.ignore_columns={given}"])
        assert settings["data"]["ignore_columns"] == ["id", "seen"] and settings["data"]["label"] == "kind"
    assert load_settings(None, ["data.label=2024"])["data"]["label"] == "2024"  # a column named by a number
    assert load_settings(None, ["data.ignore_columns="])["data"]["ignore_columns"] == []
    for sets, message in (
        (["data.label=species"], "data.label='species' is not a column of"),
        (  # the label left last: the label's column, in the middle, reads as a text feature
            [],
            "line 2, column 'kind' is 'ant', not a number; encode text features as numbers first (data.label names the "
            "label's column, data.ignore_columns columns not to read)",
        ),
        (["data.label=kind", "data.ignore_columns=[id, id]"], "data.ignore_columns=['id', 'id'] must be a list of "),
        (
            ["data.ignore_columns={a: 1}"],
            "data.ignore_columns={'a': 1} must be a list of column names, e.g. [id, date]",
        ),
    ):
        assert (
            main(["search", "--set", f"data.dataset={tmp_path / 't.csv'}", *[f"--set={s}" for s in sets], "--local"])
            == 2
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert mlflow_has_no_runs(uri)
