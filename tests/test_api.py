"""The Python API (susl_cli/api.py): a scikit-learn style estimator over the CLI's engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from susl_cli import SemiUnsupervised
from susl_cli.api import NotFittedError
from susl_cli.cli import app
from susl_cli.errors import DataError, OutputError, SuslError, UsageError

NAMES = np.array(["cat", "dog", "eel"], dtype=object)
EPOCHS = 20  # the eels get a component of their own (at 12 they still share the cats'); ~6 s


def _toy(seed: int = 0, n_per_class: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, true class): three well separated 8-d blobs; 30% of cat and dog rows labelled
    with words, the eels labelled by nobody (the class to discover)."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(3), n_per_class)
    x = rng.normal(0, 4, (3, 8))[true] + rng.normal(0, 0.5, (len(true), 8))
    y = NAMES[true].copy()
    y[(rng.random(len(true)) > 0.3) | (true == 2)] = None
    return x, y, true


@pytest.fixture(scope="module")
def fitted() -> tuple[SemiUnsupervised, np.ndarray, np.ndarray]:
    x, y, true = _toy()
    return SemiUnsupervised(random_state=0, epochs=EPOCHS).fit(x, y), x, true


def test_fit_names_the_labelled_classes_and_finds_the_unlabelled_one_as_new(fitted) -> None:
    model, x, true = fitted
    assert list(model.classes_) == ["cat", "dog", "new-1"]
    predicted = model.predict(x)
    for c, expected in enumerate(["cat", "dog", "new-1"]):
        assert np.mean(predicted[true == c] == expected) > 0.9, expected
    assert model.n_features_in_ == 8 and model.random_state_ == 0 and model.n_new_classes_ == 1
    assert model.n_components_ > 3 and len(model.history_["loss"]) == EPOCHS
    assert not hasattr(model, "feature_names_in_")  # numpy input has no column names


def test_predict_proba_columns_follow_classes_and_novelty_is_new_class_mass(fitted) -> None:
    model, x, true = fitted
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), len(model.classes_))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model.classes_[proba.argmax(1)], model.predict(x))
    novelty = model.novelty(x)
    np.testing.assert_allclose(novelty, proba[:, 2], atol=1e-6)  # the one new class's column
    assert novelty[true == 2].mean() > 0.5 > novelty[true < 2].mean()
    components = model.predict_components(x)
    assert components.shape == (len(x), model.n_components_)


def test_same_random_state_gives_the_same_model_and_another_differs() -> None:
    x, y, _ = _toy(n_per_class=30)
    first, again, other = (SemiUnsupervised(random_state=seed, epochs=2).fit(x, y)
                           for seed in (0, 0, 1))
    np.testing.assert_array_equal(again.predict_components(x), first.predict_components(x))
    np.testing.assert_array_equal(again.predict(x), first.predict(x))
    assert not np.array_equal(other.predict_components(x), first.predict_components(x))


def test_save_load_round_trip_gives_equal_predictions(fitted, tmp_path: Path) -> None:
    model, x, _ = fitted
    path = model.save(tmp_path / "run.h5")
    loaded = SemiUnsupervised.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert list(loaded.classes_) == list(model.classes_)
    assert loaded.get_params()["random_state"] == 0
    # model=None let the data size choose (a small set: gmdgm-mf); the checkpoint names it
    assert model.model is None and loaded.model == "gmdgm-mf" == model.run_.model_config.model
    # the data-size rules turned label evidence on (labelled and new classes): load says so
    assert loaded.label_evidence == model.run_.model.objective.label_evidence > 0
    with pytest.raises(OutputError, match="overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)


def test_the_cli_reads_an_api_checkpoint(fitted, tmp_path: Path, runner) -> None:
    model, x, _ = fitted
    run = model.save(tmp_path / "run.h5")
    new = tmp_path / "new.csv"
    pd.DataFrame(x[:20], columns=[f"f{i}" for i in range(8)]).to_csv(new, index=False)
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(run), str(new), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table["class"]) == list(model.predict(x[:20]))
    np.testing.assert_allclose(table["novelty"], model.novelty(x[:20]), atol=1e-6)
    info = runner.invoke(app, ["info", str(run)])
    assert info.exit_code == 0 and "SemiUnsupervised.fit" in info.stdout
    # the training data is not in the checkpoint: commands that need it say so in one line
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "SemiUnsupervised.fit" in message
    assert "--data" in message


def test_dataframe_input_nan_labels_and_number_labels(tmp_path: Path) -> None:
    x, y, true = _toy(n_per_class=20)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    numbers = pd.Series(np.where(pd.isna(y), np.nan, true.astype(float)))  # 0.0, 1.0, NaN
    model = SemiUnsupervised(random_state=0, epochs=1).fit(frame, numbers)
    assert list(model.classes_[:2]) == ["0", "1"]  # class names, as `susl mask` gives them
    assert list(model.feature_names_in_) == list(frame.columns)
    assert model.predict(frame).shape == (len(x),)
    with pytest.raises(DataError, match="other columns"):
        model.predict(frame[frame.columns[::-1]])


def test_all_rows_unlabelled_clusters_into_new_classes(capsys) -> None:
    x, _, _ = _toy(n_per_class=20)
    model = SemiUnsupervised(random_state=0, epochs=2, verbose=True).fit(x)  # y=None
    assert capsys.readouterr().err.count("epoch ") == 2  # verbose: one line per epoch
    assert len(model.classes_) >= 1
    assert all(name.startswith("new-") for name in model.classes_)
    np.testing.assert_allclose(model.novelty(x), 1.0, atol=1e-6)


def test_before_fit_and_wrong_inputs_are_domain_errors(fitted) -> None:
    model, x, _ = fitted
    with pytest.raises(NotFittedError, match="not fitted") as caught:
        SemiUnsupervised().predict(x)
    assert isinstance(caught.value, SklearnNotFittedError) and isinstance(caught.value, SuslError)
    with pytest.raises(DataError, match="X has 5 features, but the model was fitted on 8"):
        model.predict(x[:, :5])
    with pytest.raises(DataError, match="2-D"):
        model.predict(x[0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values .first in row 3"):
        model.predict(bad)
    with pytest.raises(DataError, match="numbers only"):
        model.predict([["a"] * 8])
    y = np.array(["a"] * len(x), dtype=object)
    with pytest.raises(DataError, match="y has 3 labels for 180 rows"):
        SemiUnsupervised().fit(x, y[:3])
    with pytest.raises(DataError, match="y has 3 labels for 180 rows"):
        SemiUnsupervised().fit(x, y[:3, None])
    with pytest.raises(DataError, match="'new-1' is kept for the classes susl discovers"):
        SemiUnsupervised().fit(x, np.where(np.arange(len(x)) < 5, "new-1", "a"))
    with pytest.raises(UsageError, match="random_state must be an integer"):
        SemiUnsupervised(random_state=np.random.RandomState(0)).fit(x, y)
    with pytest.raises(UsageError, match="epochs must be an integer >= 1"):
        SemiUnsupervised(epochs=0).fit(x, y)
    with pytest.raises(UsageError, match="label_evidence must be a number >= 0, got -1"):
        SemiUnsupervised(label_evidence=-1).fit(x, y)
    with pytest.raises(SuslError, match="unknown model 'vae'"):
        SemiUnsupervised(model="vae", epochs=1).fit(x, y)


def test_scikit_learn_conventions() -> None:
    model = SemiUnsupervised(epochs=3, random_state=7)
    assert model.get_params()["epochs"] == 3
    copy = clone(model).set_params(epochs=5)
    assert copy.epochs == 5 and model.epochs == 3 and not hasattr(copy, "classes_")


def test_importing_susl_cli_does_not_import_torch() -> None:
    code = ("import sys, susl_cli; assert 'torch' not in sys.modules and 'sklearn' not in "
            "sys.modules; assert 'SemiUnsupervised' in susl_cli.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_python_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's "Python API" code, run as written but for one epoch instead of ~200."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    call = "SemiUnsupervised(random_state=0)"
    assert block.count(call) == 1
    monkeypatch.chdir(tmp_path)
    code = compile(block.replace(call, "SemiUnsupervised(random_state=0, epochs=1)"),
                   "README.md", "exec")
    exec(code, {})  # the README's own code
    assert SemiUnsupervised.load(tmp_path / "digits-api.h5").n_features_in_ == 64
