"""Which frames a run trains and is scored on: whole splits, or whole drives held out.

CamVid file names are ``<SEQUENCE>_<frame>.png`` (``0016E5_07959.png``). Its val frames lie between
two training stretches of the same drive, so val rewards remembering that drive; holding out a
whole sequence measures streets the network has never seen.
"""

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from .data import DatasetError, split_pairs

Pair = Tuple[Path, Optional[Path]]


def sequence_of(path) -> str:
    """``0006R0_f02370.png`` -> ``0006R0``."""
    return Path(path).stem.split("_", 1)[0]


def parse_names(text) -> List[str]:
    """``"train,val"``, ``"train+val"`` or a list -> ``["train", "val"]`` (order kept, no repeats)."""
    if text is None:
        return []
    items = text if isinstance(text, (list, tuple)) else str(text).replace("+", ",").split(",")
    names = []
    for item in (i.strip() for i in items):
        if item and item not in names:
            names.append(item)
    return names


def frames(root, splits, sequences: Optional[Iterable[str]] = None,
           exclude: Optional[Iterable[str]] = None) -> List[Pair]:
    """(image, label) pairs of ``splits``, keeping only ``sequences`` (if given) and dropping
    ``exclude``. A named sequence with no frame in these splits is an error (a typo would otherwise
    give an empty or unchanged set)."""
    split_names = parse_names(splits)
    if not split_names:
        raise DatasetError("no split named")
    pairs = [pair for split in split_names for pair in split_pairs(root, split)]
    present = sorted({sequence_of(image) for image, _ in pairs})
    for named in (parse_names(sequences), parse_names(exclude)):
        unknown = sorted(set(named) - set(present))
        if unknown:
            raise DatasetError(f"sequence(s) {', '.join(unknown)} have no frames in {'+'.join(split_names)} "
                               f"of {root}; its sequences are {', '.join(present)}")
    keep, drop = set(parse_names(sequences)), set(parse_names(exclude))
    return [(image, label) for image, label in pairs
            if (not keep or sequence_of(image) in keep) and sequence_of(image) not in drop]


def holdout_frames(root, train_splits, holdout: Sequence[str], val_splits=None) -> Tuple[List[Pair], List[Pair]]:
    """Train on ``train_splits`` without the ``holdout`` sequences; validate on every frame of the
    held-out sequences in ``train_splits`` and ``val_splits`` (those splits that exist)."""
    holdout = parse_names(holdout)
    if not holdout:
        raise DatasetError("no sequence to hold out")
    train = frames(root, train_splits, exclude=holdout)
    if not train:
        raise DatasetError(f"holding out {', '.join(holdout)} leaves no training frames in {train_splits}")
    return train, frames(root, holdout_validation_splits(root, train_splits, val_splits), sequences=holdout)


def holdout_validation_splits(root, train_splits, val_splits=None) -> List[str]:
    """Where held-out sequences are looked for: the train splits, then the val splits that exist."""
    extra = [s for s in parse_names(val_splits) if (Path(root) / s).is_dir()]
    return parse_names(parse_names(train_splits) + extra)


def count_by_sequence(pairs: Iterable[Pair]) -> dict:
    counts = {}
    for image, _ in pairs:
        counts[sequence_of(image)] = counts.get(sequence_of(image), 0) + 1
    return dict(sorted(counts.items()))
