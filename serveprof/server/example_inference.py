"""Classify, Regress and MultiInference: tf.Example inputs through classification and regression signatures.

Follows TF Serving's classifier.cc, regressor.cc, multi_inference.cc and util.cc
step by step, with their messages: the request's Input becomes one string tensor of
serialized Examples (a context is prepended to each, byte for byte, as
``InputToSerializedExampleTensor`` does), fed to the signature's single input in one
Session run; the outputs are checked and turned into ClassificationResult /
RegressionResult. The model parses the Examples itself (its ParseExample op).
"""

from __future__ import annotations

import numpy as np

from serveprof.server.config_protos import message_class
from serveprof.server.signature_runner import CLASSIFY_METHOD, REGRESS_METHOD, SignatureRunner
from serveprof.wire.status import Code, ServingError, invalid_argument

CLASSIFY_INPUTS, CLASSIFY_CLASSES, CLASSIFY_SCORES = "inputs", "classes", "scores"
REGRESS_INPUTS, REGRESS_OUTPUTS = "inputs", "outputs"
DEFAULT_SIGNATURE = "serving_default"

_DT_NAMES = {
    1: "DT_FLOAT",
    2: "DT_DOUBLE",
    3: "DT_INT32",
    4: "DT_UINT8",
    5: "DT_INT16",
    6: "DT_INT8",
    7: "DT_STRING",
    8: "DT_COMPLEX64",
    9: "DT_INT64",
    10: "DT_BOOL",
    14: "DT_BFLOAT16",
    17: "DT_UINT16",
    18: "DT_COMPLEX128",
    19: "DT_HALF",
    22: "DT_UINT32",
    23: "DT_UINT64",
}
_NUMPY_DT = {
    np.dtype(np.float32): 1,
    np.dtype(np.float64): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.uint8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int8): 6,
    np.dtype(object): 7,
    np.dtype(np.int64): 9,
    np.dtype(np.bool_): 10,
    np.dtype(np.float16): 19,
}


def _dtype_name(array: np.ndarray) -> str:
    return _DT_NAMES.get(_NUMPY_DT.get(array.dtype, -1), str(array.dtype))


def _shape_text(array: np.ndarray) -> str:
    return "[" + ",".join(str(size) for size in array.shape) + "]"  # TensorShape::DebugString


def _debug_string(signature_def) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(signature_def)


def serialized_examples(input_proto) -> np.ndarray:
    """InputToSerializedExampleTensor: a 1-D string array, one serialized Example per entry."""
    serialized = message_class("SerializedInput").FromString(input_proto.SerializeToString())
    kind = serialized.WhichOneof("kind")
    if kind == "example_list":
        examples = list(serialized.example_list.examples)
    elif kind == "example_list_with_context":
        context = serialized.example_list_with_context.context
        examples = [context + example for example in serialized.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = examples
    return tensor


def lookup(signatures: dict[str, SignatureRunner], model_spec, method: str, check_method_name: bool) -> SignatureRunner:
    """GetClassificationSignatureDef / GetRegressionSignatureDef."""
    name = model_spec.signature_name or DEFAULT_SIGNATURE
    runner = signatures.get(name)
    if runner is None:
        raise invalid_argument(f"No signature was found with the name: {name}")
    if check_method_name:
        if runner.method_name != method:
            what = "classification" if method == CLASSIFY_METHOD else "regression"
            raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {runner.method_name}")
    else:
        (classification_tensors if method == CLASSIFY_METHOD else regression_tensors)(runner, check_method_name)
    return runner


def classification_tensors(runner: SignatureRunner, check_method_name: bool = False) -> tuple[str, list[str]]:
    """PreProcessClassification: the input tensor's name and the classes/scores tensors' names."""
    signature = runner.signature_def
    if check_method_name and runner.method_name != CLASSIFY_METHOD:
        raise invalid_argument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. Was: {runner.method_name}"
        )
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    if CLASSIFY_CLASSES not in signature.outputs and CLASSIFY_SCORES not in signature.outputs:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSIFY_CLASSES}" '
            f'or "{CLASSIFY_SCORES}". Signature was: {_debug_string(signature)}'
        )
    outputs = [signature.outputs[key].name for key in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if key in signature.outputs]
    return signature.inputs[CLASSIFY_INPUTS].name, outputs


def regression_tensors(runner: SignatureRunner, check_method_name: bool = False) -> tuple[str, list[str]]:
    """PreProcessRegression."""
    signature = runner.signature_def
    if check_method_name and runner.method_name != REGRESS_METHOD:
        raise invalid_argument(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. Was: {runner.method_name}"
        )
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    return signature.inputs[REGRESS_INPUTS].name, [signature.outputs[REGRESS_OUTPUTS].name]


def classification_result(
    runner: SignatureRunner, num_examples: int, names: list[str], tensors: list[np.ndarray], result
) -> None:
    """PostProcessClassificationResult."""
    signature = runner.signature_def
    if len(tensors) != len(names):
        raise invalid_argument(f"Expected {len(names)} output tensor(s).  Got: {len(tensors)}")
    by_name = dict(zip(names, tensors, strict=True))
    classes = by_name.get(signature.outputs[CLASSIFY_CLASSES].name) if CLASSIFY_CLASSES in signature.outputs else None
    scores = by_name.get(signature.outputs[CLASSIFY_SCORES].name) if CLASSIFY_SCORES in signature.outputs else None
    for tensor, what, dtype in ((classes, "classes", "DT_STRING"), (scores, "scores", "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(tensor)}")
        if _dtype_name(tensor) != dtype:
            raise invalid_argument(f"Expected {what} Tensor of {dtype}. Got: {_dtype_name(tensor)}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (
        (classes if classes is not None else scores).shape[1] if (classes is not None or scores is not None) else 0
    )
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(num_classes):
            klass = classifications.classes.add()
            if classes is not None:
                label = classes[row, column]
                klass.label = label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                klass.score = float(scores[row, column])


def regression_result(
    runner: SignatureRunner, num_examples: int, names: list[str], tensors: list[np.ndarray], result
) -> None:
    """PostProcessRegressionResult."""
    signature = runner.signature_def
    if len(tensors) != len(names):
        raise invalid_argument("Expected output_tensors and output_tensor_names to have the same size.")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise ServingError(
            Code.FAILED_PRECONDITION, f"No regression outputs found in SignatureDef: {_debug_string(signature)}"
        )
    name = signature.outputs[REGRESS_OUTPUTS].name
    tensor = dict(zip(names, tensors, strict=True)).get(name)
    if tensor is None:
        raise invalid_argument(f"Could not find output tensor '{name}'")
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape_text(tensor)}"
        )
    if num_examples != tensor.shape[0]:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}"
        )
    if tensor.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(tensor)}")
    if tensor.size != num_examples:
        raise invalid_argument(f"Expected output batch size to be {num_examples}.  Got: {tensor.size}")
    for value in tensor.ravel().tolist():
        result.regressions.add().value = value


def run_example_api(
    method: str, signatures: dict[str, SignatureRunner], request, response, check_method_name: bool, timeout_ms: int = 0
) -> float:
    """RunClassify or RunRegress (``method``) into ``response.result``; returns the Session run's seconds."""
    import time

    classify = method == CLASSIFY_METHOD
    runner = lookup(signatures, request.model_spec, method, check_method_name)
    input_name, output_names = (classification_tensors if classify else regression_tensors)(runner, check_method_name)
    examples = serialized_examples(request.input)
    started = time.perf_counter()
    outputs = runner.runner.run([(input_name, examples)], output_names, timeout_ms)
    elapsed = time.perf_counter() - started
    (classification_result if classify else regression_result)(
        runner, len(examples), output_names, outputs, response.result
    )
    return elapsed


def multi_inference(
    signatures: dict[str, SignatureRunner],
    request,
    response,
    session_runner,
    check_method_name: bool,
    timeout_ms: int = 0,
) -> int:
    """TensorFlowMultiInferenceRunner::Infer: every task's signature in one Session run; returns the example count."""
    model_name, seen = "", set()
    input_names, output_names = set(), set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        runner = signatures.get(name)
        if runner is None:
            raise invalid_argument(f"Requested signature not found in model graph: {name}")
        if task.method_name == CLASSIFY_METHOD:
            input_name, outputs = classification_tensors(runner, check_method_name)
        elif task.method_name == REGRESS_METHOD:
            input_name, outputs = regression_tensors(runner, check_method_name)
        else:
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        input_names.add(input_name)
        output_names.update(outputs)
    fetches = sorted(output_names)
    examples = serialized_examples(request.input)
    outputs = session_runner.run([(name, examples) for name in sorted(input_names)], fetches, timeout_ms)
    for task in request.tasks:
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            classification_result(signatures[name], len(examples), fetches, outputs, result.classification_result)
        else:
            regression_result(signatures[name], len(examples), fetches, outputs, result.regression_result)
    return len(examples)
