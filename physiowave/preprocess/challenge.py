"""Shared reader for PhysioNet/CinC Challenge-format data sets (``.hea`` + MATLAB v4 ``.mat``, SNOMED-CT codes on
the header's ``# Dx:`` line), labelled multi-hot by a class → codes table. CPSC 2018 and Chapman-Shaoxing
subclass it with their table and defaults."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from .core import Item, RecordRef, Source
from .readers import ReadError, header_codes, parse_header, read_challenge, read_text

__all__ = ["ChallengeSource", "multi_hot"]


def multi_hot(codes: list[str], class_codes: dict[str, list[str]]) -> np.ndarray:
    """``[K]`` float32 multi-hot of the classes whose codes (or abbreviations, case-insensitive) occur in ``codes``."""
    have = {c.strip().upper() for c in codes}
    return np.array([any(c.upper() in have for c in cc) for cc in class_codes.values()], dtype=np.float32)


class ChallengeSource(Source):
    """Every ``*.hea`` with a ``.mat`` beside it under the ``--input`` folders; one record per patient, so the
    group is the record; splits drawn stratified on the label combination."""

    multilabel = True
    splits = ("train", "val", "test")

    def list_records(self) -> tuple[list[RecordRef], list[tuple[str, str]]]:
        assert self.class_codes is not None
        refs, skipped, seen = [], [], set()
        headers = [(root, h) for root in map(Path, self.args.input) for h in sorted(root.rglob("*.hea"))]
        for _root, hea in tqdm(headers, desc="headers", unit="rec", leave=False, dynamic_ncols=True):
            rid = hea.stem
            if not (hea.with_suffix(".mat").exists() or hea.with_suffix(".MAT").exists()):
                skipped.append((rid, f"{hea}: no .mat signal file beside the header"))
                continue
            if rid in seen:
                skipped.append((rid, f"{hea}: duplicate record name (already listed)"))
                continue
            try:
                codes = header_codes(parse_header(read_text(hea), str(hea)).comments)
            except ReadError as e:
                skipped.append((rid, str(e)))
                continue
            if not codes:
                skipped.append((rid, f"{hea}: no '# Dx:' line with diagnosis codes"))
                continue
            label = multi_hot(codes, self.class_codes)
            if not label.any():
                skipped.append((rid, f"no code among the {len(self.class_codes)} classes (Dx: {','.join(codes)})"))
                continue
            seen.add(rid)
            refs.append(RecordRef(rid, rid, str(hea), label))
        return refs, skipped

    def load(self, ref: RecordRef) -> Iterable[Item]:
        yield Item(ref.id, read_challenge(ref.source))
