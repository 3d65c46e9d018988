#!/usr/bin/python3
"""train_baselines.py -- the MLP baselines of Fashion-MNIST, for bench/train_experiments.sh.

Debian's dataset-fashion-mnist ships the benchmark's benchmark/baselines.json, but that
file is only the grid of scikit-learn settings the benchmark tried (for MLPClassifier:
activation relu|tanh x hidden_layer_sizes (10,), (100,), (10,10,), (100,10,)); it holds no
accuracies. The accuracies of exactly that grid are published in the dataset's paper:
Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747, Table 3 (test accuracy, mean of 5 runs).
They are copied below; every entry of the package's grid is looked up there, so a grid
that changes (or a setting the paper does not list) shows up as "not published".

    usage: bench/train_baselines.py [--json] [PATH]
    PATH defaults to the package's file (found with `dpkg -L dataset-fashion-mnist`).
Prints one line per MLP setting, best first ("--json": a JSON object).
Exit 0; 1 if the file is missing or unreadable (with a message on stderr).
"""
import itertools
import json
import os
import subprocess
import sys

# arXiv:1708.07747 Table 3, Fashion-MNIST column.
PUBLISHED_MLP = {
    ("relu", "(100,)"): 0.871,
    ("relu", "(100,10,)"): 0.870,
    ("tanh", "(100,)"): 0.868,
    ("tanh", "(100,10,)"): 0.863,
    ("relu", "(10,10,)"): 0.850,
    ("relu", "(10,)"): 0.848,
    ("tanh", "(10,10,)"): 0.841,
    ("tanh", "(10,)"): 0.840,
}
SOURCE = "Xiao, Rasul & Vollgraf 2017 (arXiv:1708.07747), Table 3"


def find_baselines():
    """The package's baselines.json, or None."""
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.endswith("/benchmark/baselines.json") and os.path.isfile(line):
            return line
    return None


def mlp_grid(path):
    """[(activation, hidden)] of the MLPClassifier grid in baselines.json."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    params = {}
    for entry in doc.get("classifiers", {}).get("MLPClassifier", []):
        params.update(entry)
    acts = params.get("activation", [])
    hidden = [str(h).replace(" ", "") for h in params.get("hidden_layer_sizes", [])]
    return list(itertools.product(acts, hidden))


def baselines(path):
    rows = []
    for act, hid in mlp_grid(path):
        rows.append({"activation": act, "hidden_layer_sizes": hid,
                     "test_accuracy": PUBLISHED_MLP.get((act, hid))})
    rows.sort(key=lambda r: -(r["test_accuracy"] or 0.0))
    known = [r for r in rows if r["test_accuracy"] is not None]
    return {"file": path, "source": SOURCE, "mlp": rows,
            "best": known[0] if known else None}


def main(argv):
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    path = args[0] if args else find_baselines()
    if not path or not os.path.isfile(path):
        print("train_baselines: no benchmark/baselines.json (install dataset-fashion-mnist)",
              file=sys.stderr)
        return 1
    try:
        res = baselines(path)
    except (OSError, ValueError) as e:
        print(f"train_baselines: {path}: {e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(res))
        return 0
    print(f"MLPClassifier grid of {path}; accuracies from {SOURCE}:")
    for r in res["mlp"]:
        acc = "not published" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
        print(f"  activation={r['activation']:4s} hidden={r['hidden_layer_sizes']:10s} {acc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
