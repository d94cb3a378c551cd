"""Per-member input views: how one ensemble feeds members that want different inputs.

A heterogeneous ensemble (say a CNN on ``8x8x1`` images, an LSTM on ``8x8`` row
sequences and an MLP on 64 flat features) sees the same examples through different
arrays. ``predict``-style methods accept ``x`` as

* one array (or ``ArrayDataset``): every member gets it; it must fit every member;
* a dict of views ``{key: array or ArrayDataset}``: member m takes ``x[m.model_id]`` if
  present, else ``x[m.spec.input_kind]`` (``"image"``, ``"features"``, ``"sequence"``,
  ``"tokens"``). All views must have the same number of examples, in the same order.

Labelled data (``get_ensemble_performance``, ``update_model_weights`` ...) is an
``ArrayDataset``, a dict of ``ArrayDataset`` views with identical labels, or a tuple
``(x, y)`` with ``x`` as above.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml_adv.data.dataset import ArrayDataset, validate_features, validate_labels
from ml_adv.errors import DataError, ShapeError, describe


def _array(name: str, value, input_kind: str | None = None) -> np.ndarray:
    """The validated array of one view, read as ``input_kind``.

    The kind matters for integer inputs: uint8 pixels must stay uint8 (the models scale them
    by 1/255, as in training), where a kind-less read would take them for int32 token ids.
    """
    return validate_features(
        name, value.x if isinstance(value, ArrayDataset) else value, input_kind
    )


def _shared_kind(members) -> str | None:
    """The kind one array given to every member is read as: theirs if they agree, else None."""
    kinds = {m.spec.input_kind for m in members}
    return kinds.pop() if len(kinds) == 1 else None if "tokens" in kinds else sorted(kinds)[0]


def resolve_views(members, x) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(member_views, views)``: view name per member and the validated arrays by name."""
    if isinstance(x, Mapping):
        if not x:
            raise DataError("x: expected a non-empty dict of input views, got {}")
        views, member_views = {}, []
        for m in members:
            key = m.model_id if m.model_id in x else m.spec.input_kind
            if key not in x:
                raise DataError(
                    f"x: no input view for member {m.model_id!r} ({m.spec.architecture}, "
                    f"input_kind {m.spec.input_kind!r}); expected a key {m.model_id!r} or "
                    f"{m.spec.input_kind!r}, got keys {sorted(map(str, x))}"
                )
            if key not in views:
                views[key] = _array(f"x[{key!r}]", x[key], m.spec.input_kind)
            m.spec.validate_inputs(views[key], argument=f"x[{key!r}]")
            member_views.append(key)
    else:
        arr = _array("x", x, _shared_kind(members))
        misfits = []
        for m in members:
            try:
                m.spec.validate_inputs(arr, argument="x")
            except (ShapeError, DataError) as exc:
                misfits.append((m, exc))
        if len(misfits) == len(members):
            wanted = sorted(
                {
                    f"{m.spec.architecture}: (N, "
                    f"{', '.join('L' if d is None else str(d) for d in m.spec.input_shape)})"
                    for m, _ in misfits
                }
            )
            raise ShapeError(
                f"x: input {describe(arr)} fits no member of the ensemble; members expect {wanted}"
            )
        if misfits:
            m, exc = misfits[0]
            raise ShapeError(
                f"x: {len(misfits)} of {len(members)} members cannot take this input (first: "
                f"{m.model_id!r}: {exc}); pass a dict of views keyed by model id or input kind"
            )
        views, member_views = {"x": arr}, ["x"] * len(members)
    sizes = {k: v.shape[0] for k, v in views.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"x: expected every input view to hold the same examples, got sizes {sizes}"
        )
    return member_views, views


def split_labelled(data, num_classes: int, *, argument: str = "data"):
    """``(x, y)`` from an ArrayDataset, a dict of ArrayDataset views, or an ``(x, y)`` tuple."""
    if isinstance(data, ArrayDataset):
        x, y = data.x, data.y
    elif (
        isinstance(data, Mapping)
        and data
        and all(isinstance(v, ArrayDataset) for v in data.values())
    ):
        labels = [v.y for v in data.values()]
        if any(lab.shape != labels[0].shape or np.any(lab != labels[0]) for lab in labels[1:]):
            raise DataError(
                f"{argument}: expected every view to carry the same labels, in the same order"
            )
        x, y = {k: v.x for k, v in data.items()}, labels[0]
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        raise DataError(
            f"{argument}: expected an ArrayDataset, a dict of ArrayDataset views or an (x, y) "
            f"tuple, got {describe(data)}"
        )
    return x, validate_labels(f"{argument} labels", y, num_classes)
