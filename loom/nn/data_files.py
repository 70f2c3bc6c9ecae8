"""Data files of the ``loom train / eval / predict`` commands: CSV with a header, ``.npz``, LOOM batch JSON.

* **CSV** (any other suffix): a header row, then one sample per row, every value a number.
  Target columns are named (``--target``); by default the last column is the target (a class
  label when the network has several outputs). ``predict`` also accepts a file with the
  feature columns only.
* **.npz**: arrays ``x`` ``[N, features]`` and ``y`` (labels ``[N]`` or targets ``[N, k]``);
  read without pickles.
* **.json**: a list of LOOM training batches ``[{"Input": [...], "Target": [...]}, ...]``
  (keys in any case), each holding one or more samples back to back.

Every problem is a :class:`~loom.errors.DataFormatError` whose one-line message names the
file, the line or column, and what was expected.
"""

from __future__ import annotations

import csv
import difflib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loom.errors import DataFormatError

__all__ = ["Dataset", "read_data"]


@dataclass
class Dataset:
    """Samples read from a data file.

    Attributes
    ----------
    x : ndarray ``[N, features]`` float32
    y : ndarray or None
        ``[N]`` (one target column) or ``[N, k]``; ``None`` when the file has no targets.
    feature_names, target_names : list of str
        Column names (``x0, x1 ...`` / ``y`` for files without a header).
    path : Path
        Where it came from (for messages).
    lines : list of int
        File line of each sample (CSV; for messages), else sample indices.
    """

    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    target_names: list[str]
    path: Path
    lines: list[int]

    def where(self, sample: int) -> str:
        """``line 12`` (CSV) or ``sample 11`` (other formats) of a 0-based sample index."""
        if self.path.suffix.lower() in (".npz", ".json"):
            return f"sample {sample}"
        return f"line {self.lines[sample]}"

    def check_labels(self, outputs: int) -> None:
        """For one target column and a network with ``outputs > 1`` outputs: every value a class label.

        Raises ``DataFormatError`` naming the file, the column, the line and the expected range.
        """
        if self.y is None or outputs <= 1 or self.y.ndim != 1:
            return
        bad = ~np.isfinite(self.y) | (self.y != np.round(self.y)) | (self.y < 0) | (self.y >= outputs)
        if bad.any():
            i = int(np.argmax(bad))
            column = self.target_names[0] if self.target_names else "y"
            raise DataFormatError(
                f"{self.path}: column {column!r}, {self.where(i)}: expected a class label 0..{outputs - 1} "
                f"(the network has {outputs} outputs), got {self.y[i]:g}"
            )


def read_data(
    path: str | Path,
    *,
    targets: list[str] | None = None,
    features: int | None = None,
    require_targets: bool = True,
) -> Dataset:
    """Read samples (and targets) from ``path``.

    Parameters
    ----------
    targets : list of str, optional
        CSV target column names (default: the last column).
    features : int, optional
        Input values per sample the network takes: checked, and needed to split LOOM batches.
    require_targets : bool
        False for ``predict``: a CSV with exactly ``features`` columns is all features, and
        ``.npz`` / JSON targets may be missing.
    """
    file = Path(path)
    if not file.is_file():
        raise DataFormatError(f"{file}: data file not found")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        data = _read_npz(file, require_targets)
    elif suffix == ".json":
        data = _read_batches(file, features)
    else:
        data = _read_csv(file, targets, features, require_targets)
    if features is not None and data.x.shape[1] != features:
        names = ", ".join(data.feature_names[:8]) + (" ..." if len(data.feature_names) > 8 else "")
        raise DataFormatError(
            f"{file}: expected {features} feature values per sample (the network's input size), "
            f"got {data.x.shape[1]} ({names})"
        )
    if require_targets and data.y is None:
        raise DataFormatError(f"{file}: no target values; expected a target column / array 'y'")
    return data


def _number(text: str) -> float:
    return float(text.strip())


def _read_csv(file: Path, targets: list[str] | None, features: int | None, require_targets: bool) -> Dataset:
    try:
        with file.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{file}: cannot read as CSV text ({exc})") from exc
    rows = [(line, row) for line, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataFormatError(f"{file}: empty file; expected a header row, then one sample per row")
    header = [name.strip() for name in rows[0][1]]
    for name in header:
        try:
            _number(name)
        except ValueError:
            continue
        raise DataFormatError(f"{file}: line 1: expected a header row of column names, got the number {name!r}")
    if len(set(header)) != len(header):
        twice = sorted({n for n in header if header.count(n) > 1})
        raise DataFormatError(f"{file}: line 1: column names must be unique, {twice} appear more than once")
    body = rows[1:]
    if not body:
        raise DataFormatError(f"{file}: no data rows after the header")
    if targets:
        for name in targets:
            if name not in header:
                hint = difflib.get_close_matches(name, header, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise DataFormatError(f"{file}: no column {name!r}{did_you_mean}; columns: {', '.join(header)}")
        target_names = list(targets)
    elif not require_targets and features is not None and len(header) == features:
        target_names = []
    else:
        target_names = [header[-1]]
    if len(target_names) == len(header):
        raise DataFormatError(f"{file}: every column is a target; expected at least one feature column")
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataFormatError(f"{file}: line {line}: expected {len(header)} values (as the header), got {len(row)}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = _number(cell)
            except ValueError:
                raise DataFormatError(
                    f"{file}: line {line}, column {header[j]!r}: expected a number, got {cell.strip()!r}"
                ) from None
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataFormatError(
            f"{file}: line {body[i][0]}, column {header[j]!r}: expected a finite number, got {values[i, j]}"
        )
    target_idx = [header.index(n) for n in target_names]
    feature_idx = [j for j in range(len(header)) if j not in target_idx]
    y = None
    if target_idx:
        y = values[:, target_idx]
        y = y[:, 0] if y.shape[1] == 1 else y
    return Dataset(
        values[:, feature_idx].astype(np.float32),
        y,
        [header[j] for j in feature_idx],
        target_names,
        file,
        [line for line, _ in body],
    )


def _read_npz(file: Path, require_targets: bool) -> Dataset:
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{file}: cannot read as .npz ({exc}); expected arrays 'x' and 'y'") from exc
    if "x" not in arrays or (require_targets and "y" not in arrays):
        raise DataFormatError(f"{file}: expected arrays 'x' and 'y', found {sorted(arrays)}")
    x, y = arrays["x"], arrays.get("y")
    if x.dtype.kind not in "biuf" or x.ndim != 2 or x.shape[0] == 0:
        raise DataFormatError(f"{file}: array 'x': expected numbers [samples, features], got {x.dtype} {x.shape}")
    if y is not None:
        if y.dtype.kind not in "biuf" or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            raise DataFormatError(
                f"{file}: array 'y': expected numbers with {x.shape[0]} rows (one per sample of x), "
                f"got {y.dtype} {y.shape}"
            )
        y = y.astype(np.float64)
    for name, array in (("x", x), ("y", y)):
        if array is not None and not np.all(np.isfinite(array)):
            row = int(np.argmax(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)))
            raise DataFormatError(f"{file}: array {name!r}, sample {row}: expected finite numbers")
    names = [f"x{j}" for j in range(x.shape[1])]
    return Dataset(x.astype(np.float32), y, names, [] if y is None else ["y"], file, list(range(x.shape[0])))


def _read_batches(file: Path, features: int | None) -> Dataset:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{file}: cannot read as JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise DataFormatError(f'{file}: expected a non-empty JSON list of {{"Input": [...], "Target": [...]}} batches')
    if not features:
        raise DataFormatError(
            f"{file}: the network's input size is unknown, so LOOM batches cannot be split into samples"
        )
    xs, ys = [], []
    for i, item in enumerate(data):
        where = f"{file}: batches[{i}]"
        low = {str(k).lower(): v for k, v in item.items()} if isinstance(item, dict) else {}
        if "input" not in low or "target" not in low:
            raise DataFormatError(f"{where}: expected an object with 'Input' and 'Target' lists")
        try:
            x = np.asarray(low["input"], dtype=np.float64).reshape(-1)
            t = np.asarray(low["target"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{where}: expected lists of numbers ({exc})") from None
        if x.size == 0 or x.size % features:
            raise DataFormatError(
                f"{where}.Input: expected a multiple of {features} values (the network's input size), got {x.size}"
            )
        samples = x.size // features
        if t.size == 0 or t.size % samples:
            raise DataFormatError(
                f"{where}.Target: expected a multiple of {samples} values ({samples} samples), got {t.size}"
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t))):
            raise DataFormatError(f"{where}: expected finite numbers")
        xs.append(x.reshape(samples, features))
        ys.append(t.reshape(samples, -1))
    widths = {y.shape[1] for y in ys}
    if len(widths) != 1:
        raise DataFormatError(
            f"{file}: every batch needs the same number of target values per sample, got {sorted(widths)}"
        )
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    names = [f"x{j}" for j in range(features)]
    return Dataset(x, y, names, [f"y{j}" for j in range(y.shape[1])], file, list(range(x.shape[0])))
