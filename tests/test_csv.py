"""The one CSV reader, through every door: read_csv, load_file, `gpubp predict` and `gpubp train --data`.

Files are written the way users write them, by numpy.savetxt and pandas.DataFrame.to_csv,
in their default formats and others, with and without a header. Whatever the format,
every row written comes back, in order, and nothing is skipped without being named.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpubp
from gpubp import cli, datasets

from .conftest import require_module

# A first row that trips a hand-made digit test: exponents, a sign, a fraction below 1e-3.
X = np.array(
    [
        [1e-3, -250.0, 0.5],
        [2.25, 3.0, -0.125],
        [-7.5, 1e-5, 42.0],
        [0.0, 6.0, 1.5e3],
        [11.0, -0.75, 8.0],
    ]
)
NAMES = ["first", "second", "third"]


def pandas():
    return require_module("pandas", "pandas is not installed (pip install 'gpubp[test]' brings it)")


def formatted(fmt):
    """What a reader must get back from numbers written with the %-format `fmt`."""
    return lambda values: np.vectorize(lambda v: float(fmt % v))(values)


def savetxt(fmt="%.18e", header=None, comments=""):
    def write(path, values, names):
        kwargs = {} if fmt is None else {"fmt": fmt}
        if header == "names":
            kwargs |= {"header": ",".join(names), "comments": comments}
        np.savetxt(path, values, delimiter=",", **kwargs)

    return write


def to_csv(header=True, float_format=None):
    def write(path, values, names):
        frame = pandas().DataFrame(values, columns=names)
        frame.to_csv(path, index=False, header=header, float_format=float_format)

    return write


# name: (writer, what comes back, the line the first row is on)
FORMATS = {
    "savetxt default": (savetxt(), formatted("%.18e"), 1),
    "savetxt %g": (savetxt("%g"), formatted("%g"), 1),
    "savetxt %d": (savetxt("%d"), formatted("%d"), 1),
    "savetxt %.3e": (savetxt("%.3e"), formatted("%.3e"), 1),
    "savetxt signs %+.4f": (savetxt("%+.4f"), formatted("%+.4f"), 1),
    "savetxt leading spaces %12.5f": (savetxt("%12.5f"), formatted("%12.5f"), 1),
    "savetxt with a header line": (savetxt("%g", header="names"), formatted("%g"), 2),
    "savetxt with a # header": (savetxt("%.18e", header="names", comments="# "), formatted("%.18e"), 2),
    "pandas default": (to_csv(), lambda values: values, 2),
    "pandas no header": (to_csv(header=False), lambda values: values, 1),
    "pandas %.3e": (to_csv(float_format="%.3e"), formatted("%.3e"), 2),
    "pandas %g no header": (to_csv(header=False, float_format="%g"), formatted("%g"), 1),
}


@pytest.fixture(params=list(FORMATS))
def written(request, tmp_path):
    """(path, the values a reader must return, the line of the first row, the writer) for each format."""
    write, expect, first_line = FORMATS[request.param]
    path = tmp_path / "rows.csv"
    write(path, X, NAMES)
    return path, expect(X), first_line, write


def test_read_csv_returns_every_row_in_order(written):
    path, expected, first_line, _ = written
    table = datasets.read_csv(path)
    np.testing.assert_array_equal(table.values, expected)
    assert table.lines == list(range(first_line, first_line + len(X)))
    if first_line > 1:  # the header line, and only it, is named as skipped
        assert [n for n, _ in table.skipped] == [1]
        assert table.describe().startswith("read 5 rows of 3 values from rows.csv; skipped line 1 (a ")
    else:
        assert table.skipped == [] and table.describe() == "read 5 rows of 3 values from rows.csv"


def test_load_file_takes_the_last_column_as_labels(written, tmp_path):
    path, expected, _, write = written
    labels = [0, 2, 1, 1, 0]
    labelled = tmp_path / "labelled.csv"
    write(labelled, np.column_stack([X, labels]), [*NAMES, "label"])
    X_read, y = datasets.load_file(labelled, dtype="float64")
    np.testing.assert_array_equal(X_read, expected)
    assert y.dtype == np.int64 and y.tolist() == labels


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A saved 3-input classifier (no input scaling), and the net itself."""
    net = gpubp.MLP([3, 5, 4], activation="tanh", loss="cross_entropy", dtype="float64", device="cpu", seed=1)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    gpubp.save(net, path)
    return path, net


def predict(capsys, *args):
    status = cli.main(["predict", *map(str, args), "--device", "cpu"])
    out, err = capsys.readouterr()
    return status, out, err


def test_predict_writes_one_row_per_input_row_in_order(written, model, capsys, tmp_path):
    path, expected, first_line, _ = written
    model_path, net = model
    status, out, err = predict(capsys, model_path, path, "--out", tmp_path / "p.npy")
    assert status == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), net.predict(expected), rtol=1e-6)
    assert "read 5 rows of 3 values from rows.csv" in out
    assert "wrote 5 predictions to" in out
    assert ("skipped line 1" in out) == (first_line > 1)

    status, out, err = predict(capsys, model_path, path, "--out", tmp_path / "p.csv")
    assert status == 0, err
    table = (tmp_path / "p.csv").read_text().splitlines()
    assert len(table) == 1 + len(X)  # a header, then one line per input row
    assert [int(line.split(",")[0]) for line in table[1:]] == net.predict(expected).argmax(axis=1).tolist()


def test_train_reads_every_row_of_a_csv(written, capsys, tmp_path):
    _, _, _, write = written
    rows = np.random.default_rng(0).normal(size=(40, 3))
    data = tmp_path / "train.csv"
    write(data, np.column_stack([rows, rows[:, 0] > 0]), [*NAMES, "label"])
    status = cli.main(
        ["train", "--data", str(data), "--epochs", "1", "--layers", "4", "--val-size", "0", "--test-size", "0.25",
         "--device", "cpu", "--no-progress", "--save", str(tmp_path / "t.safetensors")]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "read 40 rows of 4 values from train.csv" in err
    assert "30 training rows, 10 test" in err  # every row is in the split


@pytest.mark.parametrize("where", ["first", "middle"])
@pytest.mark.parametrize("value, shown", [("inf", "inf"), ("-inf", "-inf"), ("nan", "nan")])
def test_nan_and_infinity_are_refused_never_skipped(tmp_path, model, capsys, where, value, shown):
    row = 0 if where == "first" else 2
    lines = [",".join(f"{v:.18e}" for v in r) for r in X]
    lines[row] = ",".join([value, *lines[row].split(",")[1:]])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    message = f"line {row + 1}, column 1 is {shown}: the input holds NaN or infinite values"
    status, out, err = predict(capsys, model[0], path, "--out", tmp_path / "p.npy")
    assert status == 2 and message in err and not (tmp_path / "p.npy").exists()
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("".join(line + ",1\n" for line in lines))
    with pytest.raises(gpubp.DatasetError, match=f"line {row + 1}, column 1 is {shown}: the data holds NaN"):
        datasets.load_file(labelled)


def test_pandas_writes_nan_as_an_empty_field_which_is_a_missing_value(tmp_path):
    pd = pandas()
    frame = pd.DataFrame(X, columns=NAMES)
    frame.iloc[0, 1] = np.nan
    frame.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(gpubp.DatasetError, match="line 2, column 2 is empty: a missing value"):
        datasets.read_csv(tmp_path / "a.csv")
    frame.to_csv(tmp_path / "b.csv", index=False, header=False)  # the first line must not become a header
    with pytest.raises(gpubp.DatasetError, match="line 1, column 2 is empty: a missing value"):
        datasets.read_csv(tmp_path / "b.csv")
    pd.DataFrame({"a": [1.0, np.nan, 3.0]}).to_csv(tmp_path / "c.csv", index=False)  # one column: a quoted ""
    with pytest.raises(gpubp.DatasetError, match="line 3, column 1 is empty: a missing value"):
        datasets.read_csv(tmp_path / "c.csv")


def test_pandas_index_and_unnamed_columns_are_pointed_out(tmp_path):
    pd = pandas()
    pd.DataFrame(X).to_csv(tmp_path / "index.csv")  # pandas' defaults: the index, and columns 0, 1, 2
    with pytest.raises(gpubp.DatasetError, match=r"line 1 \(',0,1,2'\) is the header pandas writes.*index=False"):
        datasets.read_csv(tmp_path / "index.csv")
    pd.DataFrame(X, columns=NAMES).to_csv(tmp_path / "named.csv")  # named columns and the index
    table = datasets.read_csv(tmp_path / "named.csv")
    assert table.values.shape == (5, 4) and "first column has no name, as pandas writes its index" in table.note
    pd.DataFrame(X).to_csv(tmp_path / "numbers.csv", index=False)  # a header of numbers 0,1,2: read as data
    table = datasets.read_csv(tmp_path / "numbers.csv")
    assert len(table.values) == 6 and "line 1 ('0,1,2') was read as data" in table.describe()
    np.testing.assert_array_equal(datasets.read_csv(tmp_path / "numbers.csv", header="yes").values, X)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holds no rows of numbers: it is empty"),
        ("\n\n# only a comment\n", "holds no rows of numbers"),
        ("a,b,c\n", "holds a header on line 1 and no rows of numbers after it"),
        ("1,2,3\n4,5\n", "line 2 holds 2 values, but line 1 holds 3"),
        ("1,2,3\n4,5,6,7\n", "line 2 holds 4 values, but line 1 holds 3"),
        ("a,b,c\n1,2,3\n4,x,6\n", "line 3, column 2 is not a number: 'x'"),
        ("1,2,3\n4,5,6\n7,8,oops\n", "line 3, column 3 is not a number: 'oops'"),
        ("1,2,3\n4\t5\t6\n", "line 2 holds a tab: a .csv file must separate its values with commas"),
        ("1\t2\t3\n", "line 1 holds a tab"),
        ("1.5 2.5 3.5\n4 5 6\n", "line 1 holds numbers separated by spaces"),
        ("1,2,3\n\n4,5,6\n", "line 2 is blank, between rows of data"),
        ("a,b\n1,2,3\n", "the header on line 1 names 2 columns, but the rows hold 3 values each"),
        ("1,2,3\n4,1_000,6\n", "line 2, column 2 is not a number: '1_000'"),
    ],
)
def test_unreadable_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(gpubp.DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        datasets.read_csv(path)


def test_the_same_errors_reach_predict_and_train(tmp_path, model, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("1,2,3\n4,5\n")
    status, _, err = predict(capsys, model[0], path, "--out", tmp_path / "p.npy")
    assert status == 2 and "line 2 holds 2 values, but line 1 holds 3" in err
    status = cli.main(["train", "--data", str(path), "--device", "cpu"])
    assert status == 2 and "line 2 holds 2 values, but line 1 holds 3" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing written


def test_comments_windows_line_ends_quotes_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(
        '\ufeff# made by hand\r\n"a","b, with a comma"\r\n1e-3,"2"\r\n# a row left out\r\n-3,+4\r\n\r\n'.encode()
    )
    table = datasets.read_csv(path)
    np.testing.assert_array_equal(table.values, [[1e-3, 2], [-3, 4]])
    assert table.lines == [3, 5] and table.header == '"a","b, with a comma"'
    assert [n for n, _ in table.skipped] == [1, 2, 4]
    assert "skipped lines 1 (a # comment), 2 (a header: " in table.describe() and "4 (a # comment)" in table.describe()


def test_header_can_be_forced_either_way(tmp_path, model, capsys):
    path = tmp_path / "r.csv"
    path.write_text("0,1,2\n3,4,5\n")
    assert len(datasets.read_csv(path, header="no").values) == 2
    assert datasets.read_csv(path, header="yes").values.tolist() == [[3, 4, 5]]
    status, out, _ = predict(capsys, model[0], path, "--out", tmp_path / "p.npy", "--header", "yes")
    assert status == 0 and "skipped line 1 (a header: '0,1,2')" in out and "wrote 1 predictions" in out
    with pytest.raises(gpubp.ArgumentError, match="header must be one of auto, yes, no; got 'maybe'"):
        datasets.read_csv(path, header="maybe")


FORMAT_STRINGS = ["%.18e", "%g", "%.3e", "%+.6f", "%14.8f", "%.10g", "%e", "%r"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    ),
    fmt=st.sampled_from(FORMAT_STRINGS),
    header=st.sampled_from([None, "names", "comment", "pandas"]),
)
def test_random_arrays_in_random_formats_round_trip(tmp_path, values, fmt, header):
    path = tmp_path / "r.csv"
    names = [f"x{k}" for k in range(values.shape[1])]
    if header == "pandas":
        pandas().DataFrame(values, columns=names).to_csv(path, index=False)
        expected = values  # pandas writes the shortest repr that reads back exactly
    else:
        fmt_ = "%.17g" if fmt == "%r" else fmt
        comments = "# " if header == "comment" else ""
        np.savetxt(path, values, fmt=fmt_, delimiter=",", header=",".join(names) if header else "", comments=comments)
        expected = formatted(fmt_)(values)
    table = datasets.read_csv(path)
    assert table.values.shape == values.shape
    np.testing.assert_array_equal(table.values, expected)
    assert len(table.skipped) == (header is not None)


def test_a_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(gpubp.DatasetError, match="image.csv is not UTF-8 text"):
        datasets.read_csv(path)
