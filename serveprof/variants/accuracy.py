"""How far a variant's answers are from fp32's, on the same seeded inputs, both as served.

Both models are served by the same backend and asked the same Predict requests: a fixed
set of ``samples`` inputs from the input builder (seeded; real photos for detection),
sent in batches. The answers are compared output by output:

- every float output: max and mean absolute difference;
- classification (a ``[batch, classes]`` output): top-1 agreement (fp32's class is the
  variant's) and top-5 agreement (fp32's class is among the variant's five best; with
  fewer than five classes, all of them);
- detection (the Object Detection API's ``detection_boxes``, ``detection_scores``,
  ``detection_classes``): each fp32 box above ``score_threshold`` is matched with the
  variant's box of the same class that overlaps it most; the mean IoU of the matches,
  the share matched at IoU ≥ 0.5, and the mean absolute score difference.

With random weights (the acquisition's fallback) the model's answers carry no meaning,
so neither does their agreement; the result says so (``weights_note``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TOP_K = 5
SCORE_THRESHOLD = 0.3
MATCH_IOU = 0.5
DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")


def output_differences(reference: Mapping[str, np.ndarray], variant: Mapping[str, np.ndarray]) -> dict:
    """``{output: {"max_abs_diff", "mean_abs_diff"}}`` for every float output both answered."""
    found = {}
    for name in sorted(set(reference) & set(variant)):
        ours, theirs = np.asarray(reference[name]), np.asarray(variant[name])
        if ours.dtype.kind != "f" or ours.shape != theirs.shape:
            continue
        difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
        found[name] = {"max_abs_diff": float(difference.max(initial=0.0)), "mean_abs_diff": float(difference.mean())}
    return found


def class_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    """The classification output: the only ``[batch, classes]`` float output, or ``probabilities``/``predictions``."""
    candidates = [name for name, array in outputs.items() if np.asarray(array).ndim == 2 and array.dtype.kind == "f"]
    for preferred in ("probabilities", "predictions", "logits"):
        if preferred in candidates:
            return preferred
    return candidates[0] if len(candidates) == 1 else None


def classification_agreement(reference: np.ndarray, variant: np.ndarray) -> dict:
    """Top-1 and top-5 agreement of two ``[batch, classes]`` score arrays, as shares of the items."""
    top = min(TOP_K, reference.shape[1])
    expected = np.argmax(reference, axis=1)
    best = np.argsort(-variant, axis=1, kind="stable")[:, :top]
    return {
        "top1_agreement": float(np.mean(best[:, 0] == expected)),
        "top5_agreement": float(np.mean(np.any(best == expected[:, None], axis=1))),
        "top5_of": top,
        "items": int(reference.shape[0]),
    }


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[ymin, xmin, ymax, xmax]`` box with each of ``boxes``."""
    top = np.maximum(box[0], boxes[:, 0])
    left = np.maximum(box[1], boxes[:, 1])
    bottom = np.minimum(box[2], boxes[:, 2])
    right = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def detection_agreement(reference: Mapping[str, np.ndarray], variant: Mapping[str, np.ndarray]) -> dict:
    """Matched-box IoU and score differences of two detection answers (batch first)."""
    ious, score_diffs, boxes = [], [], 0
    for item in range(len(reference["detection_boxes"])):
        ours_scores = np.asarray(reference["detection_scores"][item], dtype=np.float64)
        keep = ours_scores >= SCORE_THRESHOLD
        ours_boxes = np.asarray(reference["detection_boxes"][item], dtype=np.float64)[keep]
        ours_classes = np.asarray(reference["detection_classes"][item])[keep]
        theirs_boxes = np.asarray(variant["detection_boxes"][item], dtype=np.float64)
        theirs_scores = np.asarray(variant["detection_scores"][item], dtype=np.float64)
        theirs_classes = np.asarray(variant["detection_classes"][item])
        for box, klass, score in zip(ours_boxes, ours_classes, ours_scores[keep], strict=True):
            boxes += 1
            same = theirs_classes == klass
            if not same.any():
                ious.append(0.0)
                score_diffs.append(float(score))
                continue
            overlaps = iou(box, theirs_boxes[same])
            best = int(np.argmax(overlaps))
            ious.append(float(overlaps[best]))
            score_diffs.append(abs(float(score) - float(theirs_scores[same][best])))
    if not boxes:
        return {"boxes": 0, "score_threshold": SCORE_THRESHOLD, "mean_iou": None, "matched_share": None}
    return {
        "boxes": boxes,
        "score_threshold": SCORE_THRESHOLD,
        "mean_iou": float(np.mean(ious)),
        "matched_share": float(np.mean(np.asarray(ious) >= MATCH_IOU)),
        "match_iou": MATCH_IOU,
        "mean_abs_score_diff": float(np.mean(score_diffs)),
        "max_abs_score_diff": float(np.max(score_diffs)),
    }


def compare(reference: Mapping[str, np.ndarray], variant: Mapping[str, np.ndarray]) -> dict:
    """Everything this module measures for two answers to the same inputs."""
    result: dict = {"outputs": output_differences(reference, variant)}
    if all(name in reference and name in variant for name in DETECTION_OUTPUTS):
        result["type"] = "detection"
        result["detection"] = detection_agreement(reference, variant)
        return result
    name = class_output(reference)
    if name is not None and name in variant:
        result["type"] = "classification"
        result["classification"] = {"output": name, **classification_agreement(reference[name], variant[name])}
    else:
        result["type"] = "other"
    return result


def concatenated(answers: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([answer[name] for answer in answers]) for name in answers[0]}


def predict_all(client, inputs: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """``client``'s answers to ``inputs`` (samples first) sent ``batch_size`` items at a time."""
    count = len(next(iter(inputs.values())))
    answers = []
    for start in range(0, count, batch_size):
        answers.append(client.predict({name: array[start : start + batch_size] for name, array in inputs.items()}))
    return concatenated(answers)


def weights_note(weights: str | None) -> str | None:
    if weights == "random":
        return (
            "the model has random weights (no trained weights were found), so its answers carry no meaning and "
            "neither does their agreement with fp32: these figures only show numeric drift"
        )
    return None


def answers(
    model: str,
    base_path: str,
    server,
    inputs_settings,
    samples: int,
    batch_size: int,
    protocol: str = "grpc",
    transport: str = "builtin",
    model_type: str = "auto",
    log_path: str | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(inputs, answers, input description) of a freshly launched server for ``base_path``.

    Without ``inputs``, ``samples`` inputs are built from the served signature with
    ``inputs_settings`` (kind ``auto`` resolved from ``model_type`` or the signature).
    """
    from serveprof.measure.inputs import AUTO, build_inputs, model_type_of
    from serveprof.measure.session import launched

    description: dict = {}
    with launched(model, base_path, server, protocol, log_path=log_path, transport=transport) as endpoint:
        if inputs is None:
            signature = endpoint.client.signature()
            if inputs_settings.kind == AUTO:
                kind = model_type if model_type != AUTO else model_type_of(signature.outputs)
                inputs_settings = inputs_settings.resolved(kind)
            inputs, description = build_inputs(signature.inputs, samples, inputs_settings)
        return dict(inputs), predict_all(endpoint.client, inputs, batch_size), description


def measure(
    model: str,
    reference_base: str,
    variant_base: str,
    server,
    variant_flags: tuple[str, ...],
    inputs_settings,
    *,
    samples: int = 64,
    batch_size: int = 8,
    protocol: str = "grpc",
    transport: str = "builtin",
    model_type: str = "auto",
    weights: str | None = None,
) -> dict:
    """fp32 (``reference_base``) and the variant (``variant_base``, served with ``variant_flags``) on one input set."""
    from dataclasses import replace

    common = {"protocol": protocol, "transport": transport, "model_type": model_type}
    inputs, reference, description = answers(
        model, reference_base, server, inputs_settings, samples, batch_size, **common
    )
    variant_server = replace(server, extra_flags=(*server.extra_flags, *variant_flags))
    _, variant, _ = answers(
        model, variant_base, variant_server, inputs_settings, samples, batch_size, inputs=inputs, **common
    )
    return {
        "model": model,
        "samples": samples,
        "batch_size": batch_size,
        "input": description,
        "weights": weights,
        "weights_note": weights_note(weights),
        **compare(reference, variant),
    }
