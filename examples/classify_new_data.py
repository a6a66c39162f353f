"""Use a trained susl model from Python: q(y|x) for new rows, their classes, and which rows
look unlike anything that was labelled.

    python examples/classify_new_data.py RUN.h5 NEW.npz|NEW.csv|NEW.h5|MASK.h5

The same as `susl predict RUN NEW --out predictions.csv`, but with the arrays in hand: the
checkpoint carries its own input transform (pixel selection, standardisation, window
summaries), so NEW holds rows laid out like the training data, untransformed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from susl_cli.errors import SuslError
from susl_cli.evaluate import predict_probs
from susl_cli.predict import PredictOptions, fit_layout, predict_file, read_inputs
from susl_cli.runs import load_model


def main(checkpoint: Path, new_rows: str) -> None:
    # The high-level call: one Predictions object (component, probability, entropy, class).
    predictions = predict_file(checkpoint, new_rows, PredictOptions())
    print(f"{len(predictions.components)} rows from {predictions.input}")
    print(f"classes named from: {predictions.calibration.mapping_source}")
    names, counts = np.unique(predictions.mapped_names.astype(str), return_counts=True)
    for name, count in zip(names, counts, strict=True):
        print(f"  {name:>20}: {count} rows")
    flagged = predictions.unlike_labelled
    if flagged is not None:
        print(f"{int(flagged.sum())} rows less certain than 95% of the labelled training "
              f"points (entropy > {predictions.calibration.entropy_threshold:.3g} nats): "
              "candidates for a class nobody labelled")

    # The low-level calls: the full (N, K) matrix of q(y|x), e.g. for your own thresholds.
    # (This reads the model and the rows a second time, to show each layer on its own; a
    # program needing both would call these three functions once and keep the results.)
    run = load_model(checkpoint)
    x, described = read_inputs(new_rows, PredictOptions())
    probs = predict_probs(run, fit_layout(run, x, described))  # (N, K); rows sum to 1
    runner_up = np.sort(probs, axis=1)[:, -2]
    print(f"q(y|x) has {probs.shape[1]} columns: components 0.."
          f"{run.model_config.n_labelled - 1} are the labelled classes, the rest were found "
          "in the unlabelled data")
    print(f"median margin between the best and the second component: "
          f"{np.median(probs.max(axis=1) - runner_up):.3f}")

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(Path(sys.argv[1]), sys.argv[2])
    except SuslError as err:  # the same one-line messages the CLI prints
        sys.exit(f"error: {err}")
